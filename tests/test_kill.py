"""Kill anywhere, lose nothing: SIGKILL the sfm and splat commands at random moments, re-run them, and get
byte for byte what a run never killed writes, with no temporary file left (many more kills:
benchmarks/nothing_lost.py).

The splat run trains on one torch thread: with two, about one process in 40 computes torch's MKL-backed
transcendentals (log, exp) on its OpenMP worker thread some 80 ulp away from the main thread's (measured on
the initial log-scales: the worker's half of the array differs, the main thread's half and numpy agree), so
two processes that never crash can already disagree; that is torch's, not the resume's, and one thread
keeps this test about resuming. The sfm run matches, maps and adjusts on one thread for the same reason:
COLMAP's matcher on every core, while a killed run's workers still hold the other, found a few matches more
or fewer (a run killed during `features` then matched 230 where the reference had 231 in one pair, and so on)."""

import random

import pytest

from recon3d.paths import HOME
from tests import kill_harness

DEMO = HOME / "data/demo"
COMMANDS = {
    "sfm": (["run", "sfm", "--data", str(DEMO), "--set", "match.num_threads=1", "--set", "triangulate.num_threads=1",
             "--set", "bundle_adjust.num_threads=1"],
            ["sparse/0/cameras.bin", "sparse/0/images.bin", "sparse/0/points3D.bin", "points.ply", "transforms.json"]),
    "splat": (["splat", "--data", str(DEMO), "--steps", "200", "--set", "gaussians.checkpoint_every=50",
               "--set", "gaussians.threads=1"],
              ["gaussians/point_cloud.ply", "gaussians/point_cloud.splat", "transforms.json"]),  # + metrics.json
}


@pytest.mark.parametrize("command", list(COMMANDS))
def test_killed_runs_resume_to_the_same_bytes(tmp_path, command):
    args, files = COMMANDS[command]
    wall_s = 0.8 * kill_harness.reference(args, tmp_path / "reference")  # kills before the end, when the trial
    # runs a little faster than the reference did (a busier machine then)
    rng = random.Random(0)
    kills = []
    for i in range(2 if command == "sfm" else 1):
        trial = kill_harness.trial(args, tmp_path / f"trial{i}", tmp_path / "reference", files, wall_s, 3, rng)
        assert trial.differing == [] and trial.metrics_differing == [], trial
        assert trial.leftovers == [] and trial.set_aside == 0, trial
        kills += trial.kills
    assert kills  # a kill drawn after the run's end finds it finished
