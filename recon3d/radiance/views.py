"""Posed training and test views for radiance fields, from a Scene (shared by Gaussians and NeRF).

A view is one posed image as float32 tensors: `image (H, W, 3)` in [0, 1] composited on the background
when the file has alpha, `alpha (H, W)` (None without), `cam_from_world (4, 4)` (OpenCV axes, as the Scene)
and the pinhole `K (3, 3)` in COLMAP's pixel convention. Cameras with distortion are undistorted first
(`pixel_scene`), as 3DGS and nerfstudio train on pinhole images, and downscaled when asked
(`radiance_scene`: a factor, or a longest side), as nerfstudio's `downscale_factor` and 3DGS's `images_2`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torch import Tensor

from recon3d.errors import DataError, StageError
from recon3d.geometry import camera_models
from recon3d.geometry.camera_models import PINHOLE_MODELS
from recon3d.geometry.rotation import horizontal_axes
from recon3d.io import images as image_io
from recon3d.scene import Camera, ImageInfo, Scene
from recon3d.stages.base import StageContext

BACKGROUNDS = {"white": (1.0, 1.0, 1.0), "black": (0.0, 0.0, 0.0)}


def background_colour(meta: dict) -> tuple[float, float, float]:
    """The colour behind a trained model, from its model.json (or a render entry that copies it): its
    `background_rgb` (a learned colour), else the named one of BACKGROUNDS (models saved before colours were)."""
    return tuple(meta["background_rgb"]) if "background_rgb" in meta else BACKGROUNDS[meta["background"]]


@dataclass
class View:
    name: str
    image: Tensor  # (H, W, 3) float32 in [0, 1], on the background where alpha < 1
    alpha: Tensor | None  # (H, W) float32, None when the file has no alpha channel
    cam_from_world: Tensor  # (4, 4) float32
    K: Tensor  # (3, 3) float32
    width: int
    height: int
    ignore: Tensor | None = None  # (H, W) bool pixels left out of the training loss (moving objects)
    exposure: float | None = None  # the photo's log2 EXIF exposure (ImageInfo.exposure); None when not recorded


def downscale_factor(width: int, height: int, downscale: float, max_side: int) -> float:
    """The factor an image of `width` x `height` px is divided by: at least `downscale`, and enough to bring its
    longest side to `max_side` px or under (0 = no such limit)."""
    return max(downscale, max(width, height) / max_side if max_side else 1.0, 1.0)


@dataclass(frozen=True)
class PixelTask:
    """One image's pixels for a radiance field: `source` seen by `camera` becomes `target`, seen by `pinhole`."""

    source: str
    camera: Camera  # the image's own, maybe with distortion
    pinhole: Camera  # PINHOLE, the target's size
    target: str


def write_pixels(task: PixelTask) -> None:
    """Undistort at the photo's own resolution (cv2.undistort: bilinear, the same K without distortion), then
    area-average to the target's size, into one lossless PNG: no full-size intermediate file is written (a
    12 Mpx photo: 0.6 s instead of 1.7 s). Photos without alpha stay RGB (the border undistortion uncovers
    is black, as COLMAP's undistorter leaves it); with alpha, the border is transparent."""
    rgba = image_io.read_rgba(task.source)
    pixels = rgba if (rgba[..., 3] < 255).any() else np.ascontiguousarray(rgba[..., :3])
    cam = task.camera
    if cam.model not in PINHOLE_MODELS:
        from recon3d.calib.undistort import undistort_pixels

        pixels = undistort_pixels(pixels, cam)
    if (task.pinhole.width, task.pinhole.height) != (cam.width, cam.height):
        pixels = cv2.resize(pixels, (task.pinhole.width, task.pinhole.height), interpolation=cv2.INTER_AREA)
    (image_io.write_rgba if pixels.shape[-1] == 4 else image_io.write_rgb)(task.target, pixels)


