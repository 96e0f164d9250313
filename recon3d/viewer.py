"""`recon3d view OUT`: a local web viewer (viser, the library nerfstudio's viewer is built on) of a run folder.

It shows what the run holds so far: the registered cameras as frustums with their photos, the sparse points in
their colours (or their label classes), the trained Gaussians, the mesh; the images the run dropped are listed
with their reasons. Clicking a camera shows its photo beside the model's render from that camera, and "render
from here" renders the model at the viewer's camera. `load_view` reads the folder (no server, tested alone);
`serve` starts viser on it.
"""

from __future__ import annotations

import contextlib
import io
import math
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recon3d.errors import DataError
from recon3d.geometry.rotation import (
    camera_center,
    invert_rigid,
    matrix_to_quat,
    most_level_camera,
    quat_to_matrix,
    up_from_cameras,
)
from recon3d.io.images import read_rgb
from recon3d.io.splat_web import C0  # SH band 0: colour = 0.5 + C0 * DC
from recon3d.report.html import dropped_images, load_run, mesh_entries
from recon3d.report.web_splat import gaussians_folder
from recon3d.scene import RadianceModel, Scene

THUMB_SIDE = 160  # px, the longest side of a frustum's photo
RENDER_HEIGHT = 360  # px, "render from here"
REGISTERED, PICKED = (40, 160, 60), (230, 120, 0)
CLASS_COLOURS = np.array([(230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180),
                          (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128)], np.uint8)
BACKGROUND_GREY, UNDECIDED_GREY = (150, 150, 150), (60, 60, 60)


@dataclass
class Layer:
    """Points or Gaussian centres with their colours and, in a labeled scene, their classes."""

    xyz: np.ndarray  # (N, 3) float32
    rgb: np.ndarray  # (N, 3) uint8
    classes: np.ndarray | None = None  # (N,) int, -1 background, -2 undecided


@dataclass
class RunView:
    """What the viewer shows of a run folder."""

    out: Path
    pipeline: str
    scene: Scene
    state: str  # "finished", "interrupted" or "failed: ..."
    dropped: dict[str, str]  # image name -> the first reason a node gave
    points: Layer | None
    gaussians: dict[str, np.ndarray] | None = None  # centers, covariances, rgbs, opacities (N, 1)
    gaussian_classes: np.ndarray | None = None
    mesh: Path | None = None
    model: RadianceModel | None = None  # the model renders come from
    class_names: tuple[str, ...] = ()

    @property
    def extent(self) -> float:
        """The scene's size: the spread of the camera centres (points where there is one camera)."""
        centres = camera_center(np.stack(list(self.scene.poses.values())))
        spread = float(np.linalg.norm(centres - centres.mean(0), axis=1).max()) if len(centres) > 1 else 0.0
        if spread == 0.0 and self.points is not None and len(self.points.xyz):
            spread = float(np.percentile(np.linalg.norm(self.points.xyz - self.points.xyz.mean(0), axis=1), 90))
        return spread or 1.0


