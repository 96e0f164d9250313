"""detect: boxes for the scene's images, from a detector trained on the scene's own labeled images.

Backend `ultralytics` (YOLO): trains `model` (a model yaml, fresh weights) on the training images' truth, or
predicts with local `weights` only; scores the held-out labeled images by COCO mAP (`metrics[<node>]`, kind
"labels"; PR curves in OUT/<node>/pr_bbox.png) and labels the images without truth with scored boxes. The
trained weights are `<node folder>/files/best.pt` (the report's `weights`) and OUT/<node>/best.pt, for a
later run's `weights`. See `recon3d.stages.labels_common` for the split and the rules, and
`recon3d.labels.yolo` for running ultralytics offline.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from recon3d.scene import Scene
from recon3d.stages.base import Stage, StageContext
from recon3d.stages.labels_common import LabelsConfig, ultralytics_labels, weights_fingerprint


class DetectConfig(LabelsConfig):
    backend: Literal["ultralytics"] = Field("ultralytics", description="detector")


def run(scene: Scene, cfg: DetectConfig, ctx: StageContext | None = None) -> Scene:
    ctx = ctx or StageContext.standalone("detect")
    ctx.count("backend", cfg.backend)
    return ultralytics_labels(scene, cfg, ctx, "detect")


STAGE = Stage(
    name="detect",
    version=3,  # 2: held-out images scored down to SCORE_CONF; 3: no epoch row for the final validation
    config=DetectConfig,
    run=run,
    reads=("images", "class_names", "labels", "metrics"),
    writes=("labels", "class_names", "metrics"),
    fingerprint=weights_fingerprint,
    summary="boxes: train YOLO (ultralytics, offline) on the scene's labeled images or load local weights, "
            "score held-out images (COCO mAP), label the rest",
)
