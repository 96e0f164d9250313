"""Kill a `recon3d` command with SIGKILL at random moments, re-run it to the end, compare with a run never killed.

Used by tests/test_kill.py (a few kills in `make test`) and benchmarks/nothing_lost.py (many). A trial is one
output folder: the command is started, killed after a random delay (drawn over the uninterrupted run's
wall time), possibly several times, then run to completion; its outputs are hashed against the reference
run's, and the folder is searched for temporary files a kill could leave behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from recon3d.dag.cache import ASIDE


def recon3d_command() -> list[str]:
    """The installed `recon3d` script beside this Python (what a user types), else the module."""
    script = Path(sys.executable).parent / "recon3d"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "recon3d.cli"]


@dataclass
class Kill:
    after_s: float
    node: str  # the node that was running, or `startup` / `between nodes`


@dataclass
class Trial:
    kills: list[Kill] = field(default_factory=list)
    differing: list[str] = field(default_factory=list)  # output files whose bytes differ from the reference
    leftovers: list[str] = field(default_factory=list)  # temporary files after the final run
    set_aside: int = 0  # cache entries the re-runs did not trust (a kill should damage none)
    metrics_differing: list[str] = field(default_factory=list)  # metrics.json values (timings aside) that differ


# torch on one thread in every node and process, so that no value depends on how the threads split the work
# (a node's own `threads` holds only while it trains: the nodes after it run on torch's count, whatever ran before)
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def run(args: list[str], out: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run([*recon3d_command(), *args, "--out", str(out)], capture_output=True, text=True,
                          env=ONE_THREAD)
    if proc.returncode != 0 or "Traceback" in proc.stderr:
        raise AssertionError(f"recon3d {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


def digests(out: Path, files: list[str]) -> dict[str, str | None]:
    found = {}
    for rel in files:
        path = out / rel
        found[rel] = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None
    return found


def running_node(out: Path) -> str:
    try:
        record = json.loads((out / "run.json").read_text())
    except (OSError, ValueError):
        return "startup"
    running = [n["id"] for n in record["nodes"] if n["status"] == "running"]
    if running:
        return running[0]
    return "finishing" if all(n["status"] in ("ran", "cached") for n in record["nodes"]) else "between nodes"


def kill_after(args: list[str], out: Path, delay: float) -> Kill | None:
    """Start the command, SIGKILL it (its whole process group) after `delay` s; None when it finished first."""
    proc = subprocess.Popen([*recon3d_command(), *args, "--out", str(out)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True, env=ONE_THREAD)
    try:
        proc.wait(timeout=delay)
        return None
    except subprocess.TimeoutExpired:
        node = running_node(out)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return Kill(round(delay, 2), node)


def reference(args: list[str], out: Path) -> float:
    """Run uninterrupted into `out`; returns its wall time."""
    start = time.perf_counter()
    run(args, out)
    return time.perf_counter() - start


def trial(args: list[str], out: Path, ref: Path, files: list[str], wall_s: float, kills: int,
          rng: random.Random) -> Trial:
    """`kills` kills at random moments of a run of `args` into `out`, then a run to the end; compare `files`."""
    result = Trial()
    for _ in range(kills):
        kill = kill_after(args, out, rng.uniform(0.3, wall_s))
        if kill is not None:
            result.kills.append(kill)
    run(args, out)
    want, got = digests(ref, files), digests(out, files)
    result.differing = [rel for rel in files if want[rel] != got[rel]]
    result.leftovers = [str(p.relative_to(out)) for p in out.rglob("*.tmp") if ASIDE not in p.parts]
    aside = out / "cache" / ASIDE
    result.set_aside = len(list(aside.iterdir())) if aside.is_dir() else 0
    if (ref / "metrics.json").is_file():
        result.metrics_differing = _differing(json.loads((ref / "metrics.json").read_text()),
                                              json.loads((out / "metrics.json").read_text()))
    return result


TIMINGS = {"fps", "seconds", "train_seconds", "peak_rss_mb"}  # what differs between any two runs


def _differing(want, got, where: str = "") -> list[str]:
    """Paths of the values that differ between two metrics.json trees, timings aside."""
    if isinstance(want, dict) and isinstance(got, dict):
        return [d for k in sorted(set(want) | set(got)) if k not in TIMINGS
                for d in _differing(want.get(k), got.get(k), f"{where}/{k}")]
    if isinstance(want, list) and isinstance(got, list) and len(want) == len(got):
        return [d for i, (a, b) in enumerate(zip(want, got, strict=True)) for d in _differing(a, b, f"{where}[{i}]")]
    return [] if want == got else [where]
