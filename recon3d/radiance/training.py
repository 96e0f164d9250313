"""The loop both radiance trainers (Gaussians, NeRF) run: steps until the step count or the time budget,
the PSNR/SSIM-vs-time curve on test views, checkpoints, progress.

A trainer supplies its state (anything with `model`, `step`, `seconds`, `curve` and `events`) and three
functions: one optimisation step, a renderer of views for the curve, and a checkpoint writer. The budget
counts the seconds spent in steps only; evaluations for the curve are not charged to it.
"""

from __future__ import annotations

import math
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from pydantic import Field
from torch import Tensor

from recon3d.radiance.metrics import psnr, ssim
from recon3d.radiance.views import View
from recon3d.stages.base import Device, StageConfig


class LoopConfig(StageConfig):
    """The fields of the shared loop; each trainer adds its own `steps` (with its default) and the rest."""

    steps: int
    budget_min: float = Field(0.0, ge=0, description="stop training after this many minutes of training time "
                              "(0 = no budget); the model is still saved, rendered and evaluated")
    device: Device = Field("cpu", description="torch device (cpu, cuda); never chosen for you")
    checkpoint_every: int = Field(1000, ge=1, description="steps between checkpoints (resume point)")
    eval_every_s: float = Field(60.0, ge=0, description="training seconds between PSNR evaluations of the "
                                "curve (0 = none)")
    eval_views: int = Field(5, ge=0, description="test views in each curve evaluation")


@dataclass
class TrainResult:
    model: Any
    steps: int
    train_seconds: float
    stopped_by: str  # "steps" or "budget"
    resumed_from: int | None
    curve: list[dict] = field(default_factory=list)  # {"step", "seconds", "psnr", "ssim", ...}
    events: dict[str, float] = field(default_factory=dict)
    appearance: Any = None  # the per-image appearance model, when the training learned one
    poses: Any = None  # (n, 4, 4) float64 refined cam_from_world of the training views, when they were refined
    background: Any = None  # (3,) the colour behind the model, as trained (learned, or as given)
    exposure: Any = None  # the exposure gain (radiance.appearance.ExposureGain), when the training learned one


def score_views(render: Callable[[View], Tensor], views: list[View]) -> tuple[float, float]:
    """Mean PSNR and SSIM of `render(view)` (H, W, 3) against each view's image."""
    scores = []
    with torch.no_grad():
        for v in views:
            rgb = render(v).clamp(0, 1).cpu()
            scores.append((psnr(rgb, v.image), float(ssim(rgb, v.image))))
    return float(np.mean([s[0] for s in scores])), float(np.mean([s[1] for s in scores]))


class StopBetweenSteps:
    """Ctrl-C and SIGTERM held until the step they arrive in has ended (`now`), so that a stopped training saves
    a checkpoint of a whole step and the same command goes on from it instead of from the last periodic one
    (up to `checkpoint_every` steps back). Then the signal's own handler runs (the command's: its one line and
    exit code). Outside the main thread (a Dask worker) signals stay as they are."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.signal: int | None = None
        self._handlers: dict[int, Any] = {}

    def __enter__(self) -> StopBetweenSteps:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                if signal.getsignal(sig) not in (signal.SIG_IGN, None):  # an ignored signal stays ignored
                    self._handlers[sig] = signal.signal(sig, self._hold)
        return self

    def _hold(self, signum, frame) -> None:
        self.signal = signum

    def now(self) -> None:
        """Deliver a held signal to the handler it would have reached (KeyboardInterrupt for the default)."""
        if self.signal is None:
            return
        handler = self._handlers.get(self.signal)
        held, self.signal = self.signal, None
        self.__exit__()
        if callable(handler):
            handler(held, None)
        raise KeyboardInterrupt

    def __exit__(self, *exc) -> None:
        for sig, handler in self._handlers.items():
            signal.signal(sig, handler)
        self._handlers = {}


def run(st: Any, cfg: LoopConfig, step: Callable[[], tuple[float, int]], render: Callable[[View], Tensor],
        save_checkpoint: Callable[[], None], curve_extra: Callable[[], dict], eval_views: list[View],
        on_step: Callable[[int, int, float, int], None] | None, resumed: int | None,
        smoothing: float) -> TrainResult:
    """Run `step()` (returns the step's training PSNR and a count for the progress text) until `cfg.steps`
    or the budget. on_step(step, steps, running PSNR, count) after every step, `steps` where the training will
    end (with a budget: where it ends at the pace so far); the running PSNR is an exponential mean keeping
    `smoothing` of the previous value."""
    next_eval = len(st.curve) * cfg.eval_every_s if cfg.eval_every_s else math.inf
    stopped_by, running = "steps", 0.0

    def record() -> None:
        p, s = score_views(render, eval_views)
        st.curve.append({"step": st.step, "seconds": round(st.seconds, 2), "psnr": p, "ssim": s, **curve_extra()})

    with StopBetweenSteps() as stop:
        while st.step < cfg.steps:
            if cfg.budget_min and st.seconds >= cfg.budget_min * 60.0:
                stopped_by = "budget"
                break
            if st.seconds >= next_eval and eval_views:
                record()
                next_eval += cfg.eval_every_s
            tic = time.perf_counter()
            p, count = step()
            st.seconds += time.perf_counter() - tic
            running = p if st.step == (resumed or 0) + 1 else smoothing * running + (1 - smoothing) * p
            if on_step is not None:  # a budget's end, in steps, as projected at this pace (the bar fills up)
                total = cfg.steps if not cfg.budget_min else \
                    min(cfg.steps, max(st.step, round(st.step * cfg.budget_min * 60.0 / max(st.seconds, 1e-9))))
                on_step(st.step, total, running, count)
            if (st.step % cfg.checkpoint_every == 0 and st.step < cfg.steps) or stop.signal is not None:
                save_checkpoint()
            stop.now()  # Ctrl-C or SIGTERM during the step: it is saved, so the stop goes on from here
    if eval_views:
        record()
    return TrainResult(st.model, st.step, st.seconds, stopped_by, resumed, st.curve, st.events)
