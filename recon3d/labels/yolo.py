"""The ultralytics (YOLO) backend of detect and segment: build or load a model, train it on a YOLO dataset
folder, predict `Labels`. Nothing is ever downloaded.

Offline: `load_ultralytics(folder)` imports ultralytics with `YOLO_OFFLINE=1` (its `ONLINE` is then False,
so no update check, hub or analytics) and `YOLO_CONFIG_DIR=folder` (its settings, and the datasets, weights
and runs folders, under the run instead of ~/.config), turns every logger integration off and places the
fonts its plots and its dataset check ask for (`check_font("Arial.ttf")`, which would fetch the font) in that
folder, as copies of matplotlib's DejaVu Sans. Training passes `amp=False` (the AMP check loads, so
downloads, yolo26n.pt on CUDA; CPU skips it) and `plots=False`. A model is built from a yaml that ships with
ultralytics (`yolov8n.yaml`, `yolov8n-seg.yaml`, `yolo11n.yaml`, ...) or loaded from a local `.pt`;
ultralytics would download a missing `.pt` by name, so a path that is not a file is a DataError first.
ultralytics' `.pt` is its own pickled checkpoint: load only weights you trust.

Process-wide state that ultralytics changes and other stages rely on is put back: OpenCV's thread count (0 on
import), numpy's print options (on import), PIL's `Image.open` and `torch.save` (patched on import), torch's
thread count (`select_device` on CPU) and deterministic mode (`deterministic=True` training). What stays:
YOLO_OFFLINE and YOLO_CONFIG_DIR, the variables ultralytics sets on import (NUMEXPR_MAX_THREADS,
TF_CPP_MIN_LOG_LEVEL, TORCH_CPP_LOG_LEVEL, KINETO_LOG_LEVEL), its warning filters and torch print options.

Pixels: ultralytics' `xyxy` boxes are corners in the pixel grid of the original image (its labels are
normalised by the image size and its letterbox maps edges to edges), which is recon3d's (COLMAP's)
convention, so boxes pass unchanged; `tests/test_detect_segment.py` checks it on rectangles drawn exactly.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recon3d.errors import ConfigError, DataError, StageError
from recon3d.io import images as image_io
from recon3d.labels.torchvision_compat import ensure_torchvision
from recon3d.scene import ImageInfo, Labels

log = logging.getLogger("recon3d")

FONTS = ("Arial.ttf", "Arial.Unicode.ttf")  # what ultralytics' check_font asks for
SETTINGS = {"sync": False, "hub": False, "clearml": False, "comet": False, "dvc": False, "mlflow": False,
            "neptune": False, "raytune": False, "tensorboard": False, "wandb": False, "vscode_msg": False,
            "openvino_msg": False}
PREDICT_BATCH = 8  # images per predictor call


def load_ultralytics(config_dir: str | Path):
    """The `ultralytics` module, imported offline with its settings under `config_dir` (see the module doc).

    The config folder is fixed when ultralytics is first imported; later calls reuse that one.
    """
    if "ultralytics" not in sys.modules:
        os.environ["YOLO_OFFLINE"] = "1"
        os.environ["YOLO_CONFIG_DIR"] = str(Path(config_dir).absolute())
        os.environ.setdefault("YOLO_VERBOSE", "False")  # its banner, argument dump and epoch tables: ~300 lines
        # a run on the terminal; the node's report has the figures (YOLO_VERBOSE=True shows them)
        ensure_torchvision()
        import cv2
        from PIL import Image

        threads, printoptions, omp = cv2.getNumThreads(), np.get_printoptions(), os.environ.get("OMP_NUM_THREADS")
        image_open, torch_save = Image.open, torch.save
        import ultralytics
        import ultralytics.utils.patches  # noqa: F401 - replaces PIL.Image.open when first imported

        # its PIL.Image.open tries `check_requirements("pi-heif")` on any file PIL cannot identify, which turns
        # a broken image anywhere in this process into ModuleNotFoundError: PIL's own open is put back, and
        # torch's own save (ultralytics' retries and sleeps on errors, for everyone's checkpoints)
        Image.open, torch.save = image_open, torch_save
        cv2.setNumThreads(threads)
        np.set_printoptions(**printoptions)
        if omp is None:  # ultralytics sets 1 for the processes this one starts
            os.environ.pop("OMP_NUM_THREADS", None)
        log.debug("ultralytics %s imported offline, settings in %s", ultralytics.__version__, config_dir)
    elif os.environ.get("YOLO_OFFLINE") != "1":
        log.warning("ultralytics was imported before recon3d could set YOLO_OFFLINE=1: it may try the network")
    import ultralytics
    from ultralytics.utils import SETTINGS as settings
    from ultralytics.utils import USER_CONFIG_DIR

    root = Path(USER_CONFIG_DIR)
    wanted = {"datasets_dir": str(root / "datasets"), "weights_dir": str(root / "weights"),
              "runs_dir": str(root / "runs"), **{k: v for k, v in SETTINGS.items() if k in settings}}
    if any(settings.get(k) != v for k, v in wanted.items()):
        settings.update(wanted)
    _place_fonts(root)
    return ultralytics


def _place_fonts(folder: Path) -> None:
    import matplotlib

    dejavu = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    for name in FONTS:
        if not (folder / name).is_file():
            shutil.copyfile(dejavu, folder / name)


@contextlib.contextmanager
def _restored_torch_state() -> Iterator[None]:
    """Put back torch's thread count and deterministic mode, which ultralytics sets process-wide."""
    threads = torch.get_num_threads()
    deterministic, warn_only = torch.are_deterministic_algorithms_enabled(), \
        torch.is_deterministic_algorithms_warn_only_enabled()
    cudnn, fill = torch.backends.cudnn.deterministic, torch.utils.deterministic.fill_uninitialized_memory
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
        torch.backends.cudnn.deterministic = cudnn
        torch.utils.deterministic.fill_uninitialized_memory = fill


