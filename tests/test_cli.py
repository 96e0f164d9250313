"""The `recon3d` command as a user runs it: bad input gives one line, a non-zero exit and no traceback."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


def recon3d(*args, cwd=None):
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "recon3d.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=120)


def one_line_error(proc, *fragments):
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("recon3d: error:")]
    assert len(lines) == 1, proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_missing_data(tmp_path):
    one_line_error(recon3d("run", "demo", "--out", tmp_path / "o"), "--data is missing", "--data PATH")


def test_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    one_line_error(recon3d("run", "demo", "--data", tmp_path / "empty", "--out", tmp_path / "o"),
                   f"no images found in {tmp_path / 'empty'}", "COLMAP project")


def test_data_folder_that_does_not_exist(tmp_path):
    one_line_error(recon3d("run", "demo", "--data", tmp_path / "nope", "--out", tmp_path / "o"), "no such folder")
    one_line_error(recon3d("splat", "--data", tmp_path / "nope", "--out", tmp_path / "s"), "no such folder")
    assert not (tmp_path / "o").exists() and not (tmp_path / "s").exists()  # refused before OUT is made


def test_unknown_stage(tmp_path):
    (tmp_path / "p.yaml").write_text("name: p\nnodes:\n  - {id: a, stage: sfm_magic}\n")
    one_line_error(recon3d("run", tmp_path / "p.yaml", "--out", tmp_path / "o"),
                   "unknown stage 'sfm_magic'", "recon3d stages")


def test_misspelled_config_key(tmp_path):
    one_line_error(recon3d("run", "demo", "--data", tmp_path, "--out", tmp_path / "o",
                           "--set", "check.max_rotation_dg=1"),
                   "node 'check': unknown key 'max_rotation_dg'", "max_rotation_deg")


def test_bad_camera_model_in_config(tmp_path):
    one_line_error(recon3d("run", "demo", "--data", tmp_path, "--out", tmp_path / "o",
                           "--set", "ingest.camera_model=PINHOL"), "unknown camera model 'PINHOL'")


def test_stages_lists_fields_with_descriptions():
    proc = recon3d("stages")
    assert proc.returncode == 0, proc.stderr
    for text in ("ingest", "evaluate", "camera_model", "max_rotation_deg", "the data folder"):
        assert text in proc.stdout
    # the defaults a run uses: the gaussians' mcmc strategy (the default) brings gsplat's preset for these
    init_opacity = next(line for line in proc.stdout.splitlines() if " init_opacity " in line)
    assert "0.5" in init_opacity.split("init_opacity")[1].split("│")[1]


def test_show_of_a_non_run_folder(tmp_path):
    one_line_error(recon3d("show", tmp_path), "is not a recon3d run folder", "pass the --out folder of a run")
    (tmp_path / "IMG_1.jpg").write_bytes(b"")  # a folder of photos given where a run goes: they go in as --data
    one_line_error(recon3d("mesh", tmp_path), "is not a recon3d run folder (no run.json): it holds photos",
                   f"recon3d splat --data {tmp_path} --out OUT", "recon3d mesh --data")
    one_line_error(recon3d("show", tmp_path / "typo"), "typo does not exist", "give the --out folder of a run")


def test_a_bug_is_one_line_and_a_traceback_file(monkeypatch, capsys):
    """An exception that is not an input error (a bug in a stage) reaches the user as one line naming the file
    that holds its traceback, not as the traceback."""
    from recon3d import cli

    def broken(**_):
        raise TypeError("object arrays cannot be saved")

    monkeypatch.setattr(cli, "app", broken)
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    err = capsys.readouterr().err
    assert exit_.value.code == 1 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert err.startswith("recon3d: internal error: TypeError: object arrays cannot be saved")
    path = err.split("the traceback is in ")[1].split(";")[0]
    try:
        assert 'raise TypeError("object arrays cannot be saved")' in open(path).read()
    finally:
        os.remove(path)


def test_the_closing_summary_names_a_shared_reason_once(tmp_path, capsys):
    """Images dropped for one reason are named together, the reason once: a second scene's 11 photos in a
    folder read as a user's are one group, not eleven repetitions of the same sentence. Other items a node
    leaves out (a file it did not write, a setting that found nothing) are not counted as images."""
    from recon3d.cli import _print_outcome

    far = "in a smaller connected component (11 images) than the reconstructed one (23)"
    reports = [{"dropped": [{"item": "notes.jpg", "reason": "cannot read image"}]},
               {"dropped": [{"item": f"castle_{i:02d}.jpg", "reason": far} for i in range(11)]},
               {"dropped": [{"item": "castle_00.jpg", "reason": "not posed"}]},
               {"dropped": [{"item": "points.ply", "reason": "the scene has no 3D points"},  # not images
                            {"item": "mask_classes", "reason": "no labeled image shows car"}]}]
    _print_outcome(tmp_path, reports)
    line = capsys.readouterr().out.splitlines()[0]
    assert line == ("12 image(s) dropped: notes.jpg (cannot read image); castle_00.jpg, castle_01.jpg, "
                    f"castle_02.jpg, castle_03.jpg, castle_04.jpg and 6 more ({far})")


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """The demo pipeline on the committed demo data, run twice (the second from the cache)."""
    from recon3d.paths import HOME

    out = tmp_path_factory.mktemp("demo") / "out"
    first = recon3d("run", "demo", "--data", HOME / "data/demo", "--out", out)
    second = recon3d("run", "demo", "--data", HOME / "data/demo", "--out", out)
    return out, first, second


def test_demo_runs_and_passes_its_check(demo_run):
    out, first, second = demo_run
    assert first.returncode == 0, first.stderr
    assert "report:" in first.stdout and (out / "report.html").is_file()
    metrics = json.loads((out / "reports/check.json").read_text())["counts"]
    assert metrics["passed"] is True
    assert "ran 2 node(s), 0 from cache" in first.stderr
    assert second.returncode == 0 and "ran 0 node(s), 2 from cache" in second.stderr


def test_show_summarises_the_demo(demo_run):
    out, _, _ = demo_run
    proc = recon3d("show", out)
    assert proc.returncode == 0, proc.stderr
    assert "check" in proc.stdout and "evaluate" in proc.stdout and "passed=True" in proc.stdout


@pytest.fixture(scope="module")
def sfm_run(tmp_path_factory):
    from recon3d.paths import HOME

    out = tmp_path_factory.mktemp("sfm") / "out"
    return out, recon3d("run", "sfm", "--data", HOME / "data/demo", "--out", out)


def test_sfm_pipeline_reconstructs_the_demo_data(sfm_run):
    """The SfM half of `make demo`: every view registered, the check passes, the model opens in pycolmap."""
    import pycolmap

    out, proc = sfm_run
    assert proc.returncode == 0, proc.stderr
    check = json.loads((out / "reports/check.json").read_text())["counts"]
    assert check["passed"] is True and check["images_compared"] == 24
    assert check["position_rmse_rel"] < 0.002 and check["rotation_error_max_deg"] < 0.3
    rec = pycolmap.Reconstruction(str(out / "sparse/0"))
    assert rec.num_reg_images() == 24 and rec.num_points3D() > 1000
    assert (out / "points.ply").is_file() and (out / "transforms.json").is_file()


def test_splat_with_sfm_trains_from_the_sfm_of_the_same_run(sfm_run):
    """The rest of `make demo`: `splat --sfm` on posed data reuses the SfM nodes (poses set aside, checked against
    the truth), trains, scores and ends with the line that opens the viewer."""
    from recon3d.paths import HOME

    out, _ = sfm_run
    proc = recon3d("splat", "--sfm", "--data", HOME / "data/demo", "--out", out, "--steps", 60)
    assert proc.returncode == 0, proc.stderr
    run = json.loads((out / "run.json").read_text())
    status = {n["id"]: n["status"] for n in run["nodes"]}
    assert run["pipeline"] == "sfm+gaussians" and status["bundle_adjust"] == "cached" and status["check"] == "cached"
    assert status["gaussians"] == "ran" and (out / "gaussians/point_cloud.ply").is_file()
    assert proc.stdout.strip().splitlines()[-1] == f"look around: recon3d view {out}"
    # how the run was made, as typed: in run.json and in the report's summary
    assert run["command"] == f"recon3d splat --sfm --data {HOME / 'data/demo'} --out {out} --steps 60"
    assert f"<th>command</th><td><code>{run['command']}</code>" in (out / "report.html").read_text()


def test_splat_refuses_a_negative_budget_and_no_steps(tmp_path):
    """The options as typed, not the node's config keys they become; nothing is made."""
    base = ("splat", "--data", "data/demo", "--out", tmp_path / "out")
    one_line_error(recon3d(*base, "--budget-min", "-1"), "--budget-min -1: a training time cannot be negative")
    one_line_error(recon3d(*base, "--steps", "0"), "--steps 0", "e.g. --steps 3000")
    assert not (tmp_path / "out").exists()


