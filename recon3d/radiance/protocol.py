"""The evaluation protocol as data: what two radiance-field results must share to be compared.

Numbers from different resolutions, splits, backgrounds or metric implementations are not comparable
(nerfstudio's maintainers found needless undistortion alone moving PSNR by 1.3 dB), so every `evaluate`
result of a render carries its `Protocol`, and `compare` refuses to put results whose protocols differ in
one table, naming the field. The seed is not part of it: results that differ only by seed are what a
mean +- std is made of.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

METRICS = {
    "psnr": "recon3d.radiance.metrics.psnr: 10 log10(1 / MSE), peak 1, on 8-bit renders",
    "ssim": "recon3d.radiance.metrics.ssim: 11x11 Gaussian window, sigma 1.5, reflect padding (= torchmetrics)",
    "psnr_cc, ssim_cc": "the same after recon3d.radiance.metrics.color_corrected: the render's least-squares "
                        "affine colour fit to its photo (exposure, white balance; as Zip-NeRF's colour-corrected "
                        "metrics); psnr and ssim are without it",
    "lpips": "not computed: no local LPIPS weights given (none are downloaded)",
}
APPEARANCE_RULE = ("test views are rendered with the model's own colours: a per-image appearance, when training "
                   "learns one (the trainers' option appearance: affine), is never fitted to them")
EXPOSURE_RULE = ("test views are rendered at the exposure their EXIF records (time x ISO / f-number^2): the "
                 "model's colours times 2^(gain (e - reference)), gain and reference learned from the training "
                 "photos (radiance.appearance), a view whose EXIF records none at the reference; no pixel of a "
                 "test photo is used")
NO_EXPOSURE_RULE = "none: test views are rendered with the model's own colours"
LPIPS_IMPLEMENTATION = "recon3d.radiance.lpips: LPIPS v0.1, AlexNet, on 8-bit renders"
NO_TEST_VIEWS = "the model holds out no test views (holdout_every 0): nothing to render or score"


class Protocol(BaseModel):
    """How a result was produced and scored, minus the seed."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    data: str = Field(description="the data folder")
    split: str = Field(description="how test views were chosen: the data's own split, or every n-th held out. On "
                       "photos the cameras and sparse points come from SfM over every photo, the held-out ones "
                       "included (as in the LLFF / Mip-NeRF 360 protocol); no test pixel enters the training")
    train_views: int
    test_views: int
    resolution: str = Field(description="render and target sizes, WxH px: each size the held-out views have")
    resolution_source: str = Field(description="how that resolution was made from the data")
    background: str = Field(description="what is behind the model: white, black, or learned with it (one colour, "
                            "the model's background_rgb, or where the model has one its env map, a colour per "
                            "direction: the NeRF's on photos); RGBA targets are composited on it")
    metrics: dict[str, str] = Field(description="metric name -> implementation")
    budget_min: float = Field(description="training-time budget, minutes (0 = steps only): the optimisation "
                              "steps' own time, not the set-up, checkpoints or the curve's evaluations; each "
                              "method also stops at its own step cap (compare names one that did so first)")
    device: str
    threads: int = Field(description="torch CPU threads during training (what torch used, not what was asked)")
    curve: str = Field(description="time-to-PSNR: which views, how often")
    appearance: str = Field(APPEARANCE_RULE, description="how test views are coloured when training learns a "
                            "per-image appearance")
    exposure: str = Field(NO_EXPOSURE_RULE, description="how a test view's recorded exposure enters its render")

    def differences(self, other: Protocol) -> list[str]:
        """Names of the fields whose values differ."""
        a, b = self.model_dump(), other.model_dump()
        return [k for k in a if a[k] != b[k]]


def training_protocol(cfg: Any, train: list[str], test: list[str], split: str, source: str, background: str,
                      resolution_source: str) -> dict[str, Any]:
    """The part of the protocol a training stage knows (its data config and loop config, the background it
    chose, how its pixels were made), as a dict for its report; `evaluate` completes it with the render's
    resolution and the metrics."""
    import torch  # here, not at import: evaluate reads this module on runs that train nothing

    return {
        "data": source,
        "resolution_source": resolution_source,
        "split": split,
        "train_views": len(train),
        "test_views": len(test),
        "background": background,
        "budget_min": cfg.budget_min,
        "device": cfg.device,
        "threads": torch.get_num_threads(),  # a Dask worker runs one, a local run as many as cores
        "curve": (f"mean PSNR of the first {cfg.eval_views} test views" if len(test) > cfg.eval_views else
                  f"mean PSNR of the {count_views(len(test), 'test')}")
        + f" every {cfg.eval_every_s:g} training seconds",
    }


def count_views(n: int, what: str = "") -> str:
    """"1 test view", "3 test views", "2 views": a count of views in words."""
    return f"{n} {what + ' ' if what else ''}view{'' if n == 1 else 's'}"