def load_model(spec: str, config_dir: str | Path):
    """An ultralytics `YOLO` from a model yaml that ships with ultralytics (`yolov8n-seg.yaml`; fresh weights)
    or a local weights file (`.pt`). DataError for a weights file that does not exist, ConfigError for an
    unknown yaml; neither is ever downloaded."""
    load_ultralytics(config_dir)
    from ultralytics import YOLO

    if spec.lower().endswith((".yaml", ".yml")):
        try:
            return YOLO(spec)
        except FileNotFoundError as exc:
            raise ConfigError(f"model {spec!r} is neither a local file nor a model yaml that ships with "
                              "ultralytics", "use e.g. yolov8n.yaml, yolov8n-seg.yaml, yolo11n.yaml, "
                              "yolo11n-seg.yaml, or a path to your own model yaml") from exc
    path = Path(spec).expanduser()
    if not path.is_file():
        raise DataError(f"weights file {path} does not exist (recon3d never downloads weights)",
                        "give the path of a local .pt file, e.g. the best.pt a detect/segment node wrote, or "
                        "leave weights unset to train from a model yaml")
    if path.suffix != ".pt":
        raise DataError(f"weights file {path} is not an ultralytics .pt checkpoint", "give a .pt file")
    try:
        return YOLO(str(path.absolute()))
    except Exception as exc:  # ultralytics raises what torch.load or its checkpoint parsing raise
        raise DataError(f"cannot load weights {path} with ultralytics: {type(exc).__name__}: {exc}",
                        "give a .pt checkpoint that ultralytics wrote (a detect/segment node's best.pt)") from exc


@dataclass(frozen=True)
class TrainResult:
    best: Path  # best.pt: the epoch of highest fitness on ultralytics' val images
    last: Path  # last.pt
    epochs: list[dict[str, float]]  # per epoch: "epoch", train losses, val metrics, learning rates
    seconds: float
    task: str  # "detect" or "segment"


def train(model: str, data_yaml: str | Path, folder: str | Path, *, epochs: int, imgsz: int, batch: int,
          seed: int, device: str, augmentation: Mapping[str, float], config_dir: str | Path,
          patience: int = 100, budget_min: float = 0.0, val: bool = False) -> TrainResult:
    """Train `model` (a model yaml or a local .pt to fine-tune) on the ultralytics dataset `data_yaml`.

    Seeded and deterministic where ultralytics allows (`deterministic=True`: torch's deterministic algorithms,
    warn only), `workers=0` (data loading in this process), fp32. `augmentation`: ultralytics' own
    hyperparameters (mosaic, fliplr, hsv_h, hsv_s, hsv_v, scale, translate, ...): its transforms move the
    boxes and segments with the pixels. `budget_min` > 0: ultralytics' `time`, training stops after that
    many minutes (its epoch count and LR schedule are fitted to the budget after the first epoch, so
    `epochs` is only an upper bound). `val`: ultralytics' validation after every epoch (it scores the
    dataset's val images); without it only the last epoch is validated. Writes ultralytics' run
    (weights/best.pt, last.pt, results.csv, args.yaml) into `folder`.
    """
    yolo = load_model(model, config_dir)
    folder = Path(folder).absolute()
    epochs_seen: dict[int, dict[str, float]] = {}
    trained: set[int] = set()  # epochs the training loop went through

    def on_train_epoch_end(trainer) -> None:
        trained.add(trainer.epoch)

    def on_fit_epoch_end(trainer) -> None:  # also called by the final validation of best.pt, at an epoch one past
        if trainer.epoch not in trained or trainer.epoch + 1 in epochs_seen:  # the last (under a time budget its
            return  # epoch count has been refitted by then, so comparing with `epochs` does not tell it)
        row = {"epoch": float(trainer.epoch + 1)}
        row.update(trainer.label_loss_items(trainer.tloss, prefix="train"))
        row.update(trainer.metrics or {})
        row.update(getattr(trainer, "lr", {}) or {})
        epochs_seen[trainer.epoch + 1] = {k: round(float(v), 6) for k, v in row.items()}

    yolo.add_callback("on_train_epoch_end", on_train_epoch_end)
    yolo.add_callback("on_fit_epoch_end", on_fit_epoch_end)
    start = time.perf_counter()
    with _restored_torch_state():
        yolo.train(data=str(data_yaml), epochs=epochs, imgsz=imgsz, batch=batch, seed=seed, deterministic=True,
                   workers=0, device=device, project=str(folder.parent), name=folder.name, exist_ok=True,
                   amp=False, plots=False, val=val, patience=patience, verbose=False, cache=False,
                   pretrained=model.endswith(".pt"), **({"time": budget_min / 60} if budget_min > 0 else {}),
                   **dict(augmentation))
    trainer = yolo.trainer
    best = Path(trainer.best) if Path(trainer.best).is_file() else Path(trainer.last)
    return TrainResult(best, Path(trainer.last), list(epochs_seen.values()), time.perf_counter() - start, yolo.task)


