"""recon3d's CPU radiance-field kernels (`_field.cpp`), built and loaded by `radiance.native`."""

from __future__ import annotations

from pathlib import Path

from recon3d.radiance.native import F32, I64, I, Library, P

LIBRARY = Library(
    "nerf",
    (Path(__file__).with_name("_field.cpp"),),
    {
        "march": (I64, [I, I64, P, P, P, P, P, I, F32, F32, P, F32, P, I, I, F32, F32, F32, P, P, P, I64]),
        "gather": (None, [I, I64, P, P, I, I, P, P]),
        "scatter": (I64, [I64, P, P, I, I, P, P, P, P, I64]),
        "render_rays": (None, [I, I64] + [P] * 9),
        "render_rays_backward": (None, [I, I64] + [P] * 11),
        "tv_grad": (None, [I, I64, P, I, I, P, P, P]),
        "sparse_adam": (None, [I, I64, P, I, P, P, P, P, P, F32, F32, F32, F32, I64]),
    },
)
load = LIBRARY.load
