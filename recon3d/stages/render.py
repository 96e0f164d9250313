"""render: novel views of a trained radiance model (Gaussians or NeRF): test views, depth, an orbit video.

Writes `OUT/renders/<model node>/<view name>.png` (and `..._depth.png` colour maps with `..._depth.npy`
camera-z arrays), and with `orbit_frames` an orbit around the scene as `orbit.mp4` (OpenCV) or PNG frames.
The scene's metrics get this node's entry (`kind: renders`): each view's render and target image, which
`evaluate` (kind `images`) scores, and the render speed (frames per second, the first render excluded as
warm-up).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
from pydantic import Field

from recon3d.errors import StageError
from recon3d.io import images as image_io
from recon3d.radiance.protocol import NO_TEST_VIEWS
from recon3d.radiance.renderers import model_meta, open_model
from recon3d.radiance.views import background_colour, load_views, orbit_views, radiance_scene
from recon3d.scene import Scene
from recon3d.stages.base import Device, Stage, StageConfig, StageContext


class RenderConfig(StageConfig):
    model: str = Field("", description="node id of the model in the scene ('' = the last one trained)")
    views: Literal["test", "train", "all"] = Field("test", description="which posed views to render")
    depth: bool = Field(True, description="also write depth maps")
    orbit_frames: int = Field(0, ge=0, description="frames of an orbit video around the scene (0 = none)")
    video: Literal["mp4", "png"] = Field("mp4", description="orbit as an MP4 file or as PNG frames")
    fps: int = Field(30, ge=1, description="frame rate of the orbit video")
    device: Device = Field("cpu", description="torch device to render on")
    rasterizer: Literal["auto", "cpu", "reference", "gsplat"] = Field(
        "auto", description="Gaussians only: auto = what the model trained with")


def pick_model(scene: Scene, node: str) -> str:
    if not scene.radiance:
        raise StageError("render: the scene has no trained radiance model",
                         "put a gaussians (or nerf) node before render in the pipeline")
    if node and node not in scene.radiance:
        raise StageError(f"render: no model from node {node!r}; the scene has {', '.join(scene.radiance)}",
                         "set model to one of those node ids")
    return node or list(scene.radiance)[-1]


def run(scene: Scene, cfg: RenderConfig, ctx: StageContext | None = None) -> Scene:
    ctx = ctx or StageContext.standalone("render")
    node = pick_model(scene, cfg.model)
    meta = model_meta(scene.radiance[node])
    names = {"test": meta["test"], "train": meta["train"], "all": meta["train"] + meta["test"]}[cfg.views]
    if not names and cfg.views == "test":  # trained on every photo (holdout_every 0): a model, nothing to score
        ctx.record("skipped", NO_TEST_VIEWS)
        return scene
    if not names:
        raise StageError(f"render: model {node!r} has no {cfg.views} views",
                         "use views: train, or hold out test views when training (holdout_every)")
    source = radiance_scene(scene, ctx, names, meta.get("downscale", 1.0), meta.get("max_side", 0))  # as trained
    views = load_views(source, names, background_colour(meta))
    renderer = open_model(scene.radiance[node], cfg.device, cfg.rasterizer)
    out = ctx.published / "renders" / node
    entries, seconds = {}, []
    for view in views:
        tic = time.perf_counter()
        rgb, _, depth = renderer.render(view)
        seconds.append(time.perf_counter() - tic)
        stem = out / Path(view.name).with_suffix("")
        entry = {"render": str(image_io.write_rgb(stem.with_suffix(".png"), _to_uint8(rgb))),
                 "target": source.image(view.name).path}
        if cfg.depth:
            entry["depth"] = str(_write_depth(stem, depth[..., 0].numpy()))
        entries[view.name] = entry
    timed = seconds[1:] or seconds
    fps = len(timed) / sum(timed)
    if cfg.orbit_frames:
        ctx.record("orbit", _write_orbit(renderer, views, cfg, out))
    ctx.count("views", len(entries))
    ctx.count("fps", round(fps, 2))
    ctx.count("ms_per_view", round(1000 / fps, 2))
    metrics = {"kind": "renders", "model": node, "model_kind": scene.radiance[node].kind,
               "background": meta["background"], "background_rgb": background_colour(meta), "views": entries,
               "fps": fps, "width": views[0].width, "height": views[0].height,
               "protocol": meta.get("protocol"), "seed": meta.get("seed")}
    return scene.replace(metrics={**scene.metrics, ctx.node_id: metrics})


def _to_uint8(rgb) -> np.ndarray:
    return (rgb.numpy().clip(0, 1) * 255 + 0.5).astype(np.uint8)


def _write_depth(stem: Path, depth: np.ndarray) -> Path:
    """`<stem>_depth.npy` (camera z, 0 = nothing) and a colour map `<stem>_depth.png` (near = bright)."""
    path = stem.with_name(stem.name + "_depth.npy")
    np.save(path, depth.astype(np.float32))
    valid = depth > 0
    lo, hi = (np.percentile(depth[valid], [1, 99]) if valid.any() else (0.0, 1.0))
    norm = np.where(valid, 1 - (depth - lo) / max(hi - lo, 1e-9), 0).clip(0, 1)
    colour = cv2.applyColorMap((norm * 255).astype(np.uint8), cv2.COLORMAP_TURBO)[..., ::-1]
    image_io.write_rgb(stem.with_name(stem.name + "_depth.png"), np.where(valid[..., None], colour, 0).astype(np.uint8))
    return path


def _write_orbit(renderer, views, cfg: RenderConfig, out: Path) -> str:
    frames = [_to_uint8(renderer.render(v)[0]) for v in orbit_views(views, cfg.orbit_frames)]
    if cfg.video == "png":
        for i, frame in enumerate(frames):
            image_io.write_rgb(out / "orbit" / f"{i:04d}.png", frame)
        return str(out / "orbit")
    path = out / "orbit.mp4"
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), cfg.fps, (w, h))
    for frame in frames:
        writer.write(np.ascontiguousarray(frame[..., ::-1]))
    writer.release()
    return str(path)


STAGE = Stage(
    name="render",
    version=7,  # 3: renders at the model's training resolution (downscale, max_side); 4: orbit cameras upright;
    # 5: the model's background colour (a learned one) in the renders and their entry; 6: each view at its EXIF
    # exposure when the model learned one; 7: the orbit sweeps the photos' arc where they leave a side unseen
    config=RenderConfig,
    run=run,
    reads=("images", "cameras", "poses", "radiance"),
    writes=("metrics",),
    summary="render test views, depth maps and an orbit video from a trained radiance model",
)
