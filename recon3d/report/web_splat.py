"""The report's splat view: the trained Gaussians in the page itself, drawn by gsplat.js (vendored, MIT; see
vendor/README.md), so the report shows the model in any browser with WebGL 2, offline and without Python.

The model goes in as antimatter15's `.splat` records (degree-0 colour, 8-bit), at most `MAX_EMBEDDED` of them,
the most important first, in a frame gsplat.js's orbit controls expect: centred on the model, the cameras' up
along -y, the most level camera's view along +z, scaled so that camera stands 4 units from the centre.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import numpy as np

from recon3d.geometry.rotation import camera_center, horizontal_axes, most_level_camera, up_from_cameras
from recon3d.io.splat_ply import read_splats
from recon3d.io.splat_web import RECORD, decode_rotations, dot_splat_records, encode_rotations
from recon3d.scene import Scene

GSPLAT_JS = Path(__file__).with_name("vendor") / "gsplat-1.2.9.es.js"
MAX_EMBEDDED = 100_000  # Gaussians in the page: 3.2 MB of records, 4.3 MB of base64
CAMERA_DISTANCE = 4.0


def viewer_frame(scene: Scene, centre: np.ndarray) -> tuple[np.ndarray, float]:
    """(R (3, 3), scale): x' = scale R (x - centre) puts the cameras' up on -y and the most level camera on -z,
    CAMERA_DISTANCE from the origin, so that it looks along +z."""
    poses = np.stack(list(scene.poses.values()))
    up = up_from_cameras(poses)
    eye = camera_center(poses[most_level_camera(poses, up)])
    forward = centre - eye
    forward = forward - up * (forward @ up)
    if np.linalg.norm(forward) < 1e-9:  # the camera right above the centre: any horizontal direction
        forward = horizontal_axes(up)[0]
    z = forward / np.linalg.norm(forward)
    y = -up
    rotation = np.stack([np.cross(y, z), y, z])
    return rotation, CAMERA_DISTANCE / max(float(np.linalg.norm(eye - centre)), 1e-9)


def gaussians_folder(out: Path, scene: Scene | None) -> Path | None:
    """OUT/<node>/ holding the run's trained Gaussians (`point_cloud.ply`): `gaussians` for `recon3d splat`,
    `gaussians-s0` for `recon3d compare`; the first in node order when there are several (seeds), None without."""
    nodes = [node for node, model in (scene.radiance.items() if scene is not None else ()) if model.kind == "gaussians"]
    return next((out / node for node in nodes if (out / node / "point_cloud.ply").is_file()), None)


def model_records(folder: Path, limit: int = MAX_EMBEDDED) -> tuple[np.ndarray, int]:
    """The `limit` most important Gaussians of the model in `folder` as `.splat` RECORDs, and the model's size.
    The first `limit` records of `point_cloud.splat` when the training wrote one with the PLY (most important
    first: 3.2 MB read whatever the model's size; a 150k-Gaussian `point_cloud.ply` is 37 MB), else the whole
    PLY (a model from elsewhere, or a PLY newer than the `.splat` beside it)."""
    ply, fast = folder / "point_cloud.ply", folder / "point_cloud.splat"
    if fast.is_file() and fast.stat().st_mtime >= ply.stat().st_mtime:
        size = fast.stat().st_size
        if size and size % RECORD.itemsize == 0:
            return np.fromfile(fast, RECORD, count=limit), size // RECORD.itemsize
    records = dot_splat_records(read_splats(ply)[0])
    return records[:limit], len(records)


def in_viewer_frame(records: np.ndarray, scene: Scene) -> np.ndarray:
    """`.splat` RECORDs moved into the viewer's frame (`viewer_frame`, centred on their median position);
    colours unchanged, rotations composed with the frame's and quantised again."""
    from scipy.spatial.transform import Rotation  # here: the report module is imported by every run

    centre = np.median(records["position"], 0).astype(np.float64)
    rotation, scale = viewer_frame(scene, centre)
    moved = records.copy()
    moved["position"] = scale * (records["position"].astype(np.float64) - centre) @ rotation.T
    moved["scale"] = records["scale"].astype(np.float64) * scale
    turned = Rotation.from_matrix(rotation) * Rotation.from_quat(decode_rotations(records["rot"]), scalar_first=True)
    moved["rot"] = encode_rotations(turned.as_quat(scalar_first=True))
    return moved


def model_background(scene: Scene, node: str) -> tuple[float, float, float]:
    """The colour the node's model was trained in front of (its renders show it there), white without one."""
    from recon3d.radiance.views import background_colour  # torch: here, as the report is imported by every run

    model = scene.radiance.get(node)
    meta = None if model is None else Path(model.path).with_name("model.json")
    return background_colour(json.loads(meta.read_text())) if meta is not None and meta.is_file() else (1.0, 1.0, 1.0)


def splat_view_section(out: Path, scene: Scene) -> list[str]:
    """The interactive splat view of the run's Gaussians (`gaussians_folder`; nothing without them, or poses)."""
    folder = gaussians_folder(out, scene)
    if folder is None or not scene.poses:
        return []
    records, total = model_records(folder)
    data = in_viewer_frame(records, scene).tobytes()
    shown = len(records)
    red, green, blue = (round(255 * c) for c in model_background(scene, folder.name))
    note = f"all {total:,} Gaussians" if shown == total else \
        f"the {shown:,} most important of {total:,} Gaussians (all of them: {folder.name}/point_cloud.splat)"
    script = f"""
const source = document.getElementById("gsplat-js").textContent;
const SPLAT = await import(URL.createObjectURL(new Blob([source], {{type: "text/javascript"}})));
if (location.protocol === "file:") {{  // Chromium refuses blob: workers in a file:// page: gsplat.js then starts
  URL.createObjectURL = () => "";      // its sorting workers from data: URLs, which it allows
}}
const bytes = Uint8Array.from(atob(document.getElementById("splat-data").textContent), c => c.charCodeAt(0));
const canvas = document.getElementById("splat-canvas");
const renderer = new SPLAT.WebGLRenderer(canvas);
const scene = new SPLAT.Scene();
const camera = new SPLAT.Camera();
const controls = new SPLAT.OrbitControls(camera, canvas, 0, 0.3, {CAMERA_DISTANCE * 1.5}, false);
SPLAT.Loader.LoadFromArrayBuffer(bytes.buffer, scene);
renderer.backgroundColor = new SPLAT.Color32({red}, {green}, {blue}, 255);
const frame = () => {{ controls.update(); renderer.render(scene, camera); requestAnimationFrame(frame); }};
requestAnimationFrame(frame);
canvas.dataset.loaded = "true";
"""
    return ["<h2>The Gaussians</h2>",
            f"<p>{html.escape(note)}, in degree-0 colour; drag to orbit, right-drag to pan, scroll to zoom. "
            "Drawn by gsplat.js (MIT) inside this file, once it has sorted them (seconds; longer for a large "
            "model or a slow machine: an empty view at first is that).</p>",
            "<canvas id='splat-canvas' style='width:100%;max-width:960px;height:540px;display:block;"
            "border:1px solid #ccc'></canvas>",
            f"<script type='text/plain' id='gsplat-js'>{GSPLAT_JS.read_text()}</script>",
            f"<script type='text/plain' id='splat-data'>{base64.b64encode(data).decode()}</script>",
            f"<script type='module'>{script}</script>"]
