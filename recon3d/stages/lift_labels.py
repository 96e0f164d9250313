"""lift_labels: the scene's 2D labels onto its 3D points and Gaussians.

Every sparse point gets a class from the votes of the labeled images in its track, every Gaussian of the
trained model (when the scene has one) from the blending-weighted votes of the labeled training views
(`recon3d.labels.lift`): a class id of `Scene.class_names`, -1 for background, -2 when the votes are too
few or too split. Predicted labels vote with their scores; `mask_classes` (objects that move) do not vote
and are not scored.

Writes `Points.classes` (the export stage then puts a `class` property into OUT/points.ply) and, in OUT:
`labels/points_labeled.ply` (points with `class`), `labels/points_<class>.ply` per class,
`labels/gaussians_labeled.ply` (the 3DGS layout plus `class`) and `labels/masks/<view>.png`, the class masks
rendered from the labeled Gaussians for the model's held-out views, which are scored against those views'
2D labels (mIoU, background included) into the scene's metrics (`kind: label_lifting`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import cv2
import numpy as np
from pydantic import Field

from recon3d.errors import StageError
from recon3d.io import ply
from recon3d.io.splat_ply import write_splats
from recon3d.labels import lift, metrics
from recon3d.labels.masks import undistort_labels
from recon3d.radiance.renderers import model_meta
from recon3d.scene import Scene
from recon3d.stages.base import Stage, StageConfig, StageContext

PALETTE = np.array([[0, 0, 0], [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48],
                    [145, 30, 180], [70, 240, 240], [240, 50, 230], [210, 245, 60]], np.uint8)


IGNORE = -1  # truth pixels of silent (mask_classes) classes in the held-out scoring


class LiftLabelsConfig(StageConfig):
    model: str = Field("", description="node id of the Gaussian model to label ('' = the last Gaussian model "
                       "in the scene, none = points only)")
    min_votes: float = Field(2.0, ge=0, description="a point needs at least this much vote weight (a labeled "
                             "observation weighs its score, 1 for truth labels) to get a class")
    min_agreement: float = Field(0.5, gt=0, le=1, description="the winning class must hold at least this share "
                                 "of the votes")
    min_gaussian_votes: float = Field(1e-3, ge=0, description="the same for a Gaussian, whose votes are its "
                                      "blending weights summed over pixels")
    min_alpha: float = Field(0.5, gt=0, lt=1, description="rendered class masks: background where the "
                             "Gaussians' opacity is below this")
    clouds: bool = Field(True, description="write a point cloud per class")
    mask_classes: tuple[str, ...] = Field((), description="label classes that do not vote (objects that move, "
                                          "as in features.mask_classes: what they cover in a view is not where "
                                          "they are in 3D)")


def run(scene: Scene, cfg: LiftLabelsConfig, ctx: StageContext | None = None) -> Scene:
    ctx = ctx or StageContext.standalone("lift_labels")
    if not scene.labels:
        raise StageError("lift_labels: the scene has no labels",
                         "ingest a labeled data folder (COCO, YOLO, labelme or VOC labels) or run detect/segment first")
    n_classes = len(scene.class_names)
    unknown = [c for c in cfg.mask_classes if c not in scene.class_names]
    if unknown:
        raise StageError(f"lift_labels: mask_classes {', '.join(unknown)} not among the scene's classes "
                         f"({', '.join(scene.class_names)})", "name classes of the scene's labels")
    silent = [scene.class_names.index(c) for c in cfg.mask_classes]
    out = ctx.published / "labels"
    entry: dict = {"kind": "label_lifting", "labeled_images": len(scene.labels)}
    points = scene.points
    if points is not None and len(points):
        votes = lift.vote_points(points, scene.images, scene.features, scene.labels, n_classes, silent)
        classes = lift.decide(votes, cfg.min_votes, cfg.min_agreement)
        points = dataclasses.replace(points, classes=classes)
        entry["points"] = _class_counts(classes, scene.class_names)
        _write_clouds(out, points, classes, scene.class_names, cfg.clouds)
    else:
        ctx.drop("points", "the scene has no sparse points")
    gaussian_node = _gaussian_node(scene, cfg.model)
    if gaussian_node:
        entry["gaussians"] = _lift_gaussians(scene, gaussian_node, cfg, ctx, out, n_classes, silent)
    for key in ("points", "gaussians"):
        if key in entry:
            ctx.count(f"{key}_labeled", entry[key]["labeled"])
    ctx.record("lifting", entry)
    return scene.replace(points=points, metrics={**scene.metrics, ctx.node_id: entry})


def _class_counts(classes: np.ndarray, names: tuple[str, ...]) -> dict:
    counts = {name: int((classes == c).sum()) for c, name in enumerate(names)}
    return {"per_class": counts, "background": int((classes == lift.BACKGROUND).sum()),
            "undecided": int((classes == lift.UNDECIDED).sum()), "labeled": int((classes >= 0).sum()),
            "total": len(classes)}


def _write_clouds(out: Path, points, classes: np.ndarray, names: tuple[str, ...], per_class: bool) -> None:
    ply.write_points(out / "points_labeled.ply", points.xyz, points.rgb, {"class": classes})
    if per_class:
        for c, name in [(lift.BACKGROUND, "background"), *enumerate(names)]:
            sel = classes == c
            if sel.any():
                ply.write_points(out / f"points_{_safe(name)}.ply", points.xyz[sel], points.rgb[sel])


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name)


def _gaussian_node(scene: Scene, node: str) -> str:
    gaussians = [k for k, m in scene.radiance.items() if m.kind == "gaussians"]
    if node and node not in gaussians:
        raise StageError(f"lift_labels: no Gaussian model from node {node!r}; the scene has "
                         f"{', '.join(gaussians) or 'none'}", "set model to one of those node ids, or leave it empty")
    return node or (gaussians[-1] if gaussians else "")


def _lift_gaussians(scene: Scene, node: str, cfg: LiftLabelsConfig, ctx: StageContext, out: Path,
                    n_classes: int, silent: list[int]) -> dict:
    from recon3d.radiance.gaussians.model import GaussianModel

    meta = model_meta(scene.radiance[node])
    model = GaussianModel.load(scene.radiance[node].path)

    def view(name: str):  # the Gaussians trained on undistorted twins of photos with lens distortion: K is the
        im = scene.image(name)  # twin's (the same focal lengths and principal point)
        return scene.poses[name], scene.cameras[im.camera_id].K, im.width, im.height

    def labels_of(name: str):  # the image's labels in that twin's pixels
        im = scene.image(name)
        return undistort_labels(scene.labels[name], scene.cameras[im.camera_id], im.height, im.width)

    voters = [(*view(n)[:2], labels_of(n), *view(n)[2:]) for n in meta["train"] if n in scene.labels]
    if not voters:
        raise StageError(f"lift_labels: none of the {len(meta['train'])} training views of {node!r} is labeled",
                         "label some training views, or run detect/segment to predict labels for them")
    votes = lift.vote_gaussians(model, voters, n_classes, silent)
    classes = lift.decide(votes, cfg.min_gaussian_votes, cfg.min_agreement)
    raw = {k: v.detach().numpy() for k, v in model.params.items()}
    write_splats(out / "gaussians_labeled.ply", raw, {"class": classes})
    np.save(ctx.workdir / "gaussian_classes.npy", classes)
    result = {**_class_counts(classes, scene.class_names), "model": node, "voting_views": len(voters),
              "classes_file": str(ctx.workdir / "gaussian_classes.npy")}
    scored = [n for n in meta["test"] if n in scene.labels]
    if not scored:
        ctx.drop("gaussian masks", f"none of the held-out views of {node!r} is labeled: nothing to score")
        return result
    truth_maps, pred_maps = [], []
    for name in scored:
        pose, K, width, height = view(name)
        rendered = lift.render_class_map(model, classes, pose, K, width, height, n_classes, cfg.min_alpha)
        labels = labels_of(name)
        truth = metrics.semantic_map(labels, height, width, "masks" if labels.masks is not None else "boxes")
        truth[np.isin(truth, np.asarray(silent, np.int64) + 1)] = IGNORE  # moving objects are not scored
        truth_maps.append(truth)
        pred_maps.append(rendered)
        png = out / "masks" / Path(name).with_suffix(".png")  # the image's name, subfolders kept
        png.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(png), cv2.cvtColor(PALETTE[rendered % len(PALETTE)], cv2.COLOR_RGB2BGR))
    score = metrics.miou(truth_maps, pred_maps, n_classes, ignore=IGNORE, class_names=scene.class_names)
    result["heldout"] = {"views": scored, **{k: score[k] for k in ("mIoU", "mIoU_objects", "pixel_accuracy",
                                                                   "per_class")}}
    ctx.count("heldout_mIoU", score["mIoU"])
    return result


STAGE = Stage(
    name="lift_labels",
    version=1,
    config=LiftLabelsConfig,
    run=run,
    reads=("images", "cameras", "poses", "features", "points", "labels", "class_names", "radiance"),
    writes=("points", "metrics"),
    summary="lift 2D labels onto sparse points and Gaussians by votes; labeled PLYs, rendered class masks, mIoU",
)
