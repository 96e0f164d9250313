"""recon3d's CPU Gaussian kernels (`_composite.cpp`, `_project.cpp`), built and loaded by `radiance.native`."""

from __future__ import annotations

from pathlib import Path

from recon3d.radiance.native import F32, I64, I, Library, P

LIBRARY = Library(
    "gaussians",
    tuple(Path(__file__).with_name(name) for name in ("_composite.cpp", "_project.cpp")),
    {
        "bin_gaussians": (I64, [I, I, I, I, P, P, P, P, P, I64]),
        "composite_forward": (None, [I] * 5 + [P] * 11),
        "composite_backward": (None, [I] * 5 + [P] * 16),
        "project_sh": (I64, [I, I64] + [P] * 5 + [I, I, P, P, I, I] + [F32] * 3 + [P] * 7),
        "project_sh_backward": (None, [I, I64] + [P] * 4 + [I, I, P, P, I, I, F32] + [P] * 11),
        "depth_order": (None, [I64, P, P]),
    },
)
load = LIBRARY.load
