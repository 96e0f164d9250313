"""A folder of photos as a user brings it: no poses, no ground truth, mixed orientations.

`recon3d run sfm` must exit 0 with its check skipped; `recon3d splat` on the same folder runs SfM first (from
the cache when `sfm` ran into the same --out) and trains, renders and scores; a truth path that is asked for
and missing still fails clearly.
"""

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pycolmap
import pytest
from PIL import Image

from recon3d.errors import DataError
from recon3d.io.splat_ply import read_splats
from recon3d.io.splat_spz import read_spz
from recon3d.paths import HOME
from tests.test_cli import one_line_error, recon3d

SFM_NODES = ["ingest", "features", "match", "essential", "triangulate", "bundle_adjust", "export", "check"]


def test_sfm_without_truth_exits_0_and_says_check_skipped(photo_runs):
    out, sfm, _ = photo_runs
    assert sfm.returncode == 0, sfm.stderr
    assert "Traceback" not in sfm.stderr
    report = json.loads((out / "reports/check.json").read_text())
    assert report["skipped"] == "no ground_truth/ in the data"
    assert "skipped: no ground_truth/ in the data" in recon3d("show", out).stdout
    assert "skipped: no ground_truth/ in the data" in (out / "report.html").read_text()
    assert (out / "sparse/0").is_dir()
    # named on the terminal, not only in JSON: once, in the run's summary (the node's own line would repeat it)
    assert "image(s) dropped: notes.jpg (cannot read image" in sfm.stdout
    assert "left out notes.jpg" not in sfm.stdout
    assert f"outputs in {out}: database.db, points.ply, sparse/, transforms.json" in sfm.stdout
    verified = json.loads((out / "reports/essential.json").read_text())["counts"]["pairs_verified"]
    features = json.loads((out / "reports/features.json").read_text())["counts"]["keypoints_per_image"]
    with pycolmap.Database.open(out / "database.db") as db:  # what COLMAP and hloc read
        assert db.num_verified_image_pairs() == verified and db.num_images() == len(features)
        image = db.read_image_with_name("IMG_00.jpg")
        assert db.num_descriptors_for_image(image.image_id) == features["IMG_00.jpg"] > 100