def test_a_splat_after_a_nerf_in_one_folder_keeps_the_nerf_runs_report_and_metrics(tmp_path):
    """The second command reuses what the first computed and replaces its report and metrics: the first's are kept
    under its model's name, and the terminal says where."""
    import json

    out = tmp_path / "out"
    first = recon3d("nerf", "--data", "data/demo", "--out", out, "--steps", 10,
                    "--set", "nerf.res_start=24", "--set", "nerf.res_final=32")
    assert first.returncode == 0, first.stderr
    nerf_metrics = json.loads((out / "metrics.json").read_text())
    assert (out / "nerf/model.safetensors").is_file() and (out / "nerf/model.json").is_file()  # the weights in OUT
    second = recon3d("splat", "--data", "data/demo", "--out", out, "--steps", 10)
    assert second.returncode == 0, second.stderr
    assert f"{out} held a nerf run: its results are kept as nerf.metrics.json and nerf.report.html" in second.stderr
    assert json.loads((out / "nerf.metrics.json").read_text()) == nerf_metrics
    assert (out / "nerf.report.html").is_file() and (out / "report.html").is_file()
    assert "href='nerf.metrics.json'" in (out / "nerf.report.html").read_text()  # its link follows its metrics
    assert json.loads((out / "metrics.json").read_text())["model_kind"] == "gaussians"
    again = recon3d("splat", "--data", "data/demo", "--out", out, "--steps", 10)  # its own run: nothing moved
    assert again.returncode == 0 and "held a" not in again.stderr and not (out / "gaussians.metrics.json").exists()
    other = tmp_path / "other"  # other data into the folder: the NeRF of data/demo leaves it, kept files too
    recon3d("synth", other, "--images", 8)
    third = recon3d("nerf", "--data", other, "--out", out, "--steps", 10, "--set", "nerf.res_start=24",
                    "--set", "nerf.res_final=32")
    assert third.returncode == 0, third.stderr
    assert "held a" not in third.stderr and f"{out} held the results of other data: " in third.stderr
    assert not (out / "nerf.metrics.json").exists() and not (out / "gaussians").exists()
    assert json.loads((out / "metrics.json").read_text())["protocol"]["data"] == str(other.resolve())