def pixel_scene(scene: Scene, ctx: StageContext, downscale: float, max_side: int) -> Scene:
    """The scene as a radiance field sees it: every camera PINHOLE (its distortion undone, its focal lengths and
    principal point kept) and shrunk by `downscale_factor`, K scaled per axis by the exact ratio of the sizes
    (COLMAP's pixel convention: the image's corner is 0, so a scale is exact); the changed images written as
    lossless PNGs under `ctx.workdir/pixels/` by `write_pixels`, one task an image. The scene itself when every
    camera is pinhole and small enough. DataError naming an image whose size is not its camera's."""
    cameras, changed = dict(scene.cameras), {}
    for cam_id in sorted({im.camera_id for im in scene.images}):
        cam = scene.cameras[cam_id]
        f = downscale_factor(cam.width, cam.height, downscale, max_side)
        if f > 1.0 or cam.model not in PINHOLE_MODELS:
            w, h = max(1, round(cam.width / f)), max(1, round(cam.height / f))
            sx, sy = w / cam.width, h / cam.height
            (fx, fy), (cx, cy), _ = camera_models.split_params(cam.model, cam.params)
            cameras[cam_id] = Camera("PINHOLE", w, h, camera_models.make_params(
                "PINHOLE", (fx * sx, fy * sy), (cx * sx, cy * sy)))
            changed[cam_id] = f
    if not changed:
        return scene
    tasks, images = [], []
    for im in scene.images:
        if im.camera_id not in changed:
            images.append(im)
            continue
        _check_size(im, *image_io.image_size(im.path), scene.cameras[im.camera_id])
        pinhole = cameras[im.camera_id]
        tasks.append(PixelTask(im.path, scene.cameras[im.camera_id], pinhole,
                               str(ctx.workdir / "pixels" / f"{im.name}.png")))
        images.append(dataclasses.replace(im, path=tasks[-1].target, width=pinhole.width, height=pinhole.height))
    ctx.map(write_pixels, tasks, describe=lambda t: f"image {t.source}")
    ctx.count("images_undistorted", sum(scene.cameras[im.camera_id].model not in PINHOLE_MODELS for im in scene.images))
    ctx.count("images_downscaled", sum(changed.get(im.camera_id, 1.0) > 1.0 for im in scene.images))
    return scene.replace(cameras=cameras, images=tuple(images))


def radiance_scene(scene: Scene, ctx: StageContext, names: list[str], downscale: float = 1.0,
                   max_side: int = 0) -> Scene:
    """The pixels a radiance field trains and is scored on: the named images alone (cameras and poses kept, no
    points), undistorted and downscaled (`pixel_scene`); only those images are written."""
    wanted = set(names)
    alone = scene.replace(images=tuple(im for im in scene.images if im.name in wanted), points=None, features={})
    return pixel_scene(alone, ctx, downscale, max_side)


def describe_resolution(scene: Scene, used: Scene, downscale: float, max_side: int) -> str:
    """How the pixels a radiance field sees were made from the data's files, in words (for the protocol)."""
    undistorted = any(cam.model not in PINHOLE_MODELS for cam in scene.cameras.values())
    sizes = sorted({f"{scene.image(im.name).width}x{scene.image(im.name).height} -> {im.width}x{im.height}"
                    for im in used.images})
    how = (f"downscale {downscale:g}, longest side <= {max_side} px" if max_side else f"downscale {downscale:g}")
    return (f"{how} ({', '.join(sizes)}; area averaging, K scaled with the size)"
            + ("; cameras with distortion undistorted to PINHOLE first" if undistorted else ""))


def split_views(scene: Scene, holdout_every: int) -> tuple[list[str], list[str]]:
    """(train, test) names of the posed images, in scene order.

    With the data's own split (Blender `transforms_test.json`, nerfstudio `split`), `test` images are
    the test views and `train` (or unsplit) ones train; `val` images are left out. Without a split every
    `holdout_every`-th posed image is held out (0, 8, 16, ... as nerfstudio and the 3DGS paper), unless
    `holdout_every` is 0 (all images train, none test).
    """
    posed = [im for im in scene.images if im.name in scene.poses]
    if _has_split(posed):
        return ([im.name for im in posed if im.split in ("train", "")],
                [im.name for im in posed if im.split == "test"])
    if holdout_every <= 0:
        return [im.name for im in posed], []
    return ([im.name for i, im in enumerate(posed) if i % holdout_every],
            [im.name for i, im in enumerate(posed) if i % holdout_every == 0])