def test_splat_from_photos_reuses_the_sfm_and_scores_held_out_photos(photo_runs):
    out, _, splat = photo_runs
    assert splat.returncode == 0, splat.stderr
    assert "ran 3 node(s), 8 from cache" in splat.stderr  # gaussians, render, evaluate; no SfM node again
    assert "left out pocket.png" not in splat.stdout  # "not posed" to the trainer: it follows from the SfM's reason
    summary = next(line for line in splat.stdout.splitlines() if "image(s) dropped:" in line)
    assert "notes.jpg (cannot read image" in summary and "pocket.png (" in summary
    assert summary.count("pocket.png") == 1  # named once, with the first node's reason
    run = json.loads((out / "run.json").read_text())
    assert [n["id"] for n in run["nodes"]] == SFM_NODES + ["gaussians", "render", "evaluate"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert sorted(metrics["views"]) == ["IMG_00.jpg", "IMG_08.jpg", "IMG_16.jpg"]  # every 8th registered photo
    assert metrics["psnr"] > 14 and metrics["psnr_cc"] >= metrics["psnr"]  # 150 steps: a smoke test
    sizes = {Image.open(f).size for f in (out / "renders/gaussians").glob("IMG_??.png")}
    assert sizes == {(320, 240)}  # held-out views are landscape; the turned ones trained at (240, 320)
    assert metrics["protocol"]["resolution_source"].startswith("downscale 1, longest side <= 512 px")
    assert "240x320 -> 240x320" in metrics["protocol"]["resolution_source"]
    # the photos' EXIF exposures (a stop apart): the gain is learned, test views rendered at their own exposure
    assert metrics["protocol"]["exposure"].startswith("test views are rendered at the exposure their EXIF records")
    model = json.loads(next(out.glob("cache/gaussians-*/files/model.json")).read_text())
    assert json.loads((out / "gaussians/model.json").read_text()) == model  # in OUT beside the .ply
    exposures = [np.log2(25 / 60) - int(name[4:6]) % 2 for name in model["train"]]  # IMG_01.jpg: 1/120 s
    assert model["exposure"]["reference"] == pytest.approx(np.mean(exposures), abs=1e-5)
    page = (out / "report.html").read_text()
    assert "Held-out views" in page and "IMG_00" in page


def test_training_on_every_photo_gives_a_model_and_no_score(photos, photo_runs, tmp_path):
    """`--set gaussians.holdout_every=0` (no photo held out): the Gaussians train on all of them, render and
    evaluate say they are skipped, and the command exits 0 saying so, with no score from an earlier run."""
    out = tmp_path / "out"  # a copy, cache included: the SfM is reused
    shutil.copytree(photo_runs[0], out)
    proc = recon3d("splat", "--data", photos, "--out", out, "--steps", 20, "--set", "gaussians.holdout_every=0")
    assert proc.returncode == 0, proc.stderr
    said = " ".join(proc.stderr.split())
    assert "evaluate: skipped, the model holds out no test views (holdout_every 0)" in said
    assert "test PSNR" not in said
    for node in ("render", "evaluate"):
        assert json.loads((out / f"reports/{node}.json").read_text())["skipped"].startswith("the model holds out")
    model = json.loads((out / "gaussians/model.json").read_text())
    assert model["test"] == [] and len(model["train"]) > 20
    one_line_error(recon3d("render", "--model", out, "--views", "test"), "holds out no test views", "--views train")


def test_a_missing_truth_that_is_asked_for_still_fails(photos, photo_runs, tmp_path):
    out = tmp_path / "out"  # a copy, cache included: the shared run stays finished for the other tests
    shutil.copytree(photo_runs[0], out)
    proc = recon3d("run", "sfm", "--data", photos, "--out", out, "--set", f"check.truth={out / 'nope'}")
    one_line_error(proc, "node 'check' (evaluate)", "does not exist")
    run = json.loads((out / "run.json").read_text())
    assert [n["status"] for n in run["nodes"]][:7] == ["cached"] * 7  # nothing computed was lost


def test_export_nerfstudio_is_a_folder_that_moves_and_parses_as_nerfstudio_does(photo_runs, tmp_path):
    import open3d as o3d

    from recon3d.io.colmap import read_model
    from recon3d.io.nerfstudio import read_transforms
    from recon3d.report.html import load_run

    out = photo_runs[0]
    _, _, scene = load_run(out)
    done = recon3d("export", out, "--format", "nerfstudio", "--to", tmp_path / "ns")
    assert done.returncode == 0, done.stderr
    (tmp_path / "ns").rename(tmp_path / "moved")  # relative paths: the folder works wherever it goes
    data_dir = tmp_path / "moved"
    meta = json.loads((data_dir / "transforms.json").read_text())
    # as nerfstudio_dataparser.py: images at data_dir / file_path, points by Open3D at data_dir / ply_file_path,
    # applied_transform a 3 x 4 map of those points into the poses' frame
    assert all(not Path(f["file_path"]).is_absolute() and (data_dir / f["file_path"]).is_file() for f in meta["frames"])
    cloud = o3d.io.read_point_cloud(str(data_dir / meta["ply_file_path"]))
    assert len(cloud.points) == len(scene.posed_points()) and cloud.has_colors()
    assert np.array(meta["applied_transform"]).shape == (3, 4)
    # the run's held-out photos as nerfstudio's splits; val = test, nerfstudio's default eval split
    held_out = sorted(json.loads((out / "metrics.json").read_text())["views"])
    assert sorted(Path(f).name for f in meta["test_filenames"]) == held_out
    assert meta["val_filenames"] == meta["test_filenames"]
    assert len(meta["train_filenames"]) == len(scene.poses) - len(held_out)
    back = {Path(name).name: pose for name, pose in read_transforms(data_dir).poses.items()}  # images/<name>
    assert sorted(back) == sorted(scene.poses) and "pocket.png" not in back
    for name, pose in scene.poses.items():
        np.testing.assert_allclose(back[name], pose, atol=1e-9)

    assert recon3d("export", out, "--format", "colmap", "--to", tmp_path / "colmap").returncode == 0
    model = read_model(tmp_path / "colmap/sparse/0", tmp_path / "colmap/images")
    assert sorted(model.poses) == sorted(scene.poses)
    for fmt in ("ply", "splat", "SPZ"):  # as the suffix is written, in either case
        assert recon3d("export", out, "--format", fmt, "--to", tmp_path / fmt.lower()).returncode == 0
    n = len(read_splats(out / "gaussians/point_cloud.ply")[0]["means"])
    assert (tmp_path / "splat/point_cloud.splat").stat().st_size == 32 * n
    assert len(read_spz(tmp_path / "spz/point_cloud.spz")["means"]) == n
    assert (tmp_path / "ply/point_cloud.ply").read_bytes() == (out / "gaussians/point_cloud.ply").read_bytes()


def test_export_of_what_a_run_does_not_hold_is_one_line(photo_runs, tmp_path):
    sfm_only = tmp_path / "sfm"  # the run and its cache without what it published: no Gaussians in OUT
    shutil.copytree(photo_runs[0] / "cache", sfm_only / "cache")
    (sfm_only / "run.json").write_text((photo_runs[0] / "run.json").read_text())
    for args, said in [(("--format", "splat"), "holds no trained Gaussians"),
                       (("--format", "gltf"), "unknown export format 'gltf'")]:
        one_line_error(recon3d("export", sfm_only, *args, "--to", tmp_path / "x"), said)
    one_line_error(recon3d("export", tmp_path / "nothing", "--format", "nerfstudio", "--to", tmp_path / "x"),
                   "nothing does not exist")
    mine = tmp_path / "mine"  # a folder that holds the user's files: refused, and left as it was
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    one_line_error(recon3d("export", photo_runs[0], "--format", "nerfstudio", "--to", mine), "already holds files")
    one_line_error(recon3d("export", photo_runs[0], "--format", "splat", "--to", mine / "notes.txt"), "is a file")
    assert [p.name for p in mine.iterdir()] == ["notes.txt"] and (mine / "notes.txt").read_text() == "mine"


def test_downscale_writes_smaller_images_and_scales_k(photos, tmp_path):
    """Longest side to max_side, K per axis by the size ratio: a point lands where the full image had it."""
    from recon3d.geometry.projection import world_to_pixels
    from recon3d.radiance.views import pixel_scene
    from recon3d.stages import ingest
    from recon3d.stages.base import StageContext

    scene = ingest.run(ingest.Scene(), ingest.IngestConfig(path=str(photos), camera_model="PINHOLE"))
    ctx = StageContext.standalone("downscale")
    small = pixel_scene(scene, ctx, 1.0, 100)
    assert {(im.width, im.height) for im in small.images} == {(100, 75), (75, 100)}
    assert ctx.counts["images_downscaled"] == 25
    pose = np.eye(4)
    xyz = np.array([[0.3, -0.2, 2.0]])
    for im in scene.images[:4]:
        cam, cam_small = scene.cameras[im.camera_id], small.cameras[small.image(im.name).camera_id]
        full = world_to_pixels(cam.model, cam.params, pose, xyz)[0][0]
        shrunk = world_to_pixels(cam_small.model, cam_small.params, pose, xyz)[0][0]
        np.testing.assert_allclose(shrunk, full * [cam_small.width / cam.width, cam_small.height / cam.height],
                                   rtol=1e-12)
        assert Image.open(small.image(im.name).path).size == (cam_small.width, cam_small.height)
    assert pixel_scene(scene, ctx, 1.0, 320) is scene  # nothing to shrink: the scene itself
    wrong = scene.replace(images=(dataclasses.replace(scene.images[0], path=str(HOME / "data/demo/images/000.png")),
                                  *scene.images[1:]))
    cams = dict(scene.cameras)
    cams[scene.images[0].camera_id] = dataclasses.replace(cams[scene.images[0].camera_id], width=400, height=300)
    with pytest.raises(DataError, match=f"image {scene.images[0].name} is 320x240 but its camera"):
        pixel_scene(wrong.replace(cameras=cams), ctx, 2.0, 0)
    halves = pixel_scene(scene, StageContext.standalone("half"), 2.0, 0)
    assert {(im.width, im.height) for im in halves.images} == {(160, 120), (120, 160)}


def test_distorted_photos_are_undistorted_and_shrunk_in_one_pass(tmp_path):
    """A SIMPLE_RADIAL photo of bright dots, 600x400, shrunk to a longest side of 150: each dot's centre lands
    where the PINHOLE twin (same focal and principal point, scaled) projects its point, within a tenth of a
    pixel; alpha photos keep their alpha; one file per image, none at full size."""
    from recon3d.geometry.projection import world_to_pixels
    from recon3d.radiance.views import pixel_scene
    from recon3d.scene import Camera, ImageInfo, Scene
    from recon3d.stages.base import StageContext

    cam = Camera("SIMPLE_RADIAL", 600, 400, np.array([500.0, 300.0, 200.0, -0.15]))
    xyz = np.array([[x, y, 4.0] for x in (-1.6, -0.8, 0.0, 0.9, 1.7) for y in (-1.0, 0.0, 1.1)])
    uv = world_to_pixels(cam.model, cam.params, np.eye(4), xyz)[0]
    yy, xx = np.mgrid[0:400, 0:600] + 0.5  # pixel centres
    dots = sum(np.exp(-((xx - u) ** 2 + (yy - v) ** 2) / (2 * 4.0**2)) for u, v in uv)
    grey = np.clip(255 * dots, 0, 255).astype(np.uint8)
    Image.fromarray(np.dstack([grey] * 3)).save(tmp_path / "rgb.png")
    Image.fromarray(np.dstack([grey] * 3 + [np.full_like(grey, 200)])).save(tmp_path / "rgba.png")
    scene = Scene(images=tuple(ImageInfo(n, str(tmp_path / n), 1, 600, 400) for n in ("rgb.png", "rgba.png")),
                  cameras={1: cam}, poses={"rgb.png": np.eye(4), "rgba.png": np.eye(4)})
    ctx = StageContext.standalone("pixels")
    out = pixel_scene(scene, ctx, 1.0, 150)
    small = out.cameras[1]
    assert (small.model, small.width, small.height) == ("PINHOLE", 150, 100)
    assert ctx.counts["images_undistorted"] == ctx.counts["images_downscaled"] == 2
    want = world_to_pixels(small.model, small.params, np.eye(4), xyz)[0]
    pixels = np.asarray(Image.open(out.image("rgb.png").path), float)[..., 0]
    yy, xx = np.mgrid[0:100, 0:150] + 0.5
    for u, v in want:
        near = (np.abs(xx - u) < 4) & (np.abs(yy - v) < 4)
        w = pixels * near
        np.testing.assert_allclose([(w * xx).sum() / w.sum(), (w * yy).sum() / w.sum()], [u, v], atol=0.1)
    assert Image.open(out.image("rgba.png").path).mode == "RGBA"
    assert sorted(p.name for p in ctx.workdir.rglob("*.png")) == ["rgb.png.png", "rgba.png.png"]


def test_photos_pipeline_composition():
    from recon3d.dag.pipeline import read_spec
    from recon3d.photos import needs_sfm, with_sfm

    spec = with_sfm(read_spec("compare")[0])
    by_id = {n.id: n for n in spec.nodes}
    assert spec.name == "sfm+compare"
    assert [n.id for n in spec.nodes][:8] == SFM_NODES
    assert by_id["gaussians"].after == ["bundle_adjust"] and by_id["nerf"].after == ["bundle_adjust"]
    assert by_id["render-nerf"].after == ["nerf"]
    assert needs_sfm(HOME / "data/demo/images") and not needs_sfm(HOME / "data/demo")


def test_posed_photos_without_points_get_points_from_their_own_poses(tmp_path):
    """data/demo is posed (transforms.json), opaque and carries no points: `splat` triangulates them from its
    poses first (features, spatial pairs, verification, triangulation with the poses held), and the Gaussians
    start from them. The poses stay the data's; the points reproject to their keypoints."""
    from recon3d.dag.pipeline import read_spec
    from recon3d.photos import for_data, needs_points
    from recon3d.scene import Scene

    assert needs_points(HOME / "data/demo") and not needs_points(HOME / "data/demo/images")
    spec = for_data(read_spec("gaussians")[0], HOME / "data/demo")
    assert [(n.id, n.after) for n in spec.nodes][:6] == [
        ("ingest", []), ("features", ["ingest"]), ("match", ["features"]), ("essential", ["match"]),
        ("triangulate", ["essential"]), ("gaussians", ["triangulate"])]
    out = tmp_path / "out"
    proc = recon3d("splat", "--data", HOME / "data/demo", "--out", out, "--steps", 30)
    assert proc.returncode == 0, proc.stderr
    counts = json.loads((out / "reports/triangulate.json").read_text())["counts"]
    assert counts["mapper"] == "known" and counts["posed_images"] == 24
    assert counts["points"] > 300 and counts["mean_reprojection_px"] < 1.0
    assert "init_points" in json.loads((out / "reports/gaussians.json").read_text())["events"]
    scene = Scene.load(next((out / "cache").glob("triangulate-*")) / "scene")
    truth = Scene.load(HOME / "data/demo/ground_truth")
    for name, pose in truth.poses.items():
        np.testing.assert_allclose(scene.poses[name], pose, atol=1e-6)
    lo, hi = truth.points.xyz.min(0), truth.points.xyz.max(0)
    inside = ((scene.points.xyz > lo - 0.05 * (hi - lo)) & (scene.points.xyz < hi + 0.05 * (hi - lo))).all(1)
    assert inside.mean() > 0.95  # on the synthetic surfaces, not scattered


def test_splat_on_a_folder_without_images_says_so(tmp_path):
    (tmp_path / "empty").mkdir()
    one_line_error(recon3d("splat", "--data", tmp_path / "empty", "--out", tmp_path / "o"), "no images found")


def test_photos_where_sfm_fails_stop_before_training(tmp_path):
    """Two unrelated photos: no verified pair, a clear error from the SfM, no training node runs."""
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)).save(folder / f"noise{i}.png")
    proc = recon3d("splat", "--data", folder, "--out", tmp_path / "o", "--steps", 5)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    run = json.loads((tmp_path / "o/run.json").read_text())
    status = {n["id"]: n["status"] for n in run["nodes"]}
    assert status["gaussians"] == "not run" and "failed" in status.values()


