"""What the labelling stages (`detect`, `segment`) share: their config, the train / held-out split of the
labeled images, the ultralytics backend (train or load weights, predict), scoring on held-out images and
the scene they return.

Truth is an image's `Labels` without scores; labels with scores are predictions (of an earlier node) and are
never trained on or scored against. The held-out images are the labeled ones marked `val` or `test` when the
data has a split (those marked `train` or unsplit train), else every `holdout_every`-th labeled image in
scene order (0, n, 2n, ...; the rule of `recon3d.radiance.views.split_views`). ultralytics validates on the
training images, so choosing its best epoch never sees the held-out ones; `recon3d.labels.metrics.coco_map`
scores those afterwards. Output: images with truth keep it; predicted images (those without truth with
`predict: unlabeled`) get the predictions, with scores.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import Field

from recon3d.errors import ConfigError, StageError
from recon3d.io.labels import write_yolo, write_yolo_dataset
from recon3d.labels import metrics, shapes, yolo
from recon3d.scene import Labels, Scene
from recon3d.stages.base import Device, StageConfig, StageContext, hash_files

SCORE_CONF = 0.001  # confidence down to which held-out predictions are scored (COCO / ultralytics val)


class Augmentation(StageConfig):
    """ultralytics' training augmentation (its own names); its transforms move boxes and masks with the pixels."""

    mosaic: float = Field(1.0, ge=0, le=1, description="probability of a 2x2 mosaic of four training images")
    close_mosaic: int = Field(10, ge=0, description="no mosaic in the last n epochs")
    fliplr: float = Field(0.5, ge=0, le=1, description="probability of a left-right flip")
    hsv_h: float = Field(0.015, ge=0, le=1, description="hue jitter, fraction of the hue circle")
    hsv_s: float = Field(0.7, ge=0, le=1, description="saturation jitter, fraction")
    hsv_v: float = Field(0.4, ge=0, le=1, description="value (brightness) jitter, fraction")
    scale: float = Field(0.5, ge=0, description="random scale gain: a factor in [1 - scale, 1 + scale]")
    translate: float = Field(0.1, ge=0, le=1, description="random shift, fraction of the image size")
    degrees: float = Field(0.0, ge=0, le=180, description="random rotation, +- degrees")


class LabelsConfig(StageConfig):
    model: str = Field("yolov8n.yaml", description="ultralytics model yaml to train from (fresh weights; ships "
                       "with ultralytics: yolov8n.yaml, yolo11s.yaml, ...-seg.yaml for masks)")
    weights: str | None = Field(None, description="a local ultralytics .pt to predict with (no training); e.g. "
                                "the best.pt an earlier detect/segment node wrote (its report's `weights`)")
    epochs: int = Field(50, ge=1, description="training epochs (with budget_min: at most)")
    budget_min: float = Field(0.0, ge=0, description="stop training after this many minutes (ultralytics' "
                              "`time`: epochs and LR schedule fitted to it after the first epoch); 0 = epochs")
    validate_epochs: bool = Field(False, description="ultralytics' validation after every epoch, on the "
                                  "training images (the held-out ones are never seen): it picks best.pt by "
                                  "training fitness, at about a third of the training time; off = last epoch")
    imgsz: int = Field(640, ge=32, description="training and prediction size in px (longest side, multiple of 32)")
    batch: int = Field(16, ge=1, description="images per training batch")
    seed: int = Field(0, description="seed of training (augmentation, initial weights, data order)")
    device: Device = Field("cpu", description="torch device for training and prediction ('cpu', 'cuda:0')")
    conf: float = Field(0.25, ge=0, le=1, description="keep predictions scoring at least this")
    iou: float = Field(0.7, gt=0, le=1, description="non-maximum suppression IoU threshold")
    predict: Literal["unlabeled", "all", "none"] = Field(
        "unlabeled", description="images to predict besides the held-out ones: those without truth, all (the "
        "predictions on images with truth go only to OUT/<node>/predictions), or none")
    holdout_every: int = Field(8, ge=0, description="without a split in the data, hold out every n-th labeled "
                               "image for scoring (0 = train on all, score nothing)")
    patience: int = Field(100, ge=1, description="stop after this many epochs without a better fitness")
    augmentation: Augmentation = Field(default_factory=Augmentation, description="training augmentation")


def weights_fingerprint(cfg: LabelsConfig) -> str:
    """Hash of the `weights` file (part of the node's cache key: new weights at the same path re-run it)."""
    if cfg.weights is None:
        return ""
    path = Path(cfg.weights).expanduser().absolute()
    return hash_files(path.parent, [path]) if path.is_file() else f"missing:{path}"


@dataclass(frozen=True)
class Split:
    train: list[str]  # labeled images trained on, scene order
    held_out: list[str]  # labeled images scored, never trained on
    unlabeled: list[str]  # images without truth


def truth_of(scene: Scene) -> dict[str, Labels]:
    """The scene's truth: its labels without scores."""
    return {name: lab for name, lab in scene.labels.items() if lab.scores is None}


