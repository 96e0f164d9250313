"""What the radiance-field training stages (`gaussians`, `nerf`) share: the config fields about the data,
choosing and checking the views, and the files and report of a trained model."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field

from recon3d.errors import StageError
from recon3d.io.files import write_json
from recon3d.radiance.appearance import exposure_off
from recon3d.radiance.protocol import EXPOSURE_RULE, NO_EXPOSURE_RULE, training_protocol
from recon3d.radiance.views import (
    BACKGROUNDS,
    View,
    describe_resolution,
    describe_split,
    load_views,
    mean_colour,
    radiance_scene,
    split_views,
)
from recon3d.scene import Scene
from recon3d.stages.base import StageConfig, StageContext

DEFAULT_MAX_SIDE = 512  # px; see README, "Your own photos": steps per minute on 2 cores against resolution
MIN_TRAIN_VIEWS = 2


class RadianceDataConfig(StageConfig):
    background: Literal["auto", "white", "black", "learned"] = Field(
        "auto", description="colour behind the model, and what RGBA images are composited on: auto = white for "
        "images with alpha (the NeRF-synthetic convention), learned for opaque photos (one colour fitted with the "
        "model from the photos' mean: what the model leaves uncovered, a sky or a plain backdrop; the NeRF's env "
        "map, on by default for photos, is its learned background, a colour per direction; README)")
    holdout_every: int = Field(8, ge=0, description="without a split in the data, hold out every n-th image for "
                               "testing (0 = train on all)")
    threads: int = Field(0, ge=0, description="torch CPU threads while this node trains (0 = torch's default)")
    require_test_views: bool = Field(False, description="refuse to train when the data leaves no test views "
                                     "(comparisons set it: a result without test views scores nothing)")
    downscale: float = Field(1.0, ge=1, description="divide every image's width and height by at least this "
                             "factor (training and test views alike; K scaled with them)")
    max_side: int = Field(DEFAULT_MAX_SIDE, ge=0, description="shrink the images (after downscale) until their "
                          "longest side is at most this many px (0 = no limit); the default keeps a step on 2 CPU "
                          "cores near 0.2 s")


@dataclass
class RadianceData:
    train_names: list[str]
    test_names: list[str]
    views: list[View]
    tests: list[View]
    background: torch.Tensor  # (3,)
    background_name: str  # cfg.background, or what auto chose: white, black or learned (from `background`)
    protocol: dict[str, Any]  # the training half of radiance.protocol.Protocol


def prepare(scene: Scene, cfg: RadianceDataConfig, ctx: StageContext, stage: str) -> RadianceData:
    """Split the posed images, report the unposed ones, undistort if needed and load every view the stage will
    use now, so a bad test image fails before hours of training."""
    train_names, test_names = split_views(scene, cfg.holdout_every)
    split = describe_split(scene, cfg.holdout_every)
    if cfg.require_test_views and not test_names:
        raise StageError(f"{stage}: the data has no test views ({split}), so the model could not be scored",
                         "hold images out: `recon3d compare --holdout-every 8` or --set <node>.holdout_every=8 "
                         "(a data split needs transforms_test.json or nerfstudio `split: test` entries)")
    for im in scene.images:
        if im.name not in scene.poses:
            ctx.drop(im.name, "not posed: no view to train or test on")
    if not train_names:
        raise StageError(f"{stage}: the scene has no posed training images",
                         "ingest posed data (transforms.json, COLMAP), or train from photos with `recon3d splat "
                         "--data PHOTOS` (or nerf, compare), which runs structure from motion first")
    if len(train_names) < MIN_TRAIN_VIEWS:  # a field fitted to one photo paints it on whatever depth: no model
        raise StageError(f"{stage}: {len(train_names)} training view ({len(train_names) + len(test_names)} posed "
                         f"image(s); {split}): a radiance field needs the scene from several places",
                         ("take more keyframes from the video, fewer frames to each: --set ingest.video_every=N "
                          "(lower; 1 takes every frame)" if scene.source is not None and scene.source.format == "video"
                          else "photograph it from more places: a dozen or more photos that overlap, each a step to "
                          "the side of the last")
                         + f" (or train on every posed image, unscored: --set {ctx.node_id}.holdout_every=0)")
    source = radiance_scene(scene, ctx, train_names + test_names, cfg.downscale, cfg.max_side)
    on = BACKGROUNDS["black" if cfg.background == "black" else "white"]  # auto and learned: RGBA on white
    views, tests = load_views(source, train_names, on), load_views(source, test_names, on)
    name = cfg.background
    if name == "auto":  # alpha: the images were composited on white; opaque photos on nothing
        name = "white" if any(v.alpha is not None for v in views + tests) else "learned"
    colour = torch.tensor(BACKGROUNDS[name]) if name in BACKGROUNDS else mean_colour(views)  # learned: starts there
    where = scene.source.path if scene.source is not None else ""
    protocol = training_protocol(cfg, train_names, test_names, split, where, name,
                                 describe_resolution(scene, source, cfg.downscale, cfg.max_side))
    return RadianceData(train_names, test_names, views, tests, colour, name, protocol)


@contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """torch on `count` CPU threads (0: as it is) inside the block and as before after it, so a node's `threads`
    does not carry over to the nodes a run executes after it in the same process (a render would otherwise run
    on one thread after a fresh training node and on torch's default when that node came from the cache)."""
    before = torch.get_num_threads()
    if count:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def progress(ctx: StageContext, steps: int, what: str):
    """An on_step callback for the trainers: PSNR and `what` on the progress bar about 100 times a run."""
    every = max(steps // 100, 1)

    def on_step(step: int, total: int, running_psnr: float, count: int) -> None:
        if step % every == 0 or step == total:
            ctx.progress(step, total, f"PSNR {running_psnr:.2f} dB, {count} {what}")

    return on_step


def finish(ctx: StageContext, cfg: Any, data: RadianceData, result: Any, model_path: Path, checkpoint: str,
           kind: str, meta: dict[str, Any], peak_rss_mb: float) -> None:
    """Write `model.json` beside the model and into OUT/<node>/ (its kind, background and its colour, seed, the
    method's own `meta`, the views and the protocol), drop the checkpoint (nothing left to resume) and report."""
    (ctx.resumable / checkpoint).unlink(missing_ok=True)
    data.protocol["exposure"] = NO_EXPOSURE_RULE if result.exposure is None else EXPOSURE_RULE
    colour = data.background if result.background is None else result.background  # learned: as trained
    description = {
        "kind": kind, "background": data.background_name, "background_rgb": [round(float(c), 6) for c in colour],
        "seed": cfg.seed, "downscale": cfg.downscale, "max_side": cfg.max_side, **meta, "train": data.train_names,
        "test": data.test_names, "protocol": data.protocol,
        **({} if result.exposure is None else {"exposure": result.exposure.meta()})}
    write_json(model_path.with_name("model.json"), description)
    write_json(ctx.published / ctx.node_id / "model.json", description)  # beside the .ply; the weights stay here
    ctx.count("train_views", len(data.views))
    ctx.count("test_views", len(data.tests))
    ctx.count("steps", result.steps)
    ctx.count("train_seconds", round(result.train_seconds, 2))
    ctx.record("stopped_by", result.stopped_by)
    if result.resumed_from is not None:  # an interrupted run's checkpoint: its node row says so
        ctx.count("resumed_from_step", result.resumed_from)
    ctx.record("curve", result.curve)
    ctx.record("events", result.events)
    ctx.record("peak_rss_mb", round(peak_rss_mb, 1))
    ctx.record("protocol", data.protocol)
    ctx.record("model_bytes", model_path.stat().st_size)
    if result.exposure is not None:  # the brightness of a photo one stop above the reference: 2^gain
        ctx.record("exposure", result.exposure.meta())
    else:  # said in the node's row: a folder of photos where exposure_off turned it off
        ctx.count("exposure", exposure_off(cfg, [v.exposure for v in data.views]))
    if result.appearance is not None:  # each photo's colour transform: the diagonal is its gain per channel
        with torch.no_grad():
            ctx.record("appearance_gain", {v.name: [round(float(g), 4) for g in
                                                    result.appearance.transform(i)[0].diagonal()]
                                           for i, v in enumerate(data.views)})
