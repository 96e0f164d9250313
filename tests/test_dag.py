"""DAG runner: validation errors before anything runs, cache hits, partial re-runs, resume."""

import json
import os
import textwrap
import time

import numpy as np
import pytest
from pydantic import Field

from recon3d import stages
from recon3d.dag.pipeline import load_pipeline, parse_sets, toposort
from recon3d.dag.runner import run_pipeline
from recon3d.errors import ConfigError, StageError
from recon3d.scene import Scene
from recon3d.stages.base import Stage, StageConfig

CALLS: list[str] = []


class CountConfig(StageConfig):
    value: int = Field(1, description="added to the sum of the inputs")
    fail: bool = Field(False, description="raise instead of running")
    drop: int = Field(0, description="items to leave out, each with its reason")
    hold_mb: int = Field(0, description="allocate and touch this many MB for 0.2 s")
    publish: str = Field("", description="publish OUT/renders/<this>.txt")


def count_run(scene: Scene, cfg: CountConfig, ctx=None) -> Scene:
    CALLS.append(ctx.node_id)
    if cfg.fail:
        raise StageError(f"asked to fail at {ctx.node_id}", "set fail=false")
    for i in range(cfg.drop):
        ctx.drop(f"item {i}", "left out by the test")
    if cfg.hold_mb:
        held = np.ones(cfg.hold_mb * 2**20, np.uint8)
        time.sleep(0.2)
        del held
    total = cfg.value + sum(v for v in scene.metrics.values())
    (ctx.workdir / "out.txt").write_text(str(total))
    if cfg.publish:
        (ctx.published / "renders").mkdir(parents=True, exist_ok=True)
        (ctx.published / "renders" / f"{cfg.publish}.txt").write_text(str(total))
    return scene.replace(metrics={**scene.metrics, ctx.node_id: total})


def sneaky_run(scene: Scene, cfg: CountConfig, ctx=None) -> Scene:
    return scene.replace(class_names=("x",))


stages.register(Stage("count", 1, CountConfig, count_run, reads=("metrics",), writes=("metrics",), summary="test"))
stages.register(Stage("sneaky", 1, CountConfig, sneaky_run, reads=(), writes=("metrics",), summary="test"))

DIAMOND = """
name: diamond
nodes:
  - {id: a, stage: count}
  - {id: b, stage: count, after: [a], overrides: {value: 10}}
  - {id: c, stage: count, after: [a], overrides: {value: 100}}
  - {id: d, stage: count, after: [b, c]}
"""