def test_sfm_on_iphone_heic_photos(tmp_path):
    """Twelve neighbouring views of the demo saved as an iPhone saves them (HEIC, EXIF camera): `recon3d run sfm`
    registers them all at their true poses (median relative rotation error under 1 degree), and the points take
    their colours from the JPEG copies (COLMAP reads no HEIC: they would be black). Every other view (30 degrees
    apart at 320 x 240) is too thin for any mapper: one CI run registered them with poses 11-22 degrees off and
    kept 25 points."""
    import pillow_heif
    from plyfile import PlyData

    from recon3d.geometry.align import relative_rotation_errors
    from recon3d.io.nerfstudio import read_transforms

    folder = tmp_path / "iphone"
    folder.mkdir()
    exif = Image.Exif()
    exif[271], exif[272] = "Apple", "iPhone 12"
    demo = read_transforms(HOME / "data/demo")
    views = sorted(demo.images, key=lambda im: im.name)[:12]
    for i, view in enumerate(views):
        image = pillow_heif.from_pillow(Image.open(view.path).convert("RGB"))
        image.save(folder / f"IMG_{i:04d}.HEIC", exif=exif.tobytes(), quality=95)
    proc = recon3d("run", "sfm", "--data", folder, "--out", tmp_path / "out")
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    model = pycolmap.Reconstruction(str(tmp_path / "out/sparse/0"))
    poses = {im.name: im.cam_from_world().matrix() for im in model.images.values()}
    assert sorted(poses) == [f"IMG_{i:04d}.HEIC.jpg" for i in range(12)]
    estimated = np.stack([poses[f"IMG_{i:04d}.HEIC.jpg"] for i in range(12)])
    truth = np.stack([demo.poses[view.name] for view in views])
    assert np.median(relative_rotation_errors(estimated, truth)) < 1.0
    vertex = PlyData.read(str(tmp_path / "out/points.ply"))["vertex"]
    colours = np.c_[vertex["red"], vertex["green"], vertex["blue"]]
    assert len(colours) > 300 and (colours.max(axis=1) > 0).mean() > 0.95