def test_a_failed_run_does_not_call_an_earlier_runs_files_its_outputs(tmp_path):
    out = tmp_path / "out"
    assert recon3d("run", "sfm", "--data", "data/demo", "--out", out).returncode == 0
    one_line_error(recon3d("run", "sfm", "--data", "data/demo", "--out", out, "--set", "features.mask_classes=[crat]"),
                   "mask_classes crat not among")
    shown = recon3d("show", out)
    assert f"files in {out} (the run did not finish: some may be an earlier run's): database.db" in shown.stdout
    assert "outputs in" not in shown.stdout and "match: left out" not in shown.stdout + shown.stderr


def test_renders_of_a_replaced_model_leave_with_it(tmp_path):
    """`recon3d render OUT --views train`, then a splat that trains another model into OUT: the old model's train
    views leave (the run's own test renders are published anew); the same model from the cache keeps them."""
    out = tmp_path / "out"
    splat = ("splat", "--data", "data/demo", "--out", out, "--steps")
    assert recon3d(*splat, 10).returncode == 0
    assert recon3d("render", out, "--views", "train").returncode == 0
    images = out / "renders/gaussians/images"
    rendered = sorted(p.name for p in images.glob("*.png"))
    assert recon3d(*splat, 10).returncode == 0  # the same model
    assert sorted(p.name for p in images.glob("*.png")) == rendered
    again = recon3d(*splat, 11)
    assert again.returncode == 0 and "renders/gaussians: what `recon3d render` / `recon3d mesh` wrote" in again.stderr
    left = sorted(p.name for p in images.glob("*.png"))
    assert len(left) < len(rendered) and not (out / "renders/gaussians/rendered.json").exists()
    assert all(any((out / "cache").glob(f"render-*/publish/renders/gaussians/images/{name}")) for name in left)