def load_view(out: Path) -> RunView:
    """Read run folder `out` for viewing; DataError when it is not a run or holds no posed camera yet."""
    record, reports, scene = load_run(out)
    if scene is None or not scene.poses:
        done = [n["id"] for n in record["nodes"] if n["status"] in ("ran", "cached")]
        if record.get("state") == "failed":  # resuming would fail the same way: its error says what to change
            raise DataError(f"{out} has no posed cameras: the run failed ({record['error']})",
                            "fix what that says and run the command again")
        if record.get("state") == "finished":  # a pipeline that poses nothing (labels of photos, calibration)
            raise DataError(f"{out} has no posed cameras: its pipeline {record['pipeline']!r} finished without "
                            "posing any", "view a run that reconstructs them: recon3d run sfm (or splat, nerf) "
                            "--data PHOTOS --out OUT, then recon3d view OUT")
        raise DataError(f"{out} has no posed cameras yet (finished: {', '.join(done) or 'no node'})",
                        "finish structure from motion first: the same `recon3d run` command resumes the run")
    state = "failed: " + record["error"] if record["error"] else \
        "interrupted" if record.get("state") in ("running", "interrupted") else "finished"
    view = RunView(out, record["pipeline"], scene, state, dropped_images(reports.values()), None,
                   class_names=scene.class_names)
    points = scene.posed_points()
    if points is not None and len(points):
        view.points = Layer(points.xyz.astype(np.float32), points.rgb.astype(np.uint8), points.classes)
    folder = gaussians_folder(out, scene)
    if folder is not None:
        view.gaussians = gaussian_arrays(folder / "point_cloud.ply")
        lifted = next(iter(scene.metrics_of_kind("label_lifting").values()), {}).get("gaussians", {})
        if Path(lifted.get("classes_file", "")).is_file():
            view.gaussian_classes = np.load(lifted["classes_file"])
    view.model = list(scene.radiance.values())[-1] if scene.radiance else None
    meshes = [Path(e["files"]["ply"]) for e in mesh_entries(scene, out).values() if "ply" in e.get("files", {})]
    view.mesh = next((out / p.name for p in meshes if (out / p.name).is_file()), None)
    return view


def gaussian_arrays(path: Path) -> dict[str, np.ndarray]:
    """A 3DGS `.ply` as viser draws it: centers (N, 3), covariances R diag(s^2) R^T (N, 3, 3), degree-0 colours
    rgbs (N, 3) in [0, 1] and opacities (N, 1), all float32."""
    from recon3d.io.splat_ply import read_splats

    raw, _ = read_splats(path)
    rot = quat_to_matrix(raw["quats"])  # (N, 3, 3)
    var = np.exp(2.0 * raw["scales"].astype(np.float64))  # (N, 3)
    cov = np.einsum("nij,nj,nkj->nik", rot, var, rot)
    return {"centers": raw["means"], "covariances": cov.astype(np.float32),
            "rgbs": np.clip(0.5 + C0 * raw["sh0"][:, 0], 0, 1).astype(np.float32),
            "opacities": (1 / (1 + np.exp(-raw["opacities"].astype(np.float64))))[:, None].astype(np.float32)}


def class_colours(classes: np.ndarray) -> np.ndarray:
    """(N,) classes -> (N, 3) uint8: a colour per class, grey for background, dark grey for undecided."""
    out = CLASS_COLOURS[np.maximum(classes, 0) % len(CLASS_COLOURS)]
    out[classes == -1] = BACKGROUND_GREY
    out[classes < -1] = UNDECIDED_GREY
    return out