def test_exif_orientation_is_named_and_the_pixels_used_as_stored(tmp_path):
    from recon3d.stages import ingest

    folder = tmp_path / "photos"
    folder.mkdir()
    exif = Image.Exif()
    exif[274] = 6  # a phone held upright: stored landscape, shown portrait
    Image.new("RGB", (64, 48), (90, 120, 30)).save(folder / "upright.jpg", exif=exif)
    Image.new("RGB", (64, 48), (90, 120, 30)).save(folder / "plain.jpg")
    ctx = ingest.StageContext.standalone("ingest")
    scene = ingest.run(ingest.Scene(), ingest.IngestConfig(path=str(folder)), ctx)
    assert [(im.width, im.height) for im in scene.images] == [(64, 48), (64, 48)]
    assert ctx.dropped == []  # used: a phone's upright photos are not dropped images
    assert ctx.counts["exif_orientation"].startswith("1 photo(s) used as stored, their EXIF orientation not applied")
    assert ctx.counts["exif_orientation"].endswith(": upright.jpg (6, 64x48)")


def test_one_folder_one_cache_key_however_it_is_spelled(monkeypatch):
    from recon3d.dag import cache
    from recon3d.dag.pipeline import load_pipeline

    monkeypatch.chdir(HOME)
    keys = []
    for spelling in ("data/demo/images", "./data/demo/images/", HOME / "data/demo/images"):
        ingest_node = load_pipeline("sfm", {}, spelling)[1][0]
        keys.append(cache.node_key(ingest_node.stage, ingest_node.config, [], None))
    assert len(set(keys)) == 1


