"""detect end to end on coco8, offline. Prints; not a test.

    .venv/bin/python benchmarks/detect.py [--data ../shared/data/coco8] [--epochs 1] [--imgsz 640]

ingest reads coco8's images and YOLO labels (coco8.yaml, 80 COCO classes); each image's split is its folder
(train/, val/: 4 and 4), so detect trains `--model` from fresh weights on the 4 train images and scores the
4 val images by COCO mAP (pycocotools). One epoch from scratch scores about nothing: the figures are the time
of a full offline run (ultralytics import, dataset, training, validation, prediction, scoring) and that it
completes without the network. `--weights` predicts with a local .pt instead of training.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import socket
import tempfile
import time
from pathlib import Path

from recon3d.scene import Scene
from recon3d.stages import detect, ingest
from recon3d.stages.base import StageContext


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(Path(__file__).parent.parent.parent / "shared" / "data" / "coco8"))
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--model", default="yolov8n.yaml")
    parser.add_argument("--weights", default=None)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    attempts: list = []
    real_connect = socket.socket.connect

    def refuse(sock, address):  # count and refuse any connection: the run must be offline
        attempts.append(address)
        raise OSError("benchmarks/detect.py: network closed")

    socket.socket.connect = refuse
    with tempfile.TemporaryDirectory(prefix="recon3d-detect-") as tmp:
        start = time.perf_counter()
        scene = ingest.run(Scene(), ingest.IngestConfig(path=args.data, labels="coco8.yaml"),
                           StageContext("ingest", Path(tmp) / "ingest"))
        scene = scene.replace(images=tuple(dataclasses.replace(im, split=im.name.split("/")[0])
                                           for im in scene.images))
        t_ingest = time.perf_counter() - start
        ctx = StageContext("detect", Path(tmp) / "detect", Path(tmp) / "out")
        cfg = detect.DetectConfig(model=args.model, weights=args.weights, epochs=args.epochs, imgsz=args.imgsz,
                                  batch=args.batch, device=args.device, conf=0.001)
        start = time.perf_counter()
        out = detect.run(scene, cfg, ctx)
        t_detect = time.perf_counter() - start
    socket.socket.connect = real_connect
    entry = out.metrics["detect"]["bbox"]
    print(f"coco8: {len(scene.images)} images, {len(scene.class_names)} classes, "
          f"{sum(len(v) for v in scene.labels.values())} boxes")
    print(f"ingest {t_ingest:.2f} s; detect {t_detect:.2f} s (training {ctx.counts.get('train_seconds', 0)} s, "
          f"{ctx.counts.get('train_images', 0)} train / {ctx.counts['scored_images']} scored images, "
          f"{args.epochs} epoch(s) at {args.imgsz} px, {args.model if args.weights is None else args.weights})")
    print(f"held-out COCO mAP {entry['mAP']}, mAP50 {entry['mAP50']}, mAP75 {entry['mAP75']} "
          f"({entry['n_truth']} truth boxes, {entry['n_pred']} predictions)")
    print("per epoch:", json.dumps(ctx.results.get("epochs", [])))
    print(f"socket connect attempts: {len(attempts)}")


if __name__ == "__main__":
    main()
