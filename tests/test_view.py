"""`recon3d view OUT`: what it reads of a run folder, the camera maths, bad inputs, and the page in a real browser
(headless Chromium, skipped where Debian's `chromium` is not installed)."""

import json
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from recon3d.errors import DataError
from recon3d.geometry.rotation import look_at
from recon3d.viewer import ModelRenders, camera_frame, camera_images, class_colours, load_view, serve, view_from_frame
from tests.browser import CHROMIUM, Browser, model_drawn, save_png
from tests.test_cli import one_line_error, recon3d

# three.js logs this for every Gaussian splat object viser draws (viser 1.1.1, even for one finite Gaussian):
# viser's own, not this project's, and harmless
VISER_SPLAT_WARNING = "computeBoundingSphere(): Computed radius is NaN"


def test_load_view_reads_cameras_points_gaussians_and_dropped_images(photo_runs):
    out, _, _ = photo_runs
    view = load_view(out)
    assert view.state == "finished"
    assert len(view.scene.poses) >= 22  # of the 24 views of the demo scene
    assert {"notes.jpg", "pocket.png"} <= set(view.dropped)
    assert "cannot read image" in view.dropped["notes.jpg"]
    assert view.points is not None and len(view.points.xyz) > 500 and view.points.rgb.dtype == np.uint8
    g = view.gaussians
    n = len(g["centers"])
    assert g["covariances"].shape == (n, 3, 3) and g["rgbs"].shape == (n, 3) and g["opacities"].shape == (n, 1)
    cov = g["covariances"].astype(np.float64)
    assert np.allclose(cov, cov.transpose(0, 2, 1), atol=1e-7)
    assert (np.linalg.eigvalsh(cov) > -1e-9).all()  # positive semi-definite
    assert view.model is not None and view.model.kind == "gaussians"


def test_camera_frame_places_a_frustum_at_the_camera_and_renders_invert_it():
    eye, target = np.array([2.0, -3.0, 1.5]), np.array([0.1, 0.2, 0.3])
    cam_from_world = look_at(eye, target)
    wxyz, position = camera_frame(cam_from_world)
    assert np.allclose(position, eye)
    back, K, width, height = view_from_frame(wxyz, position, fov=np.deg2rad(60), aspect=1.5, height=200)
    assert np.allclose(back, cam_from_world, atol=1e-12)
    assert (width, height) == (300, 200)
    assert K[1, 1] == pytest.approx(100 / np.tan(np.deg2rad(30)))
    centre = cam_from_world[:3, :3] @ target + cam_from_world[:3, 3]
    assert (K @ centre / centre[2])[:2] == pytest.approx([150, 100])  # the target is at the image's centre


def test_render_from_a_training_camera_matches_its_photo(photo_runs):
    out, _, _ = photo_runs
    view = load_view(out)
    name = next(n for n in view.scene.poses)
    im = view.scene.image(name)
    cam = view.scene.cameras[im.camera_id]
    rgb = ModelRenders(view.model).render(view.scene.poses[name], cam.K, cam.width, cam.height)
    assert rgb.shape == (cam.height, cam.width, 3) and rgb.dtype == np.uint8
    assert rgb.std() > 10  # the model's colours, not a flat background


def test_a_picked_camera_shows_its_photo_beside_the_render_from_it(photo_runs):
    out, _, _ = photo_runs
    view = load_view(out)
    renders = ModelRenders(view.model)
    a, b = [n for n in view.scene.poses][:2]
    photo_a, render_a = camera_images(view, renders, a, side=160)
    photo_b, render_b = camera_images(view, renders, b, side=160)
    assert photo_a.shape == render_a.shape and max(photo_a.shape[:2]) == 160
    error = lambda x, y: np.abs(x.astype(float) - y.astype(float)).mean()  # noqa: E731
    assert error(render_a, photo_a) < error(render_b, photo_a)  # the render is from that camera
    assert camera_images(view, None, a)[1] is None


def test_class_colours():
    colours = class_colours(np.array([0, 1, -1, -2, 0]))
    assert (colours[0] == colours[4]).all() and not (colours[0] == colours[1]).all()
    assert tuple(colours[2]) == (150, 150, 150) and tuple(colours[3]) == (60, 60, 60)


def _stopped_after(out, tmp_path, last: str):
    """A copy of run `out` as a run killed after node `last` leaves it: later nodes not run, state running."""
    copy = tmp_path / "interrupted"
    shutil.copytree(out, copy, ignore=shutil.ignore_patterns("cache"))
    (copy / "cache").symlink_to(out / "cache")  # the node folders, shared
    record = json.loads((out / "run.json").read_text())
    ids = [n["id"] for n in record["nodes"]]
    for node in record["nodes"][ids.index(last) + 1:]:
        node["status"] = "not run"
    record.update(state="running", finished=False)
    (copy / "run.json").write_text(json.dumps(record))
    return copy


def test_view_of_an_interrupted_run_shows_what_it_holds(photo_runs, tmp_path):
    out, _, _ = photo_runs
    view = load_view(_stopped_after(out, tmp_path, "bundle_adjust"))
    assert view.state == "interrupted" and view.scene.poses and view.gaussians is None