def split_labeled(scene: Scene, holdout_every: int) -> Split:
    """Train / held-out / unlabeled image names (see the module doc)."""
    truth = truth_of(scene)
    labeled = [im for im in scene.images if im.name in truth]
    unlabeled = [im.name for im in scene.images if im.name not in truth]
    split = {im.name: im.label_split or im.split for im in labeled}  # the labels' own split first, then the data's
    if any(split.values()):
        return Split([n for n, s in split.items() if s in ("train", "")],
                     [n for n, s in split.items() if s in ("val", "test")], unlabeled)
    if holdout_every <= 0:
        return Split([im.name for im in labeled], [], unlabeled)
    return Split([im.name for i, im in enumerate(labeled) if i % holdout_every],
                 [im.name for i, im in enumerate(labeled) if i % holdout_every == 0], unlabeled)


def ultralytics_labels(scene: Scene, cfg: LabelsConfig, ctx: StageContext, task: str) -> Scene:
    """Train (or load `cfg.weights`), predict, score the held-out images; `task` "detect" or "segment"."""
    config_dir = ctx.workdir / "ultralytics"
    split = split_labeled(scene, cfg.holdout_every)
    class_names = scene.class_names
    if cfg.weights is not None:
        weights = Path(cfg.weights).expanduser().absolute()
        weights_task, names = yolo.model_info(weights, config_dir)
        if task == "segment" and weights_task != "segment":
            raise StageError(f"{task}: weights {weights} are a {weights_task} model, which predicts no masks",
                             "give segmentation weights (trained from a ...-seg.yaml), or use the detect stage")
        class_names = class_names or tuple(names[k] for k in sorted(names))
        yolo.class_indices(names, class_names, str(weights))
        ctx.count("trained", False)
    else:
        weights = _train(scene, cfg, ctx, task, split, config_dir)
    ctx.record("weights", str(weights))
    ctx.count("held_out_images", len(split.held_out))
    predicted_names = _to_predict(scene, cfg, split)
    images = [scene.image(name) for name in predicted_names]

    def predict(names: list[str], conf: float) -> dict[str, Labels]:
        return yolo.predict(weights, [scene.image(n) for n in names], class_names, imgsz=cfg.imgsz, conf=conf,
                            iou=cfg.iou, device=cfg.device, config_dir=config_dir) if names else {}

    # held-out images are scored as COCO and ultralytics' val do, on every box down to SCORE_CONF (a higher
    # threshold cuts the PR curve short and understates AP); the labels kept are those scoring cfg.conf
    held = predict(split.held_out, min(cfg.conf, SCORE_CONF))
    scores = score(scene, ctx, held, class_names, ("bbox",) if task == "detect" else ("bbox", "segm"))
    pred = {**{n: confident(lab, cfg.conf) for n, lab in held.items()},
            **predict([n for n in predicted_names if n not in held], cfg.conf)}
    pred = {n: pred[n] for n in predicted_names}
    publish_predictions(ctx, pred, images, class_names)
    fill = [n for n in predicted_names if n not in split.held_out and n in split.unlabeled]
    ctx.count("images_predicted", len(pred))
    ctx.count("conf", cfg.conf)
    ctx.count("instances_predicted", int(sum(len(lab) for lab in pred.values())))  # at conf, on every image
    ctx.count("images_labeled_by_prediction", len(fill))
    ctx.count("instances_labeled_by_prediction", int(sum(len(pred[n]) for n in fill)))
    labels = {**scene.labels, **{n: pred[n] for n in fill}}
    return scene.replace(labels=labels, class_names=class_names,
                         metrics={**scene.metrics, ctx.node_id: {**scores, "weights": str(weights),
                                                                  "score_conf": SCORE_CONF}})


