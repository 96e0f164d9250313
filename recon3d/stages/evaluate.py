"""evaluate: compare a reconstruction with ground truth: its geometry (`kind: poses`) or its renders
(`kind: images`).

Images: every view a `render` node wrote is scored against its target image (composited on the model's
background, as in training) by PSNR and SSIM (`recon3d.radiance.metrics`); the means, the per-view values,
the training figures of the model's node and the protocol go to the scene's metrics and to
`OUT/metrics.json`.

Poses:
Without ground truth (a folder of photos) the check is skipped and says so (`skipped` in its report and
metrics); a `truth` path that is given must exist. Poses are compared after a Sim(3) alignment of the camera
centres (Umeyama), as SfM output is defined up to a similarity; the truth's 3D points are mapped into the
scene's frame by the inverse alignment and reprojected with the scene's cameras against the truth's
observations. The protocol goes into the metrics.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from recon3d.errors import DataError, StageError
from recon3d.geometry.align import Sim3, camera_extent, pose_errors
from recon3d.geometry.projection import world_to_pixels
from recon3d.io.files import write_json
from recon3d.io.images import read_rgb
from recon3d.radiance.protocol import LPIPS_IMPLEMENTATION, METRICS, NO_TEST_VIEWS, Protocol
from recon3d.scene import Scene
from recon3d.stages.base import Stage, StageConfig, StageContext


class EvaluateConfig(StageConfig):
    kind: Literal["poses", "images"] = Field("poses", description="poses = geometry against a ground-truth "
                                             "scene; images = renders against their views (PSNR, SSIM)")
    renders: str = Field("", description="images: node id of the render node ('' = the last one)")
    lpips_backbone: str = Field("", description="images: torchvision AlexNet weights (.pth) for LPIPS; with "
                                "lpips_heads; '' = no LPIPS (nothing is downloaded)")
    lpips_heads: str = Field("", description="images: the lpips package's v0.1/alex.pth linear heads")
    output: str = Field("metrics.json", description="images: where in OUT the metrics go (pipelines with "
                        "several evaluations give each its own)")
    truth: str = Field("", description="saved ground-truth Scene; '' = <data folder>/ground_truth")
    max_position_rmse: float = Field(0.01, ge=0, description="band: aligned camera-centre RMSE, "
                                     "as a fraction of the truth's camera extent")
    max_rotation_deg: float = Field(0.1, ge=0, description="band: largest rotation error after alignment, degrees")
    max_reprojection_px: float = Field(0.5, ge=0, description="band: mean reprojection error of truth points, px")
    require_pass: bool = Field(False, description="fail the stage when a figure is outside its band")


NO_TRUTH = "no ground_truth/ in the data"


def load_truth(scene: Scene, cfg: EvaluateConfig) -> Scene | None:
    """The ground-truth scene: `cfg.truth` (which must exist), else `<data folder>/ground_truth`, else None
    (a photo folder has no truth; the check is then skipped, not failed)."""
    if cfg.truth:
        path = Path(cfg.truth)
        if not path.is_dir():
            raise DataError(f"evaluate: ground truth {path} (truth) does not exist",
                            "set truth to a folder written by Scene.save (`recon3d synth` writes ground_truth/), "
                            "or leave it empty to use <data>/ground_truth when there is one")
        return Scene.load(path)
    if scene.source is None or not (Path(scene.source.path) / "ground_truth").is_dir():
        return None
    return Scene.load(Path(scene.source.path) / "ground_truth")


def reprojection_errors(scene: Scene, truth: Scene, world_from_truth: Sim3) -> np.ndarray:
    """Pixel distance between the truth's keypoints and its points reprojected with the scene's cameras.

    Returns (M,) float64 over every track element whose image the scene has posed.
    """
    if truth.points is None:
        return np.zeros(0)
    index = {im.name: im for im in scene.images}
    xyz = world_from_truth.apply(truth.points.xyz)
    track_point = np.repeat(np.arange(len(truth.points)), np.diff(truth.points.track_offsets))
    errors = []
    for i, image in enumerate(truth.images):
        if image.name not in scene.poses or image.name not in truth.features:
            continue
        mine = index[image.name]
        sel = truth.points.track_image == i
        point_ids = track_point[sel]
        kp_ids = truth.points.track_keypoint[sel]
        cam = scene.cameras[mine.camera_id]
        pix, _ = world_to_pixels(cam.model, cam.params, scene.poses[image.name], xyz[point_ids])
        observed = truth.features[image.name].keypoints[kp_ids].astype(np.float64)
        errors.append(np.linalg.norm(pix - observed, axis=1))
    return np.concatenate(errors) if errors else np.zeros(0)


def run(scene: Scene, cfg: EvaluateConfig, ctx: StageContext | None = None) -> Scene:
    ctx = ctx or StageContext.standalone("evaluate")
    if cfg.kind == "images":
        return _evaluate_images(scene, cfg, ctx)
    truth = load_truth(scene, cfg)
    if truth is None:
        ctx.record("skipped", NO_TRUTH)
        return scene.replace(metrics={**scene.metrics, ctx.node_id: {"skipped": NO_TRUTH}})
    common = [im.name for im in truth.images if im.name in scene.poses and im.name in truth.poses]
    ctx.count("images_compared", len(common))
    missing = [im.name for im in truth.images if im.name not in scene.poses]
    for name in missing:
        ctx.drop(name, "not posed in the scene")
    if len(common) < 3:
        raise StageError(f"evaluate: only {len(common)} images are posed in both the scene and the truth",
                         "pose estimation needs at least 3 common images for a Sim(3) alignment")
    est = np.stack([scene.poses[n] for n in common])
    gt = np.stack([truth.poses[n] for n in common])
    errs = pose_errors(est, gt)
    extent = camera_extent(gt)
    summary = errs.summary()
    # truth frame -> scene frame: invert the alignment that maps scene centres onto truth centres
    reproj = reprojection_errors(scene, truth, errs.alignment.inverse())
    metrics = {
        "protocol": "Sim(3) (Umeyama) alignment of camera centres; ATE = aligned centre error, also relative "
                    "to the truth's camera extent; relative rotation error over all pairs (alignment-free); "
                    "truth points reprojected with the scene's cameras",
        "images_compared": len(common),
        "images_missing": len(missing),
        "camera_extent": extent,
        "ate_rmse": summary["ate_rmse"],
        "ate_max": summary["ate_max"],
        "position_rmse_rel": summary["ate_rmse"] / extent,
        "rotation_error_max_deg": summary["rotation_error_max_deg"],
        "rotation_error_mean_deg": summary["rotation_error_mean_deg"],
        "relative_rotation_error_median_deg": summary["relative_rotation_error_median_deg"],
        "relative_rotation_error_max_deg": summary["relative_rotation_error_max_deg"],
        "sim3_scale": summary["sim3_scale"],
        "reprojection_mean_px": float(reproj.mean()) if reproj.size else None,
        "reprojection_max_px": float(reproj.max()) if reproj.size else None,
        "observations_compared": int(reproj.size),
    }
    failures = []  # `not value <= band`: a NaN (a truth point behind a scene camera) fails too
    if not metrics["position_rmse_rel"] <= cfg.max_position_rmse:
        failures.append(f"position RMSE {metrics['position_rmse_rel']:.3g} > {cfg.max_position_rmse}")
    if not metrics["rotation_error_max_deg"] <= cfg.max_rotation_deg:
        failures.append(f"rotation error {metrics['rotation_error_max_deg']:.3g} deg > {cfg.max_rotation_deg}")
    if reproj.size and not metrics["reprojection_mean_px"] <= cfg.max_reprojection_px:
        failures.append(f"reprojection {metrics['reprojection_mean_px']:.3g} px > {cfg.max_reprojection_px}")
    metrics["passed"] = not failures
    metrics["failures"] = failures
    for key in ("ate_rmse", "position_rmse_rel", "rotation_error_max_deg", "reprojection_mean_px", "passed"):
        ctx.count(key, metrics[key])
    if failures:  # on the terminal's row and in reports/<node>.json, not only in the report
        ctx.count("failures", "; ".join(failures))
    ctx.record("metrics", metrics)
    if failures and cfg.require_pass:
        raise StageError("geometry check against the truth failed: " + "; ".join(failures),
                         "inspect the report; loosen the bands only if the data justifies it")
    return scene.replace(metrics={**scene.metrics, ctx.node_id: metrics})


def _test_views(scene: Scene) -> list[str]:
    """The test views of the scene's last trained model (what its render node renders by default)."""
    from recon3d.radiance.renderers import model_meta  # torch: only where images are evaluated

    return model_meta(list(scene.radiance.values())[-1])["test"]


