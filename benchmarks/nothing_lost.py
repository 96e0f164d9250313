"""Nothing lost, no traceback: kills at random moments, a damaged cache, concurrent runs on one --out.

    .venv/bin/python benchmarks/nothing_lost.py [--data data/demo] [--kill-trials 10] [--lock-trials 10]
        [--work /tmp/nothing_lost] [--only kill,damage,lock]

On the committed demo scene (24 rendered photos, 12 s of SfM) for `recon3d run sfm` and `recon3d splat
--steps 300` (checkpoints every 100 steps, so kills land in resumable training too):
- kill: per trial, SIGKILL at up to 3 random moments then a run to the end; prints the kills, the nodes they
  hit, and how many re-runs wrote byte for byte the reference's model files (metrics.json: timings aside),
  left no temporary file and set aside no cache entry;
- damage: every node of a finished run x {truncate its largest file, zero its arrays, delete a file, garble its
  scene JSON}; the re-run must exit 0 without a traceback, say `<node>: cached result not trusted` once, and
  write the reference's model files again;
- lock: 2 and 3 runs started at once on one --out; none may fail for any reason but `is in use by recon3d`,
  at least one must finish, and the output must equal the reference.
"""

from __future__ import annotations

import argparse
import random
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests import kill_harness  # noqa: E402 - the harness tests/test_kill.py runs a few kills of

SFM_FILES = ["sparse/0/cameras.bin", "sparse/0/images.bin", "sparse/0/points3D.bin", "points.ply", "transforms.json"]


def commands(data: str) -> dict[str, tuple[list[str], list[str]]]:
    return {
        "sfm": (["run", "sfm", "--data", data, "--set", "match.num_threads=1", "--set", "triangulate.num_threads=1",
                 "--set", "bundle_adjust.num_threads=1"], SFM_FILES),  # COLMAP on one thread repeats exactly
        "splat": (["splat", "--data", data, "--steps", "300", "--set", "gaussians.checkpoint_every=100",
                   "--set", "gaussians.threads=1"],
                  ["gaussians/point_cloud.ply", "transforms.json"]),
    }


def kill_test(name: str, args: list[str], files: list[str], work: Path, trials: int, rng: random.Random) -> None:
    ref = work / f"{name}-reference"
    wall = kill_harness.reference(args, ref)
    kills, identical, clean = [], 0, 0
    for i in range(trials):
        trial = kill_harness.trial(args, work / f"{name}-kill{i}", ref, files, wall, 3, rng)
        kills += trial.kills
        identical += not trial.differing and not trial.metrics_differing
        clean += not trial.leftovers and not trial.set_aside
        if trial.differing or trial.metrics_differing or trial.leftovers or trial.set_aside:
            print(f"  trial {i}: {trial}")
        shutil.rmtree(work / f"{name}-kill{i}")
    nodes = Counter(k.node for k in kills)
    print(f"kill {name}: {len(kills)} kills in {trials} trials (uninterrupted run {wall:.1f} s), at "
          f"{len(nodes)} distinct places: {dict(nodes)}; byte-identical re-runs {identical}/{trials}, "
          f"no temporary file and nothing set aside {clean}/{trials}")


DAMAGES = ("truncate", "zero", "delete", "garble")


def damage(folder: Path, kind: str) -> str | None:
    """Damage one file of a sealed node folder; returns its path in the folder (None: nothing of that kind)."""
    files = sorted((p for p in folder.rglob("*") if p.is_file() and p.name != "done.json"
                    and "resume" not in p.relative_to(folder).parts), key=lambda p: p.stat().st_size)
    if kind == "truncate":
        path = files[-1]
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif kind == "zero":
        arrays = sorted((folder / "scene").glob("*.npz"), key=lambda p: p.stat().st_size)
        path = arrays[-1] if arrays else folder / "scene/scene.json"
        path.write_bytes(bytes(path.stat().st_size))
    elif kind == "delete":
        outputs = [p for p in files if p.relative_to(folder).parts[0] in ("files", "publish")]
        path = outputs[0] if outputs else folder / "report.json"
        path.unlink()
    else:
        path = folder / "scene/scene.json"
        path.write_text(path.read_text()[:-40] + "}{")
    return str(path.relative_to(folder))