def test_render_mesh_export_wait_for_a_run_in_progress(tmp_path):
    from recon3d.dag.lock import run_lock

    out = tmp_path / "out"
    out.mkdir()
    with run_lock(out):  # a splat training into OUT: its model is not there yet
        for args in (("render", out), ("mesh", out), ("export", out, "--format", "ply", "--to", tmp_path / "e")):
            one_line_error(recon3d(*args), f"{out} is in use by a running recon3d (pid", f"recon3d show {out}")


def test_a_setting_gets_the_key_meant_or_what_it_means(tmp_path):
    base = ("splat", "--data", "data/demo", "--out", tmp_path / "out")
    one_line_error(recon3d(*base, "--set", "gaussians.stepz=100"), "unknown key 'stepz'", "did you mean 'steps'?")
    one_line_error(recon3d(*base, "--set", "gaussians.xyzzy=1"), "unknown key 'xyzzy'", "gaussians takes: ")
    one_line_error(recon3d(*base, "--set", "gaussians.max_side=-5"), "max_side: Input should be greater than",
                   "— max_side: shrink the images")


def test_compare_bad_methods_budget_and_seeds(tmp_path):
    base = ("compare", "--data", "data/demo", "--out", tmp_path / "out")
    one_line_error(recon3d(*base, "--methods", "gaussians,mesh"), "unknown method(s) 'mesh'", "gaussians, nerf")
    one_line_error(recon3d(*base, "--budget-min", "0"), "--budget-min 0", "needs a training-time budget")
    one_line_error(recon3d(*base, "--seeds", "0,x"), "'x' is not an integer")
    one_line_error(recon3d(*base, "--lpips-heads", "alex.pth"), "LPIPS needs both --lpips-backbone and --lpips-heads")
    one_line_error(recon3d(*base, "--seeds", "0,0"), "--seeds '0,0' names 0 more than once")
    one_line_error(recon3d(*base, "--holdout-every", "1"), "every image would be held out", "give 2 or more")
    one_line_error(recon3d(*base, "--holdout-every", "0"), "no image would be held out to compare on")
    assert not (tmp_path / "out").exists()


def test_report_rebuilds_any_run_folder(sfm_run, tmp_path):
    out, _ = sfm_run
    (out / "report.html").unlink()
    proc = recon3d("report", out)
    assert proc.returncode == 0 and (out / "report.html").is_file()
    page = (out / "report.html").read_text()
    assert "Sparse model" in page and "reprojection errors" in page and "Cameras" in page
    assert "match_graph.svg" in page and "<title>" in page  # the match and verification graphs, inline
    peaks = {n: json.loads((out / f"reports/{n}.json").read_text())["memory_peak_mb"]
             for n in ("features", "match", "triangulate")}
    assert all(v > 50 for v in peaks.values()) and "<th>memory</th><td>" in page and " MB at the most" in page
    one_line_error(recon3d("report", tmp_path), "is not a recon3d run folder")


def test_executor_options_are_checked(tmp_path):
    one_line_error(recon3d("run", "demo", "--data", "data/demo", "--out", tmp_path / "o", "--workers", "2"),
                   "executor local takes no workers", "--executor dask")
    one_line_error(recon3d("run", "demo", "--data", "data/demo", "--out", tmp_path / "o", "--executor", "spark"),
                   "unknown executor 'spark'")