def _train(scene: Scene, cfg: LabelsConfig, ctx: StageContext, task: str, split: Split, config_dir: Path) -> Path:
    truth = truth_of(scene)
    if not truth or not scene.class_names:
        why = "its labels name no image of it" if scene.class_names else "ingest found no labels: by itself it " \
            "reads labels.json, annotations.json, data.yaml or the one YOLO data yaml in the data folder"
        raise StageError(f"{task}: the scene has no labeled images to train on ({why})",
                         "name the labels: --set ingest.labels=PATH (a COCO .json, a YOLO data yaml or labels "
                         f"folder, a labelme or VOC folder), or --set {task}.weights=FILE to predict only")
    if (task == "segment") != ("-seg" in Path(cfg.model).name):
        raise ConfigError(f"{task}: model {cfg.model!r} is " + ("not " if task == "segment" else "") +
                          "a segmentation model", "segment trains a ...-seg.yaml model, detect any other "
                          "(yolov8n.yaml, yolo11n.yaml)")
    train = list(split.train)
    if task == "segment":
        for name in list(train):
            missing = ~shapes.has_shape(truth[name])
            if missing.any():
                ctx.drop(name, f"{int(missing.sum())} of its {len(missing)} instances have a box but no mask or "
                               "polygon: left out of segmentation training")
                train.remove(name)
    if not train:
        raise StageError(f"{task}: no training images among the {len(truth)} labeled ones "
                         f"({len(split.held_out)} held out" + (", the others without masks" if task == "segment"
                                                                else "") + ")",
                         "label more images, lower holdout_every (0 trains on all), mark images `train`, "
                         "or for masks run segment with backend grabcut first")
    train_labels = {n: truth[n] for n in train}
    if task == "segment":
        train_labels = {n: shapes.with_polygons(lab) for n, lab in train_labels.items()}
    else:  # the truth's boxes are what detect learns (from a polygon ultralytics would take its extent)
        train_labels = {n: Labels(lab.boxes, lab.classes) for n, lab in train_labels.items()}
    data_yaml = write_yolo_dataset(ctx.workdir / "dataset", scene.class_names, train_labels,
                                   [scene.image(n) for n in train], {n: "train" for n in train})
    result = yolo.train(cfg.model, data_yaml, ctx.workdir / "train", epochs=cfg.epochs, imgsz=cfg.imgsz,
                        batch=cfg.batch, seed=cfg.seed, device=cfg.device, patience=cfg.patience,
                        budget_min=cfg.budget_min, val=cfg.validate_epochs,
                        augmentation=cfg.augmentation.model_dump(), config_dir=config_dir)
    weights = ctx.workdir / "best.pt"
    shutil.copyfile(result.best, weights)
    shutil.copyfile(result.best, node_folder(ctx) / "best.pt")
    ctx.count("trained", True)
    ctx.count("train_images", len(train))
    ctx.count("train_seconds", round(result.seconds, 2))
    ctx.count("epochs", len(result.epochs))
    ctx.record("epochs", result.epochs)
    return weights


def confident(labels: Labels, conf: float) -> Labels:
    """The predictions scoring at least `conf`."""
    keep = labels.scores >= conf
    return Labels(labels.boxes[keep], labels.classes[keep], labels.scores[keep],
                  None if labels.masks is None else labels.masks[keep])


def _to_predict(scene: Scene, cfg: LabelsConfig, split: Split) -> list[str]:
    wanted = set(split.held_out)
    if cfg.predict == "unlabeled":
        wanted |= set(split.unlabeled)
    elif cfg.predict == "all":
        wanted |= {im.name for im in scene.images}
    return [im.name for im in scene.images if im.name in wanted]


def node_folder(ctx: StageContext) -> Path:
    """OUT/<node>/: the folder of the files this node gives the user."""
    folder = ctx.published / ctx.node_id
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def score(scene: Scene, ctx: StageContext, pred: dict[str, Labels], class_names: tuple[str, ...],
          iou_types: tuple[str, ...]) -> dict:
    """The scene's metrics entry (kind "labels") of `pred` against the truth of the same images: COCO mAP per
    `iou_types`, "bbox" (boxes) and / or "segm" (masks, on the images whose truth has a mask or polygon for
    every instance). The means go to the report, the PR curves to OUT/<node>/pr_bbox.png, pr_segm.png."""
    entry: dict = {"kind": "labels", "images": sorted(pred)}
    ctx.count("scored_images", len(pred))
    if not pred:
        return entry
    truth = truth_of(scene)
    sizes = {n: (scene.image(n).height, scene.image(n).width) for n in pred}
    results = {}
    if "bbox" in iou_types:
        results["bbox"] = metrics.coco_map({n: truth[n] for n in pred}, pred, class_names, sizes, "bbox")
    if "segm" in iou_types:
        with_masks = [n for n in pred if shapes.has_shape(truth[n]).all()]
        if with_masks:
            results["segm"] = metrics.coco_map({n: shapes.with_masks(truth[n], *sizes[n]) for n in with_masks},
                                               {n: pred[n] for n in with_masks}, class_names, sizes, "segm")
    for iou_type, result in results.items():
        metrics.plot_pr_curves(result, node_folder(ctx) / f"pr_{iou_type}.png")
    ctx.record("scores", {iou_type: {k: r[k] for k in ("mAP", "mAP50", "mAP75", "n_images", "n_truth", "n_pred")}
                          for iou_type, r in results.items()})
    for iou_type, r in results.items():  # the summary's figures (the terminal's table)
        ctx.count(f"{iou_type}_mAP50_95", round(r["mAP"], 4))
        ctx.count(f"{iou_type}_mAP50", round(r["mAP50"], 4))
    return {**entry, **results}


def publish_predictions(ctx: StageContext, pred: dict[str, Labels], images: list, class_names: tuple[str, ...]
                        ) -> None:
    """The predictions as YOLO txt files with confidences (masks as traced polygons) in OUT/<node>/predictions/."""
    if pred:
        write_yolo(node_folder(ctx) / "predictions", {n: shapes.with_polygons(lab) for n, lab in pred.items()},
                   images, class_names)