def camera_frame(cam_from_world: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(wxyz, position) of a camera in the world, as viser places a frustum (OpenCV axes, as the Scene)."""
    world_from_cam = invert_rigid(cam_from_world)
    return matrix_to_quat(world_from_cam[:3, :3]), world_from_cam[:3, 3]


def view_from_frame(wxyz: np.ndarray, position: np.ndarray, fov: float, aspect: float,
                    height: int = RENDER_HEIGHT) -> tuple[np.ndarray, np.ndarray, int, int]:
    """A viewer camera (world_from_cam rotation, centre, vertical fov in radians, width / height) as
    (cam_from_world (4, 4), K (3, 3), width, height) for a render `height` px high."""
    world_from_cam = np.eye(4)
    world_from_cam[:3, :3], world_from_cam[:3, 3] = quat_to_matrix(wxyz), position
    width = max(1, round(height * aspect))
    f = height / 2 / math.tan(fov / 2)
    K = np.array([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1]])
    return invert_rigid(world_from_cam), K, width, height


def home_camera(view: RunView, up: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(look_at, position) of the first view: from just behind and above the most level camera, at the middle of
    the model (of the cameras without one): the model much as a photo shows it (a trained model is cleanest
    from where it was photographed; floaters between and behind the cameras stay out of the first view)."""
    poses = np.stack(list(view.scene.poses.values()))
    centres = camera_center(poses)
    target = np.median(view.points.xyz, 0) if view.points is not None and len(view.points.xyz) else centres.mean(0)
    if view.gaussians is not None:
        target = np.median(view.gaussians["centers"], 0)
    back = centres[most_level_camera(poses, up)] - target
    distance = max(float(np.linalg.norm(back)), 1e-9)
    return target, target + back * 1.1 + up * 0.2 * distance  # above its frustum, which stays out of the way


def thumbnail(path: str, side: int = THUMB_SIDE) -> np.ndarray | None:
    import cv2

    try:
        rgb = read_rgb(path)
    except (OSError, DataError, ValueError):
        return None
    scale = side / max(rgb.shape[:2])
    return cv2.resize(rgb, (max(1, round(rgb.shape[1] * scale)), max(1, round(rgb.shape[0] * scale))),
                      interpolation=cv2.INTER_AREA) if scale < 1 else rgb


class ModelRenders:
    """Renders of the run's trained model, one at a time (viser calls back from several threads)."""

    def __init__(self, model: RadianceModel):
        self.model, self.renderer, self.lock = model, None, threading.Lock()

    def render(self, cam_from_world: np.ndarray, K: np.ndarray, width: int, height: int) -> np.ndarray:
        import torch

        from recon3d.radiance.renderers import open_model
        from recon3d.radiance.views import View

        with self.lock:
            if self.renderer is None:
                self.renderer = open_model(self.model)
            view = View("viewer", torch.zeros(1), None, torch.tensor(cam_from_world, dtype=torch.float32),
                        torch.as_tensor(K, dtype=torch.float32), width, height)
            rgb, _, _ = self.renderer.render(view)
        return (rgb.numpy().clip(0, 1) * 255 + 0.5).astype(np.uint8)


def camera_images(view: RunView, renders: ModelRenders | None, name: str, side: int = 480,
                  ) -> tuple[np.ndarray, np.ndarray | None]:
    """A registered image's photo and the model's render from its camera (None without a model), both at most
    `side` px on their longest side (the render through the camera's pinhole part)."""
    import cv2

    im = view.scene.image(name)
    cam = view.scene.cameras[im.camera_id]
    scale = min(1.0, side / max(cam.width, cam.height))
    w, h = max(1, round(cam.width * scale)), max(1, round(cam.height * scale))
    photo = cv2.resize(read_rgb(im.path), (w, h), interpolation=cv2.INTER_AREA)
    if renders is None:
        return photo, None
    K = cam.K * np.array([[scale], [scale], [1.0]])
    return photo, renders.render(view.scene.poses[name], K, w, h)


def summary_markdown(view: RunView) -> str:
    scene = view.scene
    lines = [f"**{view.pipeline}** run, {view.state}", "",
             f"{len(scene.poses)} of {len(scene.images)} images registered"]
    if view.points is not None:
        lines.append(f"{len(view.points.xyz):,} points")
    if view.gaussians is not None:
        lines.append(f"{len(view.gaussians['centers']):,} Gaussians")
    if view.mesh is not None:
        lines.append(f"mesh: {view.mesh.name}")
    if view.dropped:
        lines += ["", f"**dropped ({len(view.dropped)})**"] + [f"- {name}: {why}" for name, why in view.dropped.items()]
    return "  \n".join(lines)


def serve(view: RunView, host: str = "127.0.0.1", port: int = 8080):
    """Start viser on `view` and return the server (`server.get_port()` is the port it bound: the next free one
    when `port` is taken). It serves from threads until `server.stop()`."""
    import viser

    with contextlib.redirect_stdout(io.StringIO()):  # viser's own banner; `recon3d view` prints the URL
        server = viser.ViserServer(host=host, port=port, label=f"recon3d: {view.out.name}", verbose=False)
    scene, extent = view.scene, view.extent
    up = up_from_cameras(np.stack(list(scene.poses.values())))
    server.scene.set_up_direction(tuple(up))
    server.initial_camera.look_at, server.initial_camera.position = home_camera(view, up)
    renders = ModelRenders(view.model) if view.model is not None else None
    gui = server.gui
    gui.add_markdown(summary_markdown(view))
    layers = {}
    if view.points is not None:
        layers["points"] = server.scene.add_point_cloud("/points", view.points.xyz, view.points.rgb,
                                                        point_size=0.004 * extent, point_shape="circle")
    if view.gaussians is not None:
        layers["Gaussians"] = server.scene.add_gaussian_splats("/gaussians", **view.gaussians)
        if "points" in layers:
            layers["points"].visible = False
    if view.mesh is not None:
        import trimesh

        layers["mesh"] = server.scene.add_mesh_trimesh("/mesh", trimesh.load(view.mesh, process=False),
                                                       visible=view.gaussians is None)
    picked_photo = gui.add_image(np.zeros((8, 8, 3), np.uint8), label="photo", visible=False)
    picked_render = gui.add_image(np.zeros((8, 8, 3), np.uint8), label="model", visible=False)
    frustums, size = [], (0.03 if view.gaussians is not None else 0.05) * extent
    for i, im in enumerate(im for im in scene.images if im.name in scene.poses):
        cam = scene.cameras[im.camera_id]
        wxyz, position = camera_frame(scene.poses[im.name])
        frustum = server.scene.add_camera_frustum(
            f"/cameras/{i}", fov=2 * math.atan(cam.height / 2 / cam.K[1, 1]), aspect=cam.width / cam.height,
            scale=size, thickness=0.04 * size, color=REGISTERED, image=thumbnail(im.path),
            wxyz=wxyz, position=position)
        frustums.append(frustum)

        def picked(event, name=im.name, frustum=frustum) -> None:
            for other in frustums:
                other.color = REGISTERED
            frustum.color = PICKED
            photo, render = camera_images(view, renders, name)
            picked_photo.image, picked_photo.label, picked_photo.visible = photo, name, True
            if render is not None:
                picked_render.image, picked_render.visible = render, True
                picked_render.label = f"{view.model.kind} render from {name}"
            event.client.camera.wxyz, event.client.camera.position = frustum.wxyz, frustum.position

        frustum.on_click(picked)
    layers["cameras"] = frustums
    with gui.add_folder("show"):
        for name, handle in layers.items():
            box = gui.add_checkbox(name, initial_value=all(h.visible for h in _handles(handle)))

            @box.on_update
            def _(event, handle=handle, box=box) -> None:
                for h in _handles(handle):
                    h.visible = box.value
    _colour_toggle(server, view, layers)
    if renders is not None:
        button = gui.add_button("render from here", hint=f"render the {view.model.kind} model at this view")
        here = gui.add_image(np.zeros((8, 8, 3), np.uint8), label="render", visible=False)

        @button.on_click
        def _(event) -> None:
            camera = event.client.camera
            here.image = renders.render(*view_from_frame(camera.wxyz, camera.position, camera.fov, camera.aspect))
            here.visible = True
    return server


def _handles(handle) -> list:
    return handle if isinstance(handle, list) else [handle]


def _colour_toggle(server, view: RunView, layers: dict) -> None:
    """In a labeled scene: colour the points (and Gaussians) by their label class."""
    if view.points is None or view.points.classes is None or not view.class_names:
        return
    legend = ", ".join(f"<span style='color:rgb{tuple(int(c) for c in CLASS_COLOURS[i % len(CLASS_COLOURS)])}'>"
                       f"{name}</span>" for i, name in enumerate(view.class_names))
    choice = server.gui.add_dropdown("colour", ("photo", "label class"), initial_value="photo")
    server.gui.add_markdown(f"classes: {legend}; grey: background")

    @choice.on_update
    def _(event) -> None:
        recolour(view, layers, choice.value == "label class")


def recolour(view: RunView, layers: dict, by_class: bool) -> None:
    """Points (and Gaussians, when they have classes) in their label classes' colours, or back in their own."""
    layers["points"].colors = class_colours(view.points.classes) if by_class else view.points.rgb
    if "Gaussians" in layers and view.gaussian_classes is not None:
        layers["Gaussians"].rgbs = class_colours(view.gaussian_classes).astype(np.float32) / 255 if by_class \
            else view.gaussians["rgbs"]
