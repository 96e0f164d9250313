"""torchvision without its compiled ops: a pure-torch `torchvision::nms` where `_C` does not load.

When torchvision's compiled extension does not fit the installed torch (a CPU torch beside a wheel built
for another one), `torchvision/_C.so` fails to load, no `torchvision::*` operator exists, and
`import torchvision` itself fails: `_meta_registrations.py` registers fake kernels for `torchvision::nms`
and `torchvision::qnms` ("operator torchvision::nms does not exist"). ultralytics imports torchvision in
its validator and predictor, so YOLO stops working.

`ensure_torchvision()` acts only then: before torchvision is imported it defines the two schemas (as
torchvision's C++ does) with CPU and CUDA kernels in plain torch, and leaves the Meta/fake kernel to
torchvision's own `register_fake`. torchvision's python `nms` still calls `_assert_has_ops()`, which asks
whether `_C` loaded, so `torchvision.ops.nms` (and `torchvision.ops.boxes.nms`, which `batched_nms` uses)
become the same function without that assertion; every other compiled op (roi_align, deform_conv, ...)
keeps raising torchvision's own error.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import torch
from torch import Tensor

log = logging.getLogger("recon3d")

NMS_SCHEMA = "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor"
QNMS_SCHEMA = "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor"

_state: str | None = None  # "compiled" or "shim" once ensure_torchvision() has decided
_lib: torch.library.Library | None = None  # kept alive: the registrations last as long as this object


def ensure_torchvision() -> str:
    """Make `import torchvision` and `torchvision.ops.nms` work; call before torchvision is imported.

    Returns "compiled" when torchvision's own ops load (nothing done) or "shim" when the pure-torch NMS was
    installed. Idempotent: later calls return the first decision.
    """
    global _state
    if _state is not None:
        return _state
    if compiled_nms_available():
        _state = "compiled"
        log.debug("torchvision: compiled ops load, nothing to do")
        return _state
    _define_ops()
    _patch_python_nms()
    _state = "shim"
    log.debug("torchvision: compiled ops do not load beside torch %s; defined torchvision::nms/qnms in pure "
              "torch and made torchvision.ops.nms skip _assert_has_ops", torch.__version__)
    return _state


def compiled_nms_available() -> bool:
    """Whether `torchvision::nms` exists, loading torchvision's `_C` extension when it is not loaded yet
    (as `torchvision.extension` would, without importing torchvision)."""
    if hasattr(torch.ops.torchvision, "nms"):
        return True
    spec = importlib.util.find_spec("torchvision")
    if spec is None or spec.origin is None:
        return False
    folder = Path(spec.origin).parent
    for path in sorted(folder.glob("_C.*")):
        if path.suffix in (".so", ".pyd", ".dylib"):
            try:
                torch.ops.load_library(str(path))
            except (OSError, RuntimeError) as exc:
                log.debug("torchvision: %s does not load: %s", path, exc)
    return hasattr(torch.ops.torchvision, "nms")


def nms(dets: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Greedy non-maximum suppression, as torchvision's CPU kernel.

    dets: (N, 4) boxes x0, y0, x1, y1; scores: (N,). Boxes are visited by decreasing score (ties: lower index
    first) and a box is dropped when its IoU with a kept one is > `iou_threshold` (a NaN IoU, two empty boxes,
    drops nothing). Returns (K,) int64 indices of the kept boxes, by decreasing score.
    """
    if dets.dim() != 2 or dets.shape[1] != 4 or scores.dim() != 1 or len(scores) != len(dets):
        raise ValueError(f"nms: dets must be (N, 4) and scores (N,), got {tuple(dets.shape)} and "
                         f"{tuple(scores.shape)}")
    if dets.numel() == 0:
        return torch.empty(0, dtype=torch.int64, device=dets.device)
    order = torch.sort(scores, descending=True, stable=True).indices
    boxes = dets[order]
    x0, y0, x1, y1 = boxes.unbind(1)
    areas = (x1 - x0) * (y1 - y0)
    remaining = torch.arange(len(boxes), device=dets.device)
    keep = []
    while remaining.numel():
        i, rest = remaining[0], remaining[1:]
        keep.append(i)
        w = (torch.minimum(x1[i], x1[rest]) - torch.maximum(x0[i], x0[rest])).clamp_min(0)
        h = (torch.minimum(y1[i], y1[rest]) - torch.maximum(y0[i], y0[rest])).clamp_min(0)
        inter = w * h
        iou = inter / (areas[i] + areas[rest] - inter)
        remaining = rest[~(iou > iou_threshold)]
    return order[torch.stack(keep)]


def _qnms(dets: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    # torchvision passes the integer representation of quantized boxes: their zero point shifts every
    # coordinate alike and their scale multiplies them alike, so the IoU is that of the real boxes
    return nms(dets.double(), scores.double(), iou_threshold)


def _define_ops() -> None:
    global _lib
    _lib = torch.library.Library("torchvision", "FRAGMENT")
    _lib.define(NMS_SCHEMA)
    _lib.define(QNMS_SCHEMA)
    for key in ("CPU", "CUDA"):
        _lib.impl("nms", nms, key)
        _lib.impl("qnms", _qnms, key)


def _patch_python_nms() -> None:
    """torchvision.ops.nms without `_assert_has_ops()` (which asks whether `_C` loaded), same arguments."""
    import torchvision.ops
    import torchvision.ops.boxes as boxes

    original = boxes.nms

    def nms_without_compiled_ops(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
        if not torch.jit.is_scripting() and boxes.is_quantized:
            return torch.ops.torchvision.qnms(boxes.int_repr(), scores.int_repr(), iou_threshold)
        return torch.ops.torchvision.nms(boxes, scores, iou_threshold)

    nms_without_compiled_ops.__doc__ = original.__doc__
    nms_without_compiled_ops.__wrapped__ = original
    boxes.nms = nms_without_compiled_ops
    torchvision.ops.nms = nms_without_compiled_ops