def test_view_bad_inputs_are_one_line(photo_runs, tmp_path):
    out, _, _ = photo_runs
    (tmp_path / "plain").mkdir()
    one_line_error(recon3d("view", tmp_path / "plain"), "not a recon3d run folder")
    one_line_error(recon3d("view", _stopped_after(out, tmp_path, "features")), "no posed cameras yet",
                   "resumes the run")
    with pytest.raises(DataError, match="no posed cameras"):
        load_view(_stopped_after(out, tmp_path / "again", "ingest"))
    failed = _stopped_after(out, tmp_path / "failed", "ingest")  # its ingest refused the data: resuming cannot help
    record = json.loads((failed / "run.json").read_text())
    record.update(state="failed", error="node 'ingest': cannot open video clip.mp4 — pass a video ...")
    (failed / "run.json").write_text(json.dumps(record))
    one_line_error(recon3d("view", failed), "the run failed (node 'ingest': cannot open video clip.mp4",
                   "fix what that says and run the command again")
    posing_nothing = _stopped_after(out, tmp_path / "labels", "ingest")  # as labeled_scene's pipeline finishes
    record = json.loads((posing_nothing / "run.json").read_text())
    record.update(state="finished", finished=True, pipeline="labeled_scene")
    (posing_nothing / "run.json").write_text(json.dumps(record))
    one_line_error(recon3d("view", posing_nothing), "its pipeline 'labeled_scene' finished without posing any",
                   "recon3d run sfm (or splat, nerf) --data PHOTOS --out OUT")


def test_view_takes_the_next_port_when_one_is_in_use_and_stops_on_ctrl_c(photo_runs):
    out, _, _ = photo_runs
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.Popen([sys.executable, "-m", "recon3d.cli", "view", str(out), "--port", str(port)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            url_line = proc.stdout.readline()
        finally:
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=60)
    assert f"port {port} is in use: serving on" in err
    served = int(url_line.split("localhost:")[1].split()[0])
    assert served != port and "Ctrl-C" in url_line
    assert proc.returncode == 0 and "Traceback" not in err


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium)")
def test_the_viewer_in_a_real_browser(photo_runs, tmp_path):
    """Headless Chromium opens the viewer, the model appears, "render from here" puts a render in the panel, and
    the page logs no errors of ours."""
    out, _, _ = photo_runs
    server = serve(load_view(out), port=8123)
    try:
        with Browser(tmp_path / "profile") as browser:
            browser.open(f"http://127.0.0.1:{server.get_port()}")
            shot = browser.wait_for(model_drawn, timeout=120)
            save_png(shot, tmp_path / "viewer.png")
            count_images = "document.querySelectorAll('img').length"
            before = browser.call("Runtime.evaluate", expression=count_images)["result"]["value"]
            browser.call("Runtime.evaluate", expression="[...document.querySelectorAll('button')]"
                         ".find(b => b.textContent.includes('render from here')).click()")
            deadline = time.monotonic() + 60
            while browser.call("Runtime.evaluate", expression=count_images)["result"]["value"] <= before:
                assert time.monotonic() < deadline, "no render appeared after 'render from here'"
                time.sleep(0.5)
            errors = [e for e in browser.errors if VISER_SPLAT_WARNING not in e]
    finally:
        server.stop()
    assert not errors, errors


def test_the_reports_splat_view_clears_to_the_models_background(photo_runs):
    """Photos train in front of a learned colour: the report's splat view shows the model in front of it."""
    out, _, _ = photo_runs
    meta = json.loads(next((out / "cache").glob("gaussians-*/files/model.json")).read_text())
    assert meta["background"] == "learned"
    red, green, blue = (round(255 * c) for c in meta["background_rgb"])
    assert f"new SPLAT.Color32({red}, {green}, {blue}, 255)" in (out / "report.html").read_text()


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium)")
def test_the_reports_splat_view_draws_the_model_from_the_file_alone(photo_runs, tmp_path):
    """The report's embedded gsplat.js view, opened as a file (no server, no network): the model appears."""
    out, _, _ = photo_runs
    page = (out / "report.html").read_text()
    assert "id='splat-canvas'" in page and "src=" not in page.split("id='splat-canvas'")[1].split("</script>")[0]
    with Browser(tmp_path / "profile", 1280, 900) as browser:
        browser.open((out / "report.html").resolve().as_uri())
        rect = browser.call("Runtime.evaluate", returnByValue=True, expression="(() => {"
                            "const c = document.getElementById('splat-canvas'); c.scrollIntoView();"
                            "const r = c.getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom]; })()")
        left, top, right, bottom = (round(v) for v in rect["result"]["value"])

        def drawn(pixels):
            canvas = pixels[top + 2:bottom - 2, left + 2:right - 2].astype(int)
            return (canvas.max(-1) - canvas.min(-1) > 40).mean() > 0.02  # the model's colours, not its background

        save_png(browser.wait_for(drawn, timeout=120), tmp_path / "report.png")
        assert not browser.errors, browser.errors
