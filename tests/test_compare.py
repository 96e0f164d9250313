"""recon3d compare: methods x seeds on one protocol, the table, the report, refused mismatches, bad input."""

import json
import shutil
import subprocess

import pytest

from recon3d.compare import compare_pipeline
from recon3d.dag.runner import run_pipeline
from recon3d.errors import ConfigError, StageError
from recon3d.report.html import write_report
from recon3d.stages import compare
from recon3d.synthetic.splats import write_splat_dataset

CURVE = {"eval_every_s": 0.5, "eval_views": 2}  # one protocol: both methods evaluate the same curve views
FAST = {
    "gaussians": {"steps": 60, "init_count": 2000, "refine_start": 20, "refine_every": 20, "checkpoint_every": 20,
                  "sh_interval": 20, **CURVE},
    "nerf": {"steps": 80, "rays": 1024, "res_start": 24, "res_final": 40, "upsample_at": [40], "occupancy_res": 32,
             "checkpoint_every": 40, **CURVE},
}


def fast_sets(methods, seeds):
    return {f"{m}-s{s}": FAST[m] for m in methods for s in seeds}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_splat_dataset(tmp_path_factory.mktemp("cmp") / "data", 12, 48, 36, 200, 4, seed=3)


@pytest.fixture(scope="module")
def run(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("cmp") / "out"
    name, nodes = compare_pipeline(data, ["gaussians", "nerf"], [0, 1], 1.0,
                                   sets=fast_sets(["gaussians", "nerf"], [0, 1]))
    result = run_pipeline(name, nodes, out)
    write_report(out)
    return out, result


def test_compare_trains_every_method_and_seed_on_one_protocol(run):
    out, result = run
    assert {"gaussians-s0", "gaussians-s1", "nerf-s0", "nerf-s1", "compare"} <= set(result.executed)
    table = {row["method"]: row for row in json.loads((out / "compare.json").read_text())["table"]}
    assert set(table) == {"gaussians", "nerf"}
    for row in table.values():
        assert row["seeds"] == [0, 1] and row["psnr"] > 14 and row["psnr_std"] is not None
        assert row["fps"] > 0 and row["peak_rss_mb"] > 50 and row["model_mb"] > 0 and row["train_seconds"] > 0
    assert table["gaussians"]["gaussians"] > 100 and table["nerf"]["grid_resolution"] == 40
    assert table["nerf"]["stopped_by"] == ["steps", "steps"] and table["nerf"]["ssim_cc"] > 0
    said = json.loads((out / "compare.json").read_text())["stopped_before_budget"]  # 80 steps, a 60 s budget
    assert len(said) == 4 and said[0].startswith("gaussians-s0 stopped at its 60 steps after ")
    assert said[0].endswith(" s of the 60 s budget")
    per_node = json.loads((out / "metrics" / "evaluate-nerf-s1.json").read_text())
    assert per_node["seed"] == 1 and per_node["protocol"]["test_views"] == 3
    assert per_node["protocol"]["split"] == "the data's own split (images marked test)"
    assert len(per_node["train"]["curve"]) >= 2  # the time-to-PSNR curve, evaluated during training


def test_the_report_shows_table_curves_renders_and_protocol(run):
    out, _ = run
    page = (out / "report.html").read_text()
    section = page[page.index("id='comparison'"):]
    assert "<table>" in section and "gaussians" in section and "nerf" in section and "±" in section
    assert "time to PSNR" in section and section.count("test view ") == 3 and "Protocol" in section
    assert "<b>Not at equal time:</b> gaussians-s0 stopped at its 60 steps" in section and "stopped by" in section
    assert "<th>meaning</th>" in section and "the optimisation steps&#x27; own time" in section  # budget_min
    assert page.count("data:image/png;base64,") >= 4  # curves + 3 side-by-side views, all embedded
    train = json.loads((out / "reports" / "nerf-s0.json").read_text())["counts"]["train_seconds"]
    assert f"(training {train:.1f} s)" in page  # the time row says which part of a node's time its budget counts


def test_same_seed_twice_gives_the_same_psnr(data, tmp_path, run):
    out, _ = run
    name, nodes = compare_pipeline(data, ["gaussians"], [0], 1.0, sets=fast_sets(["gaussians"], [0]))
    again = run_pipeline(name, nodes, tmp_path / "again")
    a = json.loads((out / "metrics" / "evaluate-gaussians-s0.json").read_text())["psnr"]
    b = again.scene().metrics["evaluate-gaussians-s0"]["psnr"]
    assert abs(a - b) < 0.1


def test_mismatched_protocols_are_refused_naming_the_field(run):
    _, result = run
    scene = result.scene("compare")
    other = json.loads(json.dumps(scene.metrics["evaluate-nerf-s0"]))
    other["protocol"]["budget_min"] = 5.0
    mixed = scene.replace(metrics={**scene.metrics, "evaluate-nerf-s0": other})
    with pytest.raises(StageError, match=r"differ in 'budget_min' \(1.0 vs 5.0\)"):
        compare.run(mixed, compare.CompareConfig())


def test_bad_compare_input(data, tmp_path):
    with pytest.raises(ConfigError, match="unknown method.*'splats'.*choose from: gaussians, nerf"):
        compare_pipeline(data, ["splats"], [0], 1.0)
    with pytest.raises(ConfigError, match="--budget-min 0: a comparison on equal terms needs"):
        compare_pipeline(data, ["nerf"], [0], 0.0)
    with pytest.raises(ConfigError, match="seeds are integers"):
        compare_pipeline(data, ["nerf"], [-1], 1.0)
    with pytest.raises(ConfigError, match=r"different protocols: max_side differs \(gaussians-s0 512, nerf-s0 100\)"):
        compare_pipeline(data, ["gaussians", "nerf"], [0], 1.0, sets={"nerf": {"max_side": 100}})  # before training
    no_test = tmp_path / "no_test"
    shutil.copytree(data, no_test)
    (no_test / "transforms_test.json").unlink()
    name, nodes = compare_pipeline(no_test, ["gaussians"], [0], 1.0, sets=fast_sets(["gaussians"], [0]))
    with pytest.raises(StageError, match="no test views.*--holdout-every 8"):
        run_pipeline(name, nodes, tmp_path / "out")


def test_evaluate_scores_lpips_and_puts_its_weights_in_the_protocol(run, tmp_path):
    from recon3d.stages import evaluate
    from recon3d.stages.base import StageContext
    from tests.test_lpips import make_weights

    backbone_path, heads_path, _, _ = make_weights(tmp_path)
    scene = run[1].scene("render-nerf-s0")
    ctx = StageContext(node_id="e", workdir=tmp_path, publish_dir=tmp_path / "out")
    cfg = evaluate.EvaluateConfig(kind="images", renders="render-nerf-s0", lpips_backbone=str(backbone_path),
                                  lpips_heads=str(heads_path))
    m = evaluate.run(scene, cfg, ctx).metrics["e"]
    assert m["lpips"] > 0 and all(v["lpips"] > 0 for v in m["views"].values())
    assert "LPIPS v0.1, AlexNet" in m["protocol"]["metrics"]["lpips"] and "sha256" in m["protocol"]["metrics"]["lpips"]
    with pytest.raises(StageError, match="needs both"):
        evaluate.run(scene, evaluate.EvaluateConfig(kind="images", lpips_heads=str(heads_path)), ctx)


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium)")
def test_the_report_in_a_real_browser(run, tmp_path):
    """Headless Chromium renders the report; its screenshot shows the table and the embedded images (below the
    Gaussians' splat view, a canvas WebGL draws, flat in a screenshot taken at once: the page is taken tall)."""
    import numpy as np
    from PIL import Image

    out, _ = run
    shot = tmp_path / "shot.png"
    subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
                    f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1400,4000",
                    (out / "report.html").resolve().as_uri()], check=True, timeout=120, capture_output=True)
    pix = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    grey_border = (np.abs(pix - 204).max(axis=-1) <= 8).mean()  # the tables' #ccc cell borders
    colourful = (pix.max(axis=-1) - pix.min(axis=-1) > 60).sum()  # pixels of plots and renders, not text
    assert grey_border > 0.002, "no table borders in the screenshot"
    assert colourful > 0.02 * 1400 * 2400, "no images in the screenshot"