def test_synth_labeled_scene(tmp_path):
    proc = recon3d("synth", tmp_path / "lab", "--labeled", "--moving", "--images", 4, "--width", 96, "--height", 72,
                   "--points", 200)
    assert proc.returncode == 0, proc.stderr
    coco = json.loads((tmp_path / "lab" / "labels.json").read_text())
    assert [c["name"] for c in coco["categories"]] == ["crate", "cabinet", "pedestal", "car"]
    assert len(coco["images"]) == 4 and coco["annotations"]
    one_line_error(recon3d("synth", tmp_path / "x", "--moving"), "--moving needs --labeled")


def test_synth_bad_options_are_one_line_and_write_nothing(tmp_path):
    """Values the generator cannot use, options --labeled would ignore, and a folder holding an earlier dataset
    (whose extra images would stay beside the new truth) are refused before anything is written."""
    out = tmp_path / "d"
    for option, value, said in (("--images", 1, "--images 1: give 2 or more (a scene to reconstruct needs two"),
                                ("--points", -5, "--points -5: give 1 or more"), ("--width", 0, "--width 0"),
                                ("--seed", -1, "--seed -1: give 0 or more")):
        one_line_error(recon3d("synth", out, option, value), said)
    one_line_error(recon3d("synth", out, "--labeled", "--rig", "forward_facing", "--format", "colmap"),
                   "--labeled writes an orbit of PINHOLE views in nerfstudio's format: --rig forward_facing, "
                   "--format colmap cannot apply")
    assert not out.exists()
    (out / "images").mkdir(parents=True)
    (out / "images" / "015.png").write_bytes(b"an earlier dataset's")
    one_line_error(recon3d("synth", out, "--images", 8), "exists and is not an empty folder", "give a new folder")


