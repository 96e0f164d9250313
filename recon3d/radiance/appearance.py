"""Per-image appearance compensation: real photos differ in exposure and white balance.

Each training image gets an affine colour transform `rgb' = A rgb + b` (A (3, 3), b (3,)), identity at the
start and learned with the model, applied to the render before the loss, so the model need not bake one
photo's exposure into its geometry (as NeRF-W's per-image appearance, in the small affine form of
Urban-NeRF's exposure compensation). Test views have no learned transform: they are rendered and scored
with the identity, the model's own colours; the evaluation protocol says so. Both trainers take the same
option (`AppearanceConfig`): the Gaussians transform a whole render, the NeRF each ray by its image.

Exposure (`exposure: auto`, on by default) is the part of a photo's colour its camera recorded: a phone on
automatic exposure lets in less light for a frame holding sky than for one of shade, and the same surface comes
out brighter in the second (monstree's photos span 0.9 stops; its SfM points' pixel values rise as exposure^0.34
from one photo to another). The model's colours are those of a photo at the training photos' mean log exposure;
a photo of log exposure `e` (EXIF time x ISO / f-number^2, `ImageInfo.exposure`) sees them times
`2^(gain (e - reference))`, the one `gain` learned with the model (as Block-NeRF conditions appearance on
exposure). A test view is rendered at the exposure its EXIF records: metadata of the photo, none of its pixels.
A photo whose EXIF records none (an edited copy, a screenshot among the photos), in training or test, is at the
reference exposure; the model is on when at least half the training photos record one and those differ.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from pydantic import BaseModel, Field
from torch import Tensor


class AppearanceConfig(BaseModel):
    """The appearance fields of both radiance trainers' configs."""

    appearance: Literal["none", "affine"] = Field("none", description="per-image appearance compensation: affine "
                                                  "= an affine colour per training image (exposure, white "
                                                  "balance); test views are scored without it")
    lr_appearance: float = Field(5e-3, gt=0, description="Adam step of the per-image colour transforms")
    exposure: Literal["auto", "none"] = Field("auto", description="auto = when at least half the training photos' "
                                              "EXIF record their exposure and those differ, a render is scaled by "
                                              "2^(gain (e - mean e)) for a photo of log exposure e, the gain "
                                              "learned; test views are rendered at their own EXIF exposure, photos "
                                              "that record none at the mean")
    lr_exposure: float = Field(1e-2, gt=0, description="Adam step of the exposure gain")


class AffineColor(torch.nn.Module):
    """`n` affine colour transforms, one per training image."""

    def __init__(self, n: int):
        super().__init__()
        self.matrix = torch.nn.Parameter(torch.eye(3).repeat(n, 1, 1))  # (n, 3, 3)
        self.offset = torch.nn.Parameter(torch.zeros(n, 3))  # (n, 3)

    def transform(self, index: int | Tensor) -> tuple[Tensor, Tensor]:
        """A (3, 3), b (3,) of training image `index` (A (N, 3, 3), b (N, 3) for an index tensor (N,)), centred
        so that the mean over the images is the identity: the model's own colours are then those of the average
        photo, not of whichever one the training drifts to (a model twice as bright with every A halved renders
        the same, so without the centring the model's colours, which test views are scored with, are free to
        drift)."""
        eye = torch.eye(3, device=self.matrix.device)
        return (self.matrix[index] - self.matrix.mean(0) + eye), (self.offset[index] - self.offset.mean(0))

    def forward(self, rgb: Tensor, index: int) -> Tensor:
        """rgb (H, W, 3) of training image `index` -> its transformed colours (H, W, 3)."""
        matrix, offset = self.transform(index)
        return rgb @ matrix.T + offset

    def per_ray(self, rgb: Tensor, index: Tensor) -> Tensor:
        """rgb (N, 3) of rays from training images `index` (N,) long -> their transformed colours (N, 3)."""
        matrix, offset = self.transform(index)
        return torch.einsum("nij,nj->ni", matrix, rgb) + offset


class ExposureGain(torch.nn.Module):
    """The training photos' EXIF exposures as a brightness gain (module docstring): one learned `gain`, 0 at the
    start, and the `reference` log exposure (the training photos' mean) at which the model's colours are."""

    def __init__(self, reference: float, gain: float = 0.0):
        super().__init__()
        self.reference = float(reference)
        self.gain = torch.nn.Parameter(torch.tensor(float(gain)))

    def scale(self, exposure: float | Tensor) -> Tensor:
        """The factor on the colours of a photo of log exposure `exposure` (a float, or (N,) for N rays)."""
        return torch.exp2(self.gain * (torch.as_tensor(exposure, dtype=self.gain.dtype, device=self.gain.device)
                                       - self.reference))

    def values(self) -> dict[str, float]:
        """reference and gain as a checkpoint keeps them: `ExposureGain(**values)` restores the model."""
        return {"reference": self.reference, "gain": float(self.gain.detach())}

    def meta(self) -> dict[str, float]:
        """What a saved model keeps (its model.json's `exposure`), for `exposure_scale`."""
        return {k: round(v, 6) for k, v in self.values().items()}


def at_exposure(rgb: Tensor, model: ExposureGain | None, exposure: float | None) -> Tensor:
    """rgb (..., 3) of a view of log exposure `exposure` as the exposure `model` sees it: unchanged without a
    model or a recorded exposure (the reference exposure)."""
    return rgb if model is None or exposure is None else rgb * model.scale(exposure)


def exposure_model(cfg: AppearanceConfig, exposures: Sequence[float | None]) -> ExposureGain | None:
    """The exposure model for training photos of these log exposures (None where a photo's EXIF records none), or
    None when `exposure_off` says why not. The reference is the mean of the recorded ones; the photos without one
    are trained at it."""
    if exposure_off(cfg, exposures) is not None:
        return None
    recorded = [e for e in exposures if e is not None]
    return ExposureGain(sum(recorded) / len(recorded))


def exposure_off(cfg: AppearanceConfig, exposures: Sequence[float | None]) -> str | None:
    """Why there is no exposure model for training photos of these log exposures, in words for the report; None
    when there is one: `exposure: none`, fewer than half the photos (or than two) recording one, or those all
    alike (nothing to learn)."""
    recorded = [e for e in exposures if e is not None]
    if cfg.exposure == "none":
        return "off (exposure: none)"
    if len(recorded) < max(2, (len(exposures) + 1) // 2):
        return (f"off: {len(recorded)} of {len(exposures)} training photo(s) record an EXIF exposure, at least half "
                "are needed")
    if max(recorded) - min(recorded) < 1e-3:
        return f"off: the {len(recorded)} training photos' EXIF exposures are all alike"
    return None


def exposure_scale(meta: dict[str, Any], exposure: float | None) -> float:
    """The factor on a saved model's render of a view of log exposure `exposure`: from the model.json's
    `exposure` ({reference, gain}); 1 when the model has none or the view records none (a novel view, an orbit
    frame: rendered at the reference exposure)."""
    saved = meta.get("exposure")
    if not saved or exposure is None:
        return 1.0
    return float(2.0 ** (saved["gain"] * (exposure - saved["reference"])))
