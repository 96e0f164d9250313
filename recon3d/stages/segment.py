"""segment: instance masks for the scene's images.

Backends behind one config:
- `ultralytics`: a YOLO segmentation model (`model` a ...-seg.yaml, or local `weights`), trained on the
  training images whose every instance has a mask or polygon, as `detect` does for boxes
  (`recon3d.stages.labels_common`); held-out images are scored by box and mask COCO mAP.
- `grabcut`: no training; every instance with a box but no mask or polygon (truth, or an earlier detect
  node's predictions) gets a GrabCut mask from its box (`recon3d.labels.grabcut`). Scored on the held-out
  images whose truth has masks: their truth boxes through GrabCut against their truth masks (score 1 each).

Either way the labels of every image as they leave the node go to OUT/<node>/labels.json (COCO, RLE masks,
`score` on predictions).
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from recon3d.io import images as image_io
from recon3d.io.labels_coco import write_coco
from recon3d.labels import shapes
from recon3d.labels.grabcut import masks_from_boxes
from recon3d.scene import Labels, Scene
from recon3d.stages.base import Stage, StageContext
from recon3d.stages.labels_common import (
    LabelsConfig,
    node_folder,
    score,
    split_labeled,
    truth_of,
    ultralytics_labels,
    weights_fingerprint,
)


class SegmentConfig(LabelsConfig):
    backend: Literal["ultralytics", "grabcut"] = Field("ultralytics", description="segmenter")
    model: str = Field("yolov8n-seg.yaml", description="ultralytics segmentation model yaml to train from "
                       "(fresh weights; yolov8n-seg.yaml, yolo11n-seg.yaml, ...)")
    grabcut_iterations: int = Field(5, ge=1, description="grabcut: GrabCut's EM iterations per box")

    @model_validator(mode="after")
    def _weights_need_a_model(self):
        if self.backend == "grabcut" and self.weights is not None:  # else they would be ignored without a word
            raise ValueError(f"weights {self.weights!r} are for the ultralytics backend; this node's backend is "
                             "grabcut (no weights): add --set segment.backend=ultralytics, or drop the weights")
        return self


def run(scene: Scene, cfg: SegmentConfig, ctx: StageContext | None = None) -> Scene:
    ctx = ctx or StageContext.standalone("segment")
    ctx.count("backend", cfg.backend)
    out = ultralytics_labels(scene, cfg, ctx, "segment") if cfg.backend == "ultralytics" else _grabcut(scene, cfg, ctx)
    # every image's labels as they leave this node (given, predicted, masks made): COCO, masks as RLE
    path = write_coco(node_folder(ctx) / "labels.json", out.class_names, out.labels, out.images)
    ctx.count("labels_file", f"{ctx.node_id}/{path.name}")
    return out


def _grabcut(scene: Scene, cfg: SegmentConfig, ctx: StageContext) -> Scene:
    truth = truth_of(scene)
    held_out = [n for n in split_labeled(scene, cfg.holdout_every).held_out if shapes.has_shape(truth[n]).all()]
    scored = {n: _boxes_only(truth[n]) for n in held_out}
    scored = {n: dataclasses.replace(lab, scores=np.ones(len(lab), np.float32))
              for n, lab in _fill_masks(scene, scored, cfg, ctx).items()}
    entry = score(scene, ctx, scored, scene.class_names, ("segm",))  # the boxes are the truth's
    ctx.count("scored", f"the masks GrabCut makes from the {len(scored)} held-out image(s)' true boxes against "
              "their true masks (the boxes are given, so the box scores are 1)")
    todo = {n: lab for n, lab in scene.labels.items() if not shapes.has_shape(lab).all()}
    filled = _fill_masks(scene, todo, cfg, ctx)
    ctx.count("images_masked", len(filled))
    ctx.count("instances_masked", int(sum((~shapes.has_shape(todo[n])).sum() for n in filled)))
    return scene.replace(labels={**scene.labels, **filled}, metrics={**scene.metrics, ctx.node_id: entry})


def _boxes_only(lab: Labels) -> Labels:
    return Labels(lab.boxes, lab.classes)


def _fill_masks(scene: Scene, labels: dict[str, Labels], cfg: SegmentConfig, ctx: StageContext) -> dict[str, Labels]:
    """`labels` with a GrabCut mask for every instance that has neither mask nor polygon (polygons rasterised).
    Where GrabCut finds nothing (an object among others of its colours), the instance keeps its box as its mask:
    counted and listed with the reason, not left out."""
    out = {}
    boxes_kept: list[dict[str, str]] = []
    cut = 0
    for name, lab in labels.items():
        im = scene.image(name)
        lab = shapes.with_masks(lab, im.height, im.width)
        need = np.flatnonzero(~shapes.has_shape(lab))
        if len(need):
            result = masks_from_boxes(image_io.read_rgb(im.path), lab.boxes[need], iterations=cfg.grabcut_iterations,
                                      seed=cfg.seed)
            lab.masks[need] = result.masks
            cut += len(need) - len(result.fallback)
            boxes_kept += [{"instance": f"{name} instance {int(need[k])}", "why": why}
                           for k, why in result.fallback.items()]
        out[name] = lab
    ctx.count("masks_grabcut", cut)
    ctx.count("masks_box_kept", len(boxes_kept))
    if boxes_kept:
        ctx.record("masks_box_kept", boxes_kept)
    return out


STAGE = Stage(
    name="segment",
    version=4,  # 2: held-out images scored down to SCORE_CONF; 3: no epoch row for the final validation; 4: boxes
    # GrabCut cannot cut are counted as kept (masks_box_kept), not listed as left out; OUT/<node>/labels.json
    config=SegmentConfig,
    run=run,
    reads=("images", "class_names", "labels", "metrics"),
    writes=("labels", "class_names", "metrics"),
    fingerprint=weights_fingerprint,
    summary="instance masks: YOLO-seg (ultralytics, offline) trained on the scene's masks or local weights, or "
            "GrabCut from boxes; scored on held-out images (COCO mAP)",
)