def test_a_run_started_with_a_relative_out_reads_from_anywhere(tmp_path):
    """`--out out/x` as a user types it: the run records absolute paths, so show, report, view and export work
    from another folder (they failed on node folders and renders recorded relative to where the run started)."""
    from recon3d.paths import HOME
    from recon3d.viewer import load_view

    proc = recon3d("splat", "--data", HOME / "data/demo", "--out", "out/rel", "--steps", 30, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "out/rel"
    assert json.loads((out / "run.json").read_text())["nodes"][0]["folder"].startswith(str(tmp_path))
    for args in (("show", out), ("report", out), ("export", out, "--format", "nerfstudio", "--to", tmp_path / "ns")):
        done = recon3d(*args)
        assert done.returncode == 0, done.stderr
    assert load_view(out).model is not None


def test_compare_ends_with_its_figures_in_one_line(tmp_path, capsys):
    """`recon3d compare` closes with each method's held-out PSNR and SSIM (and their spread over seeds)."""
    from recon3d.cli import _print_comparison
    from recon3d.io.files import write_json

    row = {"psnr_std": 0.0, "ssim": 0.55, "seeds": [0]}
    write_json(tmp_path / "compare.json", {"protocol": {"test_views": 2}, "table": [
        {**row, "method": "gaussians", "psnr": 19.081}, {**row, "method": "nerf", "psnr": 18.416, "seeds": [0, 1],
                                                          "psnr_std": 0.31}]})
    _print_comparison(tmp_path)
    said = " ".join(capsys.readouterr().err.split())
    assert said == ("gaussians PSNR 19.08 dB, SSIM 0.5500; nerf PSNR 18.42 dB, SSIM 0.5500 (PSNR +- 0.31 dB, sample "
                    "std over 2 seeds) on 2 held-out views")
    found = json.loads((tmp_path / "compare.json").read_text())  # a method that ended at its steps is named
    write_json(tmp_path / "compare.json", {**found, "stopped_before_budget": [
        "gaussians-s0 stopped at its 200 steps after 2.5 s of the 15 s budget"]})
    _print_comparison(tmp_path)
    assert capsys.readouterr().err.splitlines()[-1] == ("not at equal time: gaussians-s0 stopped at its 200 steps "
                                                         "after 2.5 s of the 15 s budget")


def _running_in_group(pgid: int) -> list[int]:
    """Processes of group `pgid` that are not zombies (Linux /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()  # after the command name: state, ppid, pgrp
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


@pytest.mark.parametrize("signame, code, said", [
    ("SIGINT", 130, "recon3d: interrupted — the same command resumes"),
    ("SIGTERM", 143, "recon3d: stopped (SIGTERM) — the same command resumes"),
])
def test_ctrl_c_or_sigterm_stops_the_run_in_one_line_and_the_same_command_resumes(tmp_path, signame, code, said):
    """Ctrl-C, or `timeout` / a job scheduler's SIGTERM, to the whole process group (the pool's workers too)
    while a stage's tasks run on the pool: one line saying how to go on, no worker's traceback and no native
    stack trace (pycolmap's glog handler took SIGTERM: 80 lines a process), no worker left behind; the same
    command then finishes."""
    import signal
    import time

    from recon3d.paths import HOME

    out = tmp_path / "out"
    args = [sys.executable, "-m", "recon3d.cli", "run", "sfm", "--data", str(HOME / "data/demo"), "--out", str(out)]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 60
    while not ((out / "cache").is_dir() and any((out / "cache").glob("features-*"))):
        assert proc.poll() is None and time.monotonic() < deadline, "the run ended before its features node"
        time.sleep(0.05)
    time.sleep(0.5)  # the pool's workers started and extracting
    os.killpg(proc.pid, getattr(signal, signame))
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == code, stderr
    assert "Traceback" not in stderr and "stack trace" not in stderr and said in stderr
    record = json.loads((out / "run.json").read_text())
    assert record["state"] == "interrupted" and {"features": "interrupted"}.items() <= \
        {n["id"]: n["status"] for n in record["nodes"]}.items()
    time.sleep(1)
    assert not _running_in_group(proc.pid)  # no worker left behind (zombies aside: nothing here may reap them)
    again = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr


def test_a_stopped_training_saves_its_step_and_the_same_command_goes_on_from_it(tmp_path):
    """Ctrl-C during training: the step it came in ends, is saved, and the run stops (exit 130); the same
    command resumes from that step, not from the last periodic checkpoint (1000 steps apart)."""
    import signal
    import time

    import torch

    from recon3d.paths import HOME

    out = tmp_path / "out"
    args = [sys.executable, "-m", "recon3d.cli", "splat", "--sfm", "--data", str(HOME / "data/demo"), "--out", str(out),
            "--steps", "800"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 90
    while not ((out / "cache").is_dir() and any((out / "cache").glob("gaussians-*/resume"))):  # training began
        assert proc.poll() is None and time.monotonic() < deadline, "the run ended before its training"
        time.sleep(0.1)
    time.sleep(4)  # some hundred steps in, short of the 800 (about 30 ms each) and of the first periodic save
    os.killpg(proc.pid, signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in stderr, stderr
    saved = torch.load(next(out.glob("cache/gaussians-*/resume/checkpoint.pt")), weights_only=False)["step"]
    assert 0 < saved < 800
    again = subprocess.run(args, capture_output=True, text=True, timeout=180)
    assert again.returncode == 0, again.stderr
    counts = json.loads((out / "reports/gaussians.json").read_text())["counts"]
    assert counts["resumed_from_step"] == saved and counts["steps"] == 800


@pytest.mark.parametrize("args, fragment", [
    (["--views", "trian"], "--views 'trian': input should be 'test', 'train' or 'all'"),
    (["--orbit-frames", "-3"], "--orbit-frames -3: input should be greater than or equal to 0"),
])
def test_render_options_are_checked_in_one_line(tmp_path, args, fragment):
    one_line_error(recon3d("render", tmp_path, *args), fragment, "recon3d render --help")


def test_render_takes_the_run_folder_once(tmp_path):
    one_line_error(recon3d("render"), "which run? give its folder", "recon3d render out/splat")
    one_line_error(recon3d("render", tmp_path, "--model", tmp_path), "give the run folder once")