def test_a_set_with_a_method_name_reaches_every_seed(data):
    """`--set gaussians.key=value` sets it on every seed's node; a seed's own `--set gaussians-s1...` wins; an
    unknown node is still refused, naming the nodes there are."""
    sets = {"gaussians": {"appearance": "affine", "lr_appearance": 0.01}, "gaussians-s1": {"lr_appearance": 0.02},
            "render-gaussians": {"orbit_frames": 3}}
    _, nodes = compare_pipeline(data, ["gaussians", "nerf"], [0, 1], 1.0, sets=sets)
    cfg = {n.id: n.config for n in nodes}
    assert cfg["gaussians-s0"].appearance == cfg["gaussians-s1"].appearance == "affine"
    assert (cfg["gaussians-s0"].lr_appearance, cfg["gaussians-s1"].lr_appearance) == (0.01, 0.02)
    assert cfg["render-gaussians-s0"].orbit_frames == cfg["render-gaussians-s1"].orbit_frames == 3
    assert cfg["nerf-s0"].appearance == "none" and cfg["gaussians-s0"].budget_min == 1.0
    with pytest.raises(ConfigError, match="'splats'.*its nodes: ingest"):
        compare_pipeline(data, ["gaussians"], [0], 1.0, sets={"splats": {"steps": 1}})


def test_render_and_export_of_a_compare_run_name_the_model(run, tmp_path):
    """A compare run holds a model per method and seed: render takes --node and says which it rendered, export
    says which Gaussians it wrote."""
    from tests.test_cli import one_line_error, recon3d

    out, _ = run
    done = recon3d("render", out, "--node", "gaussians-s1")
    assert done.returncode == 0, done.stderr
    assert "rendered 3 test views of gaussians-s1 at " in done.stderr
    assert "(the run also holds gaussians-s0, nerf-s0, nerf-s1: --node NAME renders one)" in done.stderr
    one_line_error(recon3d("render", out, "--node", "mesh"), "--node mesh:", "give one of: gaussians-s0")
    done = recon3d("export", out, "--format", "ply", "--to", tmp_path / "ply")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("exported ply of gaussians-s0 (the first of gaussians-s0, gaussians-s1): ")