def describe_split(scene: Scene, holdout_every: int) -> str:
    """How `split_views` chooses the test views of this scene, in words (for the evaluation protocol)."""
    if _has_split([im for im in scene.images if im.name in scene.poses]):
        return "the data's own split (images marked test)"
    return f"every {holdout_every}th posed image held out" if holdout_every > 0 else "none held out"


def _has_split(posed: list[ImageInfo]) -> bool:
    return any(im.split for im in posed)


def load_views(scene: Scene, names: list[str], background: tuple[float, float, float]) -> list[View]:
    """The named posed images as Views; DataError naming the image when a file does not fit its camera."""
    bg = torch.tensor(background, dtype=torch.float32)
    return [_load(scene, scene.image(name), bg) for name in names]


def _load(scene: Scene, im: ImageInfo, bg: Tensor) -> View:
    cam = scene.cameras[im.camera_id]
    if cam.model not in PINHOLE_MODELS:
        raise StageError(f"image {im.name}: camera {im.camera_id} is {cam.model}; radiance fields take pinhole views",
                         "this is a bug in recon3d (the radiance stages undistort first): report it with this line")
    image, alpha = read_on_background(im.path, bg)
    h, w = image.shape[:2]
    _check_size(im, w, h, cam)
    return View(im.name, image, alpha,
                torch.tensor(scene.poses[im.name], dtype=torch.float32),
                torch.as_tensor(cam.K, dtype=torch.float32), w, h, exposure=im.exposure)


def _check_size(im: ImageInfo, width: int, height: int, cam: Camera) -> None:
    if (width, height) != (cam.width, cam.height):
        raise DataError(f"image {im.name} is {width}x{height} but its camera {im.camera_id} is "
                        f"{cam.width}x{cam.height}", "give each image size its own camera (or resize the image to "
                        "its camera)")


def read_on_background(path: str, background: Tensor) -> tuple[Tensor, Tensor | None]:
    """An image file as (H, W, 3) float32 in [0, 1] composited on `background` (3,), and its alpha (H, W)
    (None when the file has none, or only opaque pixels)."""
    rgba = image_io.read_rgba(path)
    pix = torch.from_numpy(rgba).float() / 255.0
    if not (rgba[..., 3] < 255).any():
        return pix[..., :3].contiguous(), None
    return (pix[..., :3] * pix[..., 3:] + background * (1 - pix[..., 3:])).contiguous(), pix[..., 3]


