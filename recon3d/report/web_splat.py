"""The report's splat view: the trained Gaussians in the page itself, drawn by gsplat.js (vendored, MIT; see
vendor/README.md), so the report shows the model in any browser with WebGL 2, offline and without Python.

The model goes in as antimatter15's `.splat` records (degree-0 colour, 8-bit), at most `MAX_EMBEDDED` of them,
the most important first, in a frame gsplat.js's orbit controls expect: centred on the model, the cameras' up
along -y, the most level camera's view along +z, scaled so that camera stands 4 units from the centre.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

import numpy as np

from recon3d.geometry.rotation import camera_center, most_level_camera, up_from_cameras
from recon3d.io.splat_ply import read_splats
from recon3d.io.splat_web import dot_splat_records
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
        forward = np.cross(up, [1.0, 0.0, 0.0] if abs(up[0]) < 0.9 else [0.0, 1.0, 0.0])
    z = forward / np.linalg.norm(forward)
    y = -up
    rotation = np.stack([np.cross(y, z), y, z])
    return rotation, CAMERA_DISTANCE / max(float(np.linalg.norm(eye - centre)), 1e-9)


def splat_bytes(ply: Path, scene: Scene, limit: int = MAX_EMBEDDED) -> tuple[bytes, int]:
    """The model at `ply` as `.splat` records in the viewer's frame, at most `limit`; and the model's size."""
    from scipy.spatial.transform import Rotation  # here: the report module is imported by every run

    raw, _ = read_splats(ply)
    centre = np.median(raw["means"], 0).astype(np.float64)
    rotation, scale = viewer_frame(scene, centre)
    moved = dict(raw)
    moved["means"] = scale * (raw["means"].astype(np.float64) - centre) @ rotation.T
    moved["scales"] = raw["scales"] + np.log(scale)
    turned = Rotation.from_matrix(rotation) * Rotation.from_quat(raw["quats"].astype(np.float64), scalar_first=True)
    moved["quats"] = turned.as_quat(scalar_first=True)
    records = dot_splat_records(moved)
    return records[:limit].tobytes(), len(records)


def splat_view_section(out: Path, scene: Scene) -> list[str]:
    """The interactive splat view of OUT/gaussians/point_cloud.ply (nothing without one, or without poses)."""
    ply = out / "gaussians" / "point_cloud.ply"
    if not ply.is_file() or not scene.poses:
        return []
    data, total = splat_bytes(ply, scene)
    shown = len(data) // 32
    note = f"all {total:,} Gaussians" if shown == total else \
        f"the {shown:,} most important of {total:,} Gaussians (all of them: gaussians/point_cloud.splat)"
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
renderer.backgroundColor = new SPLAT.Color32(255, 255, 255, 255);
const frame = () => {{ controls.update(); renderer.render(scene, camera); requestAnimationFrame(frame); }};
requestAnimationFrame(frame);
canvas.dataset.loaded = "true";
"""
    return ["<h2>The Gaussians</h2>",
            f"<p>{html.escape(note)}, in degree-0 colour; drag to orbit, right-drag to pan, scroll to zoom. "
            "Drawn by gsplat.js (MIT) inside this file.</p>",
            "<canvas id='splat-canvas' style='width:100%;max-width:960px;height:540px;display:block;"
            "border:1px solid #ccc'></canvas>",
            f"<script type='text/plain' id='gsplat-js'>{GSPLAT_JS.read_text()}</script>",
            f"<script type='text/plain' id='splat-data'>{base64.b64encode(data).decode()}</script>",
            f"<script type='module'>{script}</script>"]