def damage_test(name: str, args: list[str], files: list[str], work: Path) -> None:
    ref = work / f"{name}-reference"
    if not ref.is_dir():
        kill_harness.reference(args, ref)
    nodes = sorted((ref / "cache").glob("*-*"))
    passed, tried = 0, 0
    for folder in nodes:
        node = folder.name.rsplit("-", 1)[0]
        for kind in DAMAGES:
            scratch = work / f"{name}-damage"
            shutil.rmtree(scratch, ignore_errors=True)
            shutil.copytree(ref, scratch)
            what = damage(scratch / "cache" / folder.name, kind)
            proc = subprocess.run([*kill_harness.recon3d_command(), *args, "--out", str(scratch)],
                                  capture_output=True, text=True)
            said = [line for line in proc.stderr.splitlines() if line.startswith(f"{node}: cached result not trusted")]
            same = kill_harness.digests(scratch, files) == kill_harness.digests(ref, files)
            ok = proc.returncode == 0 and "Traceback" not in proc.stderr and len(said) == 1 and same
            tried += 1
            passed += ok
            if not ok:
                print(f"  {node} {kind} {what}: rc {proc.returncode}, said {said}, same output {same}\n"
                      f"{proc.stderr[-1500:]}")
    shutil.rmtree(work / f"{name}-damage", ignore_errors=True)
    print(f"damage {name}: {passed}/{tried} recomputed with one line, no traceback, same output "
          f"({len(nodes)} nodes x {', '.join(DAMAGES)})")


def lock_test(name: str, args: list[str], files: list[str], work: Path, trials: int) -> None:
    ref = work / f"{name}-reference"
    if not ref.is_dir():
        kill_harness.reference(args, ref)
    for runs in (2, 3):
        good, refused, blamed = 0, 0, []
        for i in range(trials):
            out = work / f"{name}-lock"
            shutil.rmtree(out, ignore_errors=True)
            logs = [work / f"{name}-lock{j}.log" for j in range(runs)]
            procs = [subprocess.Popen([*kill_harness.recon3d_command(), *args, "--out", str(out)],
                                      stdout=subprocess.DEVNULL, stderr=log.open("w")) for log in logs]
            results = [(p.wait(), log.read_text()) for p, log in zip(procs, logs, strict=True)]
            finished = [rc for rc, _ in results if rc == 0]
            refusals = [err for rc, err in results if rc != 0 and "is in use by recon3d" in err]
            others = [err[-300:] for rc, err in results if rc != 0 and "is in use by recon3d" not in err]
            same = kill_harness.digests(out, files) == kill_harness.digests(ref, files)
            good += bool(finished) and not others and same
            refused += len(refusals)
            blamed += others
            if others or not same:
                print(f"  trial {i}: {others}, same output {same}")
        print(f"lock {name}, {runs} runs at once: {good}/{trials} trials with no failure but `in use` and the "
              f"reference's output; {refused} runs refused; other failures: {len(blamed)}")
    shutil.rmtree(work / f"{name}-lock", ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="data/demo")
    parser.add_argument("--work", type=Path, default=Path("/tmp/nothing_lost"))
    parser.add_argument("--kill-trials", type=int, default=10)
    parser.add_argument("--lock-trials", type=int, default=10)
    parser.add_argument("--only", default="kill,damage,lock")
    parser.add_argument("--commands", default="sfm,splat")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    rng = random.Random(args.seed)
    start = time.perf_counter()
    for name in args.commands.split(","):
        command, files = commands(args.data)[name]
        if "kill" in args.only:
            kill_test(name, command, files, args.work, args.kill_trials, rng)
        if "damage" in args.only:
            damage_test(name, command, files, args.work)
        if "lock" in args.only:
            lock_test(name, command, files, args.work, args.lock_trials)
    print(f"total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