def test_the_report_opens_with_a_summary_then_pictures_then_tables(photo_runs):
    out, _, _ = photo_runs
    page = (out / "report.html").read_text()
    order = [page.index(mark) for mark in ("class='summary'", "Cameras and points", "Held-out views",
                                           "<h2>Nodes</h2>", "Raw node reports")]
    assert order == sorted(order)
    summary = page[order[0]:order[1]]
    assert "<b>notes.jpg</b>: cannot read image" in summary and "<b>pocket.png</b>: not posed" in summary
    assert "2 dropped" in summary and "PSNR" in summary and "recon3d view" in summary
    assert "<a href='points.ply'>" in summary  # the outputs, linked
    assert page.count("<details>") >= len(SFM_NODES)  # every node's raw JSON, folded
    assert "{&quot;" not in page[:order[3]]  # no raw JSON before the nodes table


def test_a_measurement_that_rounds_to_a_whole_number_does_not_read_as_a_count():
    """Tables show four significant digits: PSNR 15.9996 is `16.00` (a measurement), a count 16 stays `16`, a
    large count is not `1.316e+05`."""
    from recon3d.report.html import brief_counts

    shown = brief_counts({"psnr": 15.9996, "ssim": 0.70341, "views": 16, "steps": 131639, "seconds": 2.0,
                          "final_cost": 9295.2})
    assert shown == {"psnr": "16.00", "ssim": "0.7034", "views": "16", "steps": "131639", "seconds": "2",
                     "final_cost": "9295.2"}
