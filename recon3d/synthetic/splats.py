"""A synthetic NeRF-synthetic-style dataset rendered from known 3D Gaussians: exact truth for radiance fields.

`write_splat_dataset` samples Gaussians in a ball, renders them with recon3d's rasterizer (the PyTorch
reference) from an orbit of cameras, and writes a Blender folder (`transforms_{train,test}.json`, OpenGL
camera-to-world, RGBA PNGs whose alpha is the rendered coverage) that ingest reads like the real
NeRF-synthetic scenes. A radiance field trained on it can reach the truth, so tests can set PSNR bands.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from recon3d.io import nerfstudio
from recon3d.io.files import atomic_write, write_json
from recon3d.radiance.gaussians.rasterize import rasterize
from recon3d.synthetic.rigs import orbit


def splat_world(n: int, seed: int) -> dict[str, torch.Tensor]:
    """n Gaussians in the unit ball: means (n, 3), scales (n, 3) standard deviations, quats (n, 4) wxyz,
    opacities (n,), colours (n, 3) in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    direction = torch.nn.functional.normalize(torch.randn(n, 3, generator=g), dim=-1)
    means = direction * torch.rand(n, 1, generator=g) ** (1 / 3)
    return {"means": means, "scales": 0.04 + 0.12 * torch.rand(n, 3, generator=g),
            "quats": torch.randn(n, 4, generator=g), "opacities": 0.5 + 0.45 * torch.rand(n, generator=g),
            "colors": torch.rand(n, 3, generator=g)}


def write_splat_dataset(out: str | Path, n_views: int = 16, width: int = 64, height: int = 48,
                        n_gaussians: int = 300, test_every: int = 4, seed: int = 0) -> Path:
    """Write the dataset into `out`; every `test_every`-th view goes to the test split. Returns `out`."""
    from PIL import Image

    out = Path(out)
    world = splat_world(n_gaussians, seed)
    cams = orbit(n_views, radius=4.0, height=1.0, target=(0.0, 0.0, 0.0), seed=seed)
    focal = 1.2 * width
    K = torch.tensor([[focal, 0, width / 2], [0, focal, height / 2], [0, 0, 1]], dtype=torch.float32)
    frames: dict[str, list] = {"train": [], "test": []}
    for i, cam_from_world in enumerate(cams):
        with torch.no_grad():
            rgb, alpha, _, _ = rasterize(world["means"], world["quats"], world["scales"], world["opacities"],
                                         world["colors"], torch.as_tensor(cam_from_world, dtype=torch.float32),
                                         K, width, height, backend="reference")
        a = alpha.clamp(1e-6, 1)
        straight = (rgb / a).clamp(0, 1)  # rendered on black = premultiplied; PNG alpha is straight
        rgba = torch.cat([straight, alpha], -1).numpy()
        split = "test" if i % test_every == 0 else "train"
        name = f"{split}/r_{i}"
        image = Image.fromarray((rgba * 255 + 0.5).astype(np.uint8), "RGBA")
        atomic_write(out / f"{name}.png", lambda f, im=image: im.save(f, format="PNG"))
        c2w = nerfstudio.cam_from_world_to_opengl_c2w(cam_from_world)
        frames[split].append({"file_path": f"./{name}", "transform_matrix": c2w.tolist()})
    for split, items in frames.items():
        write_json(out / f"transforms_{split}.json",
                   {"camera_angle_x": 2 * math.atan(0.5 * width / focal), "frames": items})
    return out