def coarser_view(view: View, factor: int) -> View:
    """`view` with its image `factor` times smaller (area averaging; sizes floored), K scaled per axis by the
    exact ratio of the sizes (COLMAP's pixel convention), alpha averaged, a pixel ignored where any of the
    pixels it covers was: what splatfacto's coarse-to-fine schedule trains on first. The view itself at 1."""
    if factor <= 1:
        return view
    w, h = max(1, view.width // factor), max(1, view.height // factor)

    def shrink(t: Tensor) -> Tensor:  # (H, W, C) -> (h, w, C)
        return torch.nn.functional.interpolate(t.permute(2, 0, 1)[None], size=(h, w), mode="area")[0].permute(1, 2, 0)

    K = view.K.clone()
    K[0] *= w / view.width
    K[1] *= h / view.height
    return dataclasses.replace(
        view, image=shrink(view.image).contiguous(), K=K, width=w, height=h,
        alpha=None if view.alpha is None else shrink(view.alpha[..., None])[..., 0].contiguous(),
        ignore=None if view.ignore is None else shrink(view.ignore[..., None].float())[..., 0] > 0)


def mean_colour(views: list[View]) -> Tensor:
    """(3,) the mean of the views' mean colours (each image weighs the same, none is copied whole)."""
    return torch.stack([v.image.mean((0, 1)) for v in views]).mean(0)


def scene_scale(views: list[View]) -> float:
    """1.1 x the largest distance of a camera centre from their mean (gsplat's scene scale)."""
    centers = torch.stack([-v.cam_from_world[:3, :3].T @ v.cam_from_world[:3, 3] for v in views])
    return 1.1 * float((centers - centers.mean(0)).norm(dim=-1).max().clamp_min(1e-6))


def view_bounds(views: list[View]) -> tuple[np.ndarray, float]:
    """(centre (3,), half-size) of the cube every view sees whole, world frame: centred on the point nearest
    to all optical axes (least squares), half-size the radius of the largest sphere there that fits in the
    narrowest camera's field of view."""
    A, b, centers, dirs, half_fov = np.zeros((3, 3)), np.zeros(3), [], [], []
    for v in views:
        cfw = v.cam_from_world.double().numpy()
        c, d = -cfw[:3, :3].T @ cfw[:3, 3], cfw[2, :3]  # centre and optical axis (camera z in the world)
        P = np.eye(3) - np.outer(d, d)
        A += P
        b += P @ c
        centers.append(c)
        dirs.append(d)
        k = v.K.double().numpy()
        half_fov.append(min(np.arctan(0.5 * v.width / k[0, 0]), np.arctan(0.5 * v.height / k[1, 1])))
    center = np.linalg.lstsq(A, b, rcond=None)[0]
    dist = np.array([np.dot(center - c, d) for c, d in zip(centers, dirs, strict=True)])
    radius = float(np.min(np.maximum(dist, 1e-6) * np.sin(half_fov)))
    return center, radius


def view_rays(view: View) -> tuple[Tensor, Tensor, Tensor]:
    """Rays through every pixel centre of `view`, row-major: origins (H*W, 3), unit directions (H*W, 3),
    world frame, and `z_per_t` (H*W,) = the camera z gained per unit of t (depth = t * z_per_t)."""
    iy, ix = torch.meshgrid(torch.arange(view.height, dtype=torch.float32),
                            torch.arange(view.width, dtype=torch.float32), indexing="ij")
    pix = torch.stack([ix + 0.5, iy + 0.5, torch.ones_like(ix)], -1).reshape(-1, 3)
    d_cam = pix @ torch.linalg.inv(view.K).T
    R, t = view.cam_from_world[:3, :3], view.cam_from_world[:3, 3]
    norm = d_cam.norm(dim=-1, keepdim=True)
    dirs = (d_cam / norm) @ R  # R^T d for row vectors
    origins = (-R.T @ t).expand_as(dirs).contiguous()
    return origins, dirs.contiguous(), (1.0 / norm[:, 0]).contiguous()


def pixels_of(view: View, points: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Where points (N, 3) world fall in `view`: column (N,) and row (N,) of the pixel (clamped into the image)
    and whether the point is in front of the camera and inside the image (N,) bool."""
    cam = points @ view.cam_from_world[:3, :3].T + view.cam_from_world[:3, 3]
    uv = cam @ view.K.T
    z = cam[:, 2].clamp_min(1e-9)
    u, w = uv[:, 0] / z, uv[:, 1] / z
    ok = (cam[:, 2] > 0) & (u >= 0) & (u < view.width) & (w >= 0) & (w < view.height)
    return u.clamp(0, view.width - 1).long(), w.clamp(0, view.height - 1).long(), ok


def carve(views: list[View], points: Tensor, keep_fraction: float = 0.95) -> tuple[Tensor, Tensor]:
    """Visual hull test of points (N, 3) world: keep (N,) bool where a point projects inside the alpha mask
    (alpha > 0.5) of at least `keep_fraction` of the views with alpha that see it, and the mean colour (N, 3)
    of those pixels. Without any alpha mask every point is kept (grey)."""
    n = points.shape[0]
    inside, seen, color = torch.zeros(n), torch.zeros(n), torch.zeros(n, 3)
    masked = [v for v in views if v.alpha is not None]
    if not masked:
        return torch.ones(n, dtype=torch.bool), torch.full((n, 3), 0.5)
    for v in masked:
        col, row, ok = pixels_of(v, points)
        hit = ok & (v.alpha[row, col] > 0.5)
        seen += ok.float()
        inside += hit.float()
        color += v.image[row, col] * hit[:, None].float()
    keep = (seen > 0) & (inside >= keep_fraction * seen)
    return keep, color / inside.clamp(min=1)[:, None]


ARC_GAP_DEG = 90.0  # cameras with a wider gap between neighbours around the scene do not surround it
MIN_SWEEP_DEG = 30.0  # the least an orbit sweeps: cameras at one azimuth (a walk towards the scene) still move


def orbit_angles(azimuths: np.ndarray, n_frames: int) -> np.ndarray:
    """(n_frames,) angles (radians) around the scene for cameras at `azimuths` (N,) radians, N >= 1: a whole
    turn when no gap between neighbouring cameras exceeds ARC_GAP_DEG, else from one end of the arc they cover
    to the other and back (widened about its middle to MIN_SWEEP_DEG), eased at the ends (1 - cos), so the video
    loops without a jump."""
    phi = np.sort(np.mod(azimuths, 2 * np.pi))
    gaps = np.diff(np.r_[phi, phi[0] + 2 * np.pi])
    k = int(np.argmax(gaps))
    if gaps[k] <= np.radians(ARC_GAP_DEG):
        return 2 * np.pi * np.arange(n_frames) / n_frames
    start = phi[(k + 1) % len(phi)]  # the arc runs from the camera after the widest gap round to the one before
    span = 2 * np.pi - gaps[k]
    if span < np.radians(MIN_SWEEP_DEG):
        start, span = start + span / 2 - np.radians(MIN_SWEEP_DEG) / 2, np.radians(MIN_SWEEP_DEG)
    return start + span * (1 - np.cos(2 * np.pi * np.arange(n_frames) / n_frames)) / 2


def orbit_views(views: list[View], n_frames: int) -> list[View]:
    """`n_frames` views on a circle around the scene: at the training cameras' mean distance and height
    above their mean up-plane, looking at the point nearest to all optical axes; intrinsics of views[0].
    Where the cameras surround the scene the circle is whole; where they leave a side unseen (a gap of more
    than `ARC_GAP_DEG` between neighbouring cameras around it: a facade, a tree seen from one side) the
    views sweep the arc the cameras cover and back (`orbit_angles`), so no frame looks at what no photo saw."""
    center, _ = view_bounds(views)
    cfws = np.stack([v.cam_from_world.double().numpy() for v in views])
    centers = np.einsum("nji,nj->ni", cfws[:, :3, :3], -cfws[:, :3, 3])
    up = -cfws[:, 1, :3].mean(0)  # camera -y (OpenCV) is up
    up /= np.linalg.norm(up)
    rel = centers - center
    height = float((rel @ up).mean())
    radius = float(np.linalg.norm(rel - np.outer(rel @ up, up), axis=1).mean())
    a, b = horizontal_axes(up)
    out = []
    for i, phi in enumerate(orbit_angles(np.arctan2(rel @ b, rel @ a), n_frames)):
        eye = center + height * up + radius * (np.cos(phi) * a + np.sin(phi) * b)
        z = (center - eye) / np.linalg.norm(center - eye)
        x = np.cross(z, up)  # OpenCV axes: x right, y down (against up), z forward
        x /= np.linalg.norm(x)
        y = np.cross(z, x)
        R = np.stack([x, y, z])
        cfw = np.eye(4)
        cfw[:3, :3], cfw[:3, 3] = R, -R @ eye
        v0 = views[0]
        out.append(View(f"orbit_{i:04d}", torch.zeros(0), None, torch.as_tensor(cfw, dtype=torch.float32), v0.K,
                        v0.width, v0.height))
    return out
