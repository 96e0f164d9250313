"""Nothing lost, no traceback: a damaged cache is recomputed, one run holds an output folder, killed runs
leave a record `show` reads, written files keep the umask's mode."""

import json
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from recon3d.dag import cache, lock
from recon3d.dag.pipeline import load_pipeline
from recon3d.dag.runner import run_pipeline
from recon3d.errors import DataError
from recon3d.io.files import write_json
from tests.test_dag import CALLS, DIAMOND  # and registers the `count` stage

DESCENDANTS = {"a": ["a", "b", "c", "d"], "b": ["b", "d"], "d": ["d"]}  # a root, a middle node, a merge


def run_diamond(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(textwrap.dedent(DIAMOND))
    name, nodes = load_pipeline(path, {})
    CALLS.clear()
    return run_pipeline(name, nodes, tmp_path / "out")


def damage(path: Path, kind: str) -> None:
    data = path.read_bytes()
    if kind == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif kind == "zero":
        path.write_bytes(bytes(len(data)))
    elif kind == "delete":
        path.unlink()
    elif kind == "garble":
        path.write_bytes(data.replace(b"{", b"[", 1))


@pytest.mark.parametrize("node", ["a", "b", "d"])
@pytest.mark.parametrize("kind, file", [("truncate", "scene/scene.json"), ("zero", "scene/scene.json"),
                                        ("delete", "files/out.txt"), ("garble", "scene/scene.json"),
                                        ("garble", "report.json"), ("garble", "done.json"),
                                        ("truncate", "done.json")])
def test_a_damaged_cache_entry_is_set_aside_and_recomputed_with_its_descendants(tmp_path, node, kind, file):
    first = run_diamond(tmp_path)
    damage(first.folders[node] / file, kind)
    second = run_diamond(tmp_path)
    # the damaged node runs again; its descendants too when it comes out different (here the count stage
    # writes the same bytes again, timings rounded to 0, so they are kept)
    assert CALLS[0] == node and set(CALLS) <= set(DESCENDANTS[node])
    assert second.scene().metrics == first.scene().metrics
    assert list(second.set_aside) == CALLS
    assert any(word in second.set_aside[node] for word in ("missing", "bytes", "changed", "unreadable"))
    kept = list((tmp_path / "out/cache" / cache.ASIDE).iterdir())
    assert len(kept) == len(CALLS)  # set aside, not deleted
    record = json.loads((tmp_path / "out/run.json").read_text())
    assert record["state"] == "finished" and [n["id"] for n in record["nodes"] if "set_aside" in n] == CALLS
    run_diamond(tmp_path)
    assert CALLS == []  # the recomputed entries are sealed and trusted


def test_a_node_computed_from_an_input_since_recomputed_differently_is_not_trusted(tmp_path):
    """As a run killed after recomputing a damaged node (other bytes) but before its children leaves it."""
    first = run_diamond(tmp_path)
    record = json.loads((first.folders["d"] / cache.DONE).read_text())
    record["inputs"]["b"] = "0" * 64
    record["seal"] = cache._seal_of(record["key"], record["files"], record["inputs"])
    write_json(first.folders["d"] / cache.DONE, record)
    second = run_diamond(tmp_path)
    assert CALLS == ["d"] and "its input b was recomputed" in second.set_aside["d"]


def test_an_edited_seal_is_not_trusted(tmp_path):
    first = run_diamond(tmp_path)
    record = json.loads((first.folders["b"] / cache.DONE).read_text())
    write_json(first.folders["b"] / cache.DONE, {**record, "seal": "0" * 64})
    second = run_diamond(tmp_path)
    assert CALLS[0] == "b" and "done.json has changed" in second.set_aside["b"]


def test_an_entry_sealed_by_an_older_recon3d_is_recomputed(tmp_path):
    first = run_diamond(tmp_path)
    for folder in first.folders.values():
        write_json(folder / cache.DONE, {"key": "x", "seconds": 0.1})  # no manifest
    run_diamond(tmp_path)
    assert CALLS == ["a", "b", "c", "d"]


def test_temporary_files_of_a_killed_write_are_removed(tmp_path):
    first = run_diamond(tmp_path)
    stray = [tmp_path / "out/.run.json.ab12cd_3.tmp", first.folders["b"] / "scene/.features.npz.x1y2z3w4.tmp"]
    for path in stray:
        path.write_text("half")
    (tmp_path / "out/.notes.tmp").write_text("a user's file")  # not of recon3d's pattern: kept
    run_diamond(tmp_path)
    assert not any(p.exists() for p in stray) and (tmp_path / "out/.notes.tmp").exists()


HOLD = """
import sys, time
from pathlib import Path
from recon3d.dag.lock import run_lock
with run_lock(Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(60)
"""


def test_a_second_run_on_a_held_folder_is_refused_and_a_dead_holder_is_taken_over(tmp_path):
    out = tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert lock.holder(out) == f"pid {holder.pid} on host {os.uname().nodename}"
        with pytest.raises(DataError, match=f"{out} is in use by recon3d \\(pid {holder.pid} on host .*\\) — wait"):
            with lock.run_lock(out):
                pass
    finally:
        holder.kill()
        holder.wait()
    assert (out / lock.LOCK).read_text().startswith(f"pid {holder.pid}")  # a killed holder's record stays
    assert lock.holder(out) is None
    with lock.run_lock(out), lock.run_lock(out):  # taken over; re-entrant within a process
        assert (out / lock.LOCK).read_text().startswith(f"pid {os.getpid()}")
    assert lock.holder(out) is None


def test_an_unwritable_output_folder_is_named(tmp_path, monkeypatch):
    def refuse(path, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(lock.os, "open", refuse)  # as root, chmod does not refuse anything
    with pytest.raises(DataError, match=f"--out {tmp_path / 'out'} is not writable .* choose another --out"):
        with lock.run_lock(tmp_path / "out"):
            pass


def test_written_files_keep_the_umask_mode(tmp_path):
    run_diamond(tmp_path)
    mask = os.umask(0)
    os.umask(mask)
    for name in ("run.json", "reports/d.json"):
        assert stat.S_IMODE((tmp_path / "out" / name).stat().st_mode) == 0o666 & ~mask


def recon3d_entry_point(*args, **kwargs):
    """The installed `recon3d` script beside this Python (what a user types), else the module."""
    script = Path(sys.executable).parent / "recon3d"
    command = [str(script)] if script.is_file() else [sys.executable, "-m", "recon3d.cli"]
    return subprocess.run([*command, *map(str, args)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "COLUMNS": "200"}, **kwargs)


@pytest.mark.parametrize("args, message", [
    (["veiw", "OUT"], "No such command 'veiw'"),
    (["run"], "Missing argument 'pipeline'"),
    (["splat"], "Missing option '--data'"),
    (["run", "demo", "--budget", "3"], "No such option: --budget"),
])
def test_a_mistyped_command_prints_usage_and_one_error_line(args, message):
    proc = recon3d_entry_point(*args)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.lstrip().startswith("Usage: recon3d") and message in proc.stderr
    assert len([line for line in proc.stderr.splitlines() if "Error" in line]) == 1


def test_show_reads_an_interrupted_run(tmp_path):
    out = tmp_path / "out"
    run_diamond(tmp_path)
    record = json.loads((out / "run.json").read_text())
    record.update(state="running", finished=False)
    record["nodes"][-1]["status"] = "running"
    write_json(out / "run.json", record)  # what a run killed in its last node leaves
    proc = recon3d_entry_point("show", out)
    assert proc.returncode == 0, proc.stderr
    assert "interrupted" in proc.stdout and "the same command resumes it" in proc.stdout
    assert recon3d_entry_point("report", out).returncode == 0
    assert "interrupted (or still running): the same command resumes it" in (out / "report.html").read_text()