def class_indices(model_names: Mapping[int, str], class_names: Sequence[str], weights: str) -> np.ndarray:
    """(C,) int32: the scene class index of each of the model's classes, matched by name. StageError naming the
    classes the scene's table lacks."""
    missing = [name for name in model_names.values() if name not in class_names]
    if missing:
        raise StageError(f"weights {weights} predict classes {missing[:8]} that the scene's class table "
                         f"{list(class_names)[:8]} does not have",
                         "use weights trained on this scene's classes, or ingest labels that name those classes")
    index = {name: i for i, name in enumerate(class_names)}
    return np.array([index[model_names[k]] for k in sorted(model_names)], dtype=np.int32)


def model_info(weights: str | Path, config_dir: str | Path) -> tuple[str, dict[int, str]]:
    """(task, {class index: name}) of a weights file."""
    yolo = load_model(str(weights), config_dir)
    return yolo.task, dict(yolo.names)


def predict(weights: str | Path, images: Sequence[ImageInfo], class_names: Sequence[str], *, imgsz: int,
            conf: float, iou: float, device: str, config_dir: str | Path) -> dict[str, Labels]:
    """image name -> predicted Labels: boxes (N, 4) float64 xyxy pixel corners, scene class indices, scores
    (N,) float32 and, for segmentation weights, masks (N, H, W) bool at the image's full size."""
    yolo = load_model(str(weights), config_dir)
    to_scene = class_indices(yolo.names, class_names, str(weights))
    out: dict[str, Labels] = {}
    with _restored_torch_state():
        for lo in range(0, len(images), PREDICT_BATCH):
            chunk = images[lo:lo + PREDICT_BATCH]
            bgr = [_read_bgr(im) for im in chunk]
            results = yolo.predict(bgr, imgsz=imgsz, conf=conf, iou=iou, device=device, retina_masks=True,
                                   verbose=False, save=False)
            for im, result in zip(chunk, results, strict=True):
                out[im.name] = _labels_of(result, to_scene, im, yolo.task == "segment")
    return out


def _read_bgr(im: ImageInfo) -> np.ndarray:
    rgb = image_io.read_rgb(im.path)
    if rgb.shape[:2] != (im.height, im.width):
        raise DataError(f"image {im.name} is {rgb.shape[1]}x{rgb.shape[0]} px but the scene says "
                        f"{im.width}x{im.height}", "re-run ingest")
    return np.ascontiguousarray(rgb[..., ::-1])  # ultralytics takes arrays in OpenCV's BGR order


def _labels_of(result: Any, to_scene: np.ndarray, im: ImageInfo, segment: bool) -> Labels:
    boxes = result.boxes
    xyxy = boxes.xyxy.cpu().numpy().astype(np.float64).reshape(-1, 4)  # corners already: no pixel shift
    classes = to_scene[boxes.cls.cpu().numpy().astype(np.int64)].astype(np.int32)
    scores = boxes.conf.cpu().numpy().astype(np.float32)
    masks = None
    if segment:
        masks = np.zeros((len(xyxy), im.height, im.width), dtype=bool)
        if result.masks is not None:
            masks = result.masks.data.cpu().numpy() > 0.5
            if masks.shape != (len(xyxy), im.height, im.width):
                raise StageError(f"ultralytics returned masks {masks.shape} for {len(xyxy)} boxes on image "
                                 f"{im.name} of {im.width}x{im.height}", "report this: retina_masks gives full size")
    return Labels(boxes=xyxy, classes=classes, scores=scores, masks=masks)