def _evaluate_images(scene: Scene, cfg: EvaluateConfig, ctx: StageContext) -> Scene:
    import torch

    from recon3d.radiance.metrics import color_corrected, psnr, ssim
    from recon3d.radiance.views import background_colour, read_on_background

    renders = scene.metrics_of_kind("renders")
    if not renders and not cfg.renders and scene.radiance and not _test_views(scene):  # trained on every photo
        ctx.record("skipped", NO_TEST_VIEWS)
        return scene.replace(metrics={**scene.metrics, ctx.node_id: {"skipped": NO_TEST_VIEWS}})
    if not renders or (cfg.renders and cfg.renders not in renders):
        raise StageError(f"evaluate: no renders {'from node ' + repr(cfg.renders) if cfg.renders else ''} "
                         "in the scene", "put a render node before this one (kind: images)")
    node = cfg.renders or list(renders)[-1]
    entry = renders[node]
    if bool(cfg.lpips_backbone) != bool(cfg.lpips_heads):
        raise StageError("evaluate: LPIPS needs both lpips_backbone and lpips_heads", "give both files, or neither")
    if cfg.lpips_backbone:
        from recon3d.radiance.lpips import load_lpips  # torch: imported only when LPIPS is asked for

        lpips = load_lpips(cfg.lpips_backbone, cfg.lpips_heads)
    else:
        lpips = None
    bg = torch.tensor(background_colour(entry))
    per_view, sizes = {}, set()
    for name, files in entry["views"].items():
        pred = torch.from_numpy(read_rgb(files["render"])).float() / 255
        sizes.add((pred.shape[1], pred.shape[0]))
        target, _ = read_on_background(files["target"], bg)
        if pred.shape != target.shape:
            raise DataError(f"evaluate: render of {name} is {tuple(pred.shape)} but its image is "
                            f"{tuple(target.shape)}", "re-run render; each view renders at its camera's size")
        corrected = color_corrected(pred, target)
        per_view[name] = {"psnr": psnr(pred, target), "ssim": float(ssim(pred, target)),
                          "psnr_cc": psnr(corrected, target), "ssim_cc": float(ssim(corrected, target))}
        if lpips is not None:
            per_view[name]["lpips"] = float(lpips(pred, target)[0])
    model_report = scene.reports.get(entry["model"], {})
    if not entry.get("protocol"):
        raise StageError(f"evaluate: model {entry['model']!r} carries no training protocol (an older recon3d "
                         "trained it)", "re-run its training node (delete its cache folder)")
    resolution = ", ".join(f"{w}x{h}" for w, h in sorted(sizes))  # every size the held-out views have (mixed photos)
    protocol = Protocol(**entry["protocol"], resolution=resolution, metrics={**METRICS, **(
                            {"lpips": f"{LPIPS_IMPLEMENTATION}, weights sha256 {lpips.digest}"} if lpips else {})})
    metrics = {
        "kind": "images",
        "protocol": protocol.model_dump(),
        "seed": entry.get("seed"),
        "model": entry["model"], "model_kind": entry["model_kind"],
        "psnr": float(np.mean([v["psnr"] for v in per_view.values()])),
        "ssim": float(np.mean([v["ssim"] for v in per_view.values()])),
        "psnr_cc": float(np.mean([v["psnr_cc"] for v in per_view.values()])),
        "ssim_cc": float(np.mean([v["ssim_cc"] for v in per_view.values()])),
        "lpips": float(np.mean([v["lpips"] for v in per_view.values()])) if lpips is not None else None,
        "fps": entry["fps"],
        # the training's figures; not whether it resumed: a resumed run scores what an uninterrupted one does
        "train": {**{k: v for k, v in model_report.get("counts", {}).items() if k != "resumed_from_step"},
                  **{k: model_report[k] for k in
                     ("stopped_by", "peak_rss_mb", "model_bytes", "curve") if k in model_report}},
        "views": per_view,
    }
    write_json(ctx.published / cfg.output, metrics)
    ctx.count("psnr", round(metrics["psnr"], 3))
    ctx.count("ssim", round(metrics["ssim"], 4))
    ctx.count("psnr_cc", round(metrics["psnr_cc"], 3))
    ctx.count("views", len(per_view))
    return scene.replace(metrics={**scene.metrics, ctx.node_id: metrics})


STAGE = Stage(
    name="evaluate",
    version=7,  # 7: a NaN reprojection fails the check, its failures and metrics in the report JSON; 6: the
    # protocol names every size of the held-out views; 5: 16-bit grey photos read as 8-bit;
    # 4: the protocol's appearance rule names both trainers;
    # 3: skipped, not failed, without ground truth; colour-corrected PSNR / SSIM beside the plain
    config=EvaluateConfig,
    run=run,
    reads=("source", "images", "cameras", "poses", "metrics", "reports"),
    writes=("metrics",),
    summary="pose error after Sim(3) and reprojection of ground-truth points; PSNR / SSIM of renders",
)