def write(tmp_path, text, name="p.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def run(tmp_path, text=DIAMOND, sets=None):
    name, nodes = load_pipeline(write(tmp_path, text), parse_sets(sets or []))
    CALLS.clear()
    return run_pipeline(name, nodes, tmp_path / "out")


def test_runs_in_order_and_merges_branches(tmp_path):
    result = run(tmp_path)
    assert CALLS == ["a", "b", "c", "d"]
    assert result.scene().metrics == {"a": 1, "b": 11, "c": 101, "d": 1 + 1 + 11 + 101}
    assert (tmp_path / "out/reports/d.json").is_file()
    assert (result.folders["d"] / "files/out.txt").read_text() == "114"


def test_the_record_marks_running_only_the_node_that_runs(tmp_path):
    """Run one node at a time (the local executor): each is done, in the record and the events, before the
    next one starts, so `recon3d show` during a run names the node that is working."""
    name, nodes = load_pipeline(write(tmp_path, DIAMOND), parse_sets([]))
    events, running_in_record = [], {}

    def on_event(node_id, status):
        events.append((node_id, status))
        if status == "running":
            record = json.loads((tmp_path / "out" / "run.json").read_text())
            running_in_record[node_id] = [n["id"] for n in record["nodes"] if n["status"] == "running"]

    run_pipeline(name, nodes, tmp_path / "out", on_event=on_event)
    assert events == [(n, s) for n in "abcd" for s in ("running", "done")]
    assert running_in_record == {n: [n] for n in "abcd"}


def test_second_identical_run_runs_no_stage(tmp_path):
    run(tmp_path)
    result = run(tmp_path)
    assert CALLS == [] and result.executed == [] and result.cached == ["a", "b", "c", "d"]


def test_later_scenes_carry_a_report_without_its_dropped_items(tmp_path):
    result = run(tmp_path, sets=["a.drop=3"])
    carried = result.scene("d").reports["a"]
    assert "dropped" not in carried and carried["dropped_count"] == 3 and carried["seconds"] >= 0
    dropped = json.loads((tmp_path / "out/reports/a.json").read_text())["dropped"]
    assert [d["item"] for d in dropped] == ["item 0", "item 1", "item 2"]


def test_each_node_reports_the_peak_memory_of_its_own_run(tmp_path):
    """A node's report has the process's peak resident memory while its stage ran: one node's large
    allocation is charged to it, not to the nodes after it."""
    run(tmp_path, sets=["b.hold_mb=400"])
    reports = {n: json.loads((tmp_path / f"out/reports/{n}.json").read_text()) for n in "abcd"}
    peak = {n: r["memory_peak_mb"] for n, r in reports.items()}
    assert peak["b"] >= peak["a"] + 350 and peak["c"] < peak["b"] - 300 and peak["d"] < peak["b"] - 300
    assert all(0 < r["memory_start_mb"] <= r["memory_peak_mb"] for r in reports.values())


def test_config_change_reruns_the_node_and_its_descendants_only(tmp_path):
    run(tmp_path)
    result = run(tmp_path, sets=["c.value=7"])
    assert CALLS == ["c", "d"] and result.cached == ["a", "b"]
    assert result.scene().metrics["d"] == 1 + 1 + 11 + 8


def test_resume_after_a_node_that_raised(tmp_path):
    with pytest.raises(StageError, match="node 'b' \\(count\\): asked to fail at b"):
        run(tmp_path, sets=["b.fail=true"])
    assert CALLS == ["a", "b"]  # a's work is kept; after a failure no node starts (c would have: make without -k)
    record = (tmp_path / "out/run.json").read_text()
    assert '"failed"' in record and '"not run"' in record
    result = run(tmp_path)
    assert CALLS == ["b", "c", "d"] and result.cached == ["a"]


def test_folder_left_by_a_killed_run_is_redone(tmp_path):
    result = run(tmp_path)
    folder = result.folders["d"]
    (folder / "done.json").unlink()  # as if the process died after writing part of d
    (folder / "files" / "junk").write_text("half")
    result = run(tmp_path)
    assert CALLS == ["d"] and not (folder / "files" / "junk").exists()


def test_undeclared_write_is_caught(tmp_path):
    with pytest.raises(StageError, match="changed class_names, which it does not declare"):
        run(tmp_path, "name: s\nnodes:\n  - {id: s, stage: sneaky}\n")


@pytest.mark.parametrize("text, message", [
    ("name: x\nnodes:\n  - {id: a, stage: count, after: [b]}\n  - {id: b, stage: count, after: [a]}\n",
     "has a cycle among nodes: a -> b"),
    ("name: x\nnodes:\n  - {id: a, stage: count, after: [ghost]}\n",
     "node 'a' runs after 'ghost', which does not exist"),
    ("name: x\nnodes:\n  - {id: a, stage: count, overrides: {valeu: 3}}\n", "node 'a': unknown key 'valeu'"),
    ("name: x\nnodes:\n  - {id: a, stage: count, overrides: {value: lots}}\n", "node 'a': value: .*integer"),
    ("name: x\nnodes:\n  - {id: a, stage: nosuch}\n", "unknown stage 'nosuch'"),
    ("name: x\nnodes:\n  - {id: a, stage: count, preset: fast}\n", "no preset 'fast' for stage count"),
    ("name: x\nnodes:\n  - {id: a, stage: count}\n  - {id: a, stage: count}\n", "node id 'a' is used twice"),
    ("name: x\nnodes:\n  - {id: a, stage: count, afterr: []}\n", "unknown key 'nodes.0.afterr'"),
    ("name: x\nnodes: [\n", "is not valid YAML"),
])
def test_bad_pipelines_fail_before_anything_runs(tmp_path, text, message):
    CALLS.clear()
    with pytest.raises(ConfigError, match=message):
        load_pipeline(write(tmp_path, text))
    assert CALLS == []


def test_bad_sets(tmp_path):
    with pytest.raises(ConfigError, match="not of the form node.key=value"):
        parse_sets(["value=3"])
    with pytest.raises(ConfigError, match="names node 'zz'"):
        load_pipeline(write(tmp_path, DIAMOND), parse_sets(["zz.value=1"]))
    with pytest.raises(ConfigError, match="no pipeline 'nonexistent'"):
        load_pipeline("nonexistent")


def test_toposort_is_stable_in_file_order():
    assert toposort({"x": [], "a": ["x"], "b": [], "c": ["a", "b"]}, "t") == ["x", "b", "a", "c"]


def test_a_node_rerun_in_the_same_out_removes_what_its_earlier_result_published(tmp_path):
    """Another scene (or setting) into the same OUT: the earlier renders go, a file of the user's stays."""
    run(tmp_path, sets=["a.publish=IMG_1"])
    (tmp_path / "out/renders/mine.txt").write_text("keep")
    run(tmp_path, sets=["a.publish=castle_1"])
    assert sorted(p.name for p in (tmp_path / "out/renders").iterdir()) == ["castle_1.txt", "mine.txt"]
    run(tmp_path, sets=["a.publish=IMG_1"])  # back to the first: from the cache, its file published again
    assert sorted(p.name for p in (tmp_path / "out/renders").iterdir()) == ["IMG_1.txt", "mine.txt"]


def test_a_failed_rerun_reads_no_report_of_the_nodes_it_did_not_reach(tmp_path):
    """What a node left out in an earlier run into OUT is not this run's: after a failure, the node that failed
    and those not run keep their old reports on disk, and `recon3d show` / the report read none of them."""
    from recon3d.report.html import load_run

    run(tmp_path, sets=["b.drop=2", "d.drop=1"])
    with pytest.raises(StageError, match="asked to fail at b"):
        run(tmp_path, sets=["b.fail=true"])
    record, reports, _ = load_run(tmp_path / "out")
    assert {n["id"]: n["status"] for n in record["nodes"]} == {"a": "cached", "b": "failed", "c": "not run",
                                                               "d": "not run"}
    assert set(reports) == {"a"} and (tmp_path / "out/reports/d.json").is_file()


def test_a_run_on_other_data_takes_every_other_nodes_results_out(tmp_path):
    """Another data folder into OUT (a splat of other photos after a compare): whatever pipeline ran before, the
    results of nodes this run has not are the other data's and leave OUT; the same data keeps them (a nerf
    after a splat)."""
    from PIL import Image

    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        for i in range(2):
            Image.new("RGB", (8, 6), (40 * i, 90, ord(name))).save(tmp_path / name / f"{i}.png")
    extra = "name: {0}\nnodes:\n  - {{id: ingest, stage: ingest}}\n  - {{id: x, stage: count, after: [ingest]}}\n"
    plain = "name: plain\nnodes:\n  - {id: ingest, stage: ingest}\n"

    def go(text, data, sets=()):
        name, nodes = load_pipeline(write(tmp_path, text), parse_sets([f"ingest.path={tmp_path / data}", *sets]))
        return run_pipeline(name, nodes, tmp_path / "out")

    go(extra.format("one"), "a", ["x.publish=a"])
    result = go(plain, "a")  # the same data, another pipeline: x's results stay
    assert not result.other_data and (tmp_path / "out/renders/a.txt").is_file()
    result = go(plain, "b")
    assert result.other_data and result.withdrawn == ["x"]
    assert not (tmp_path / "out/renders").exists() and not (tmp_path / "out/reports/x.json").exists()


def test_nodes_the_same_pipeline_no_longer_has_are_taken_out_of_out(tmp_path):
    """A compare with fewer seeds into the folder of one with more: the seeds dropped leave OUT (files, empty
    folders, reports); the cache keeps them. Another pipeline into the folder (splat after sfm) takes nothing."""
    two = "name: pair\nnodes:\n  - {id: a, stage: count}\n  - {id: s1, stage: count, after: [a]}\n"
    one = "name: pair\nnodes:\n  - {id: a, stage: count}\n"
    run(tmp_path, two, sets=["s1.publish=seed1"])
    assert (tmp_path / "out/renders/seed1.txt").is_file()
    result = run(tmp_path, one.replace("pair", "other"))
    assert result.withdrawn == [] and (tmp_path / "out/renders/seed1.txt").is_file()
    run(tmp_path, two, sets=["s1.publish=seed1"])  # from the cache
    result = run(tmp_path, one)
    assert result.withdrawn == ["s1"]
    assert not (tmp_path / "out/renders").exists() and not (tmp_path / "out/reports/s1.json").exists()
    assert (tmp_path / "out/reports/a.json").is_file()
    run(tmp_path, two, sets=["s1.publish=seed1"])
    assert CALLS == [] and (tmp_path / "out/renders/seed1.txt").is_file()  # back from the cache


def test_ctrl_c_stops_a_long_task_on_the_pool_at_once(tmp_path):
    """One long task (a photo set's single block of pairs to match takes ~20 s on monstree) runs on the pool, so
    Ctrl-C is not held until it returns, and its worker is ended rather than waited for."""
    import signal
    import subprocess
    import sys

    script = ("import time\nfrom recon3d.dag.executor import LocalExecutor\nex = LocalExecutor(2)\n"
              "print('started', flush=True)\nex.map(time.sleep, [120])\n")
    temp = tmp_path / "tmp"
    temp.mkdir()
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True, env={**os.environ, "TMPDIR": str(temp)})
    assert proc.stdout.readline().strip() == "started"
    time.sleep(2)  # the pool started and its worker asleep in the task

    def ours() -> list[str]:  # beside multiprocessing's own folder
        return [p.name[:14] for p in temp.iterdir() if p.name.startswith("recon3d")]

    assert ours() == ["recon3d-tasks-"]  # the workers' temporary folder
    start = time.monotonic()
    os.killpg(proc.pid, signal.SIGINT)
    _, stderr = proc.communicate(timeout=30)
    assert "KeyboardInterrupt" in stderr and time.monotonic() - start < 10
    assert not ours()  # the terminated worker could not remove its files; the run did


def test_pool_workers_temporary_files_go_with_the_pool():
    import tempfile
    from pathlib import Path

    from recon3d.dag.executor import LocalExecutor

    pool = LocalExecutor(2)
    made = [Path(p) for p in pool.map(tempfile.mkdtemp, ["-a", "-b"])]  # as a task that is stopped leaves them
    assert all(p.is_dir() and p.parent.name.startswith("recon3d-tasks-") for p in made)
    pool.close()
    assert not any(p.exists() for p in made) and not made[0].parent.exists()
