"""The 3D Gaussian model: parameters, initialisation and saving.

Parameters are stored as gsplat's trainer stores them, unconstrained: `means` (N, 3) world frame,
`scales` (N, 3) log standard deviations, `quats` (N, 4) (w, x, y, z) unnormalised, `opacities` (N,) logits,
`sh0` (N, 1, 3) and `shN` (N, K - 1, 3) SH coefficients (K = (degree + 1)^2), and with them an optional env map
(`radiance.envmap`) for what they leave uncovered. On disk: safetensors (the env map's texture as `envmap`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy.spatial import cKDTree
from torch import Tensor

from recon3d.errors import DataError
from recon3d.io.weights import read_weights, write_weights
from recon3d.radiance.envmap import EnvMap
from recon3d.radiance.sh import num_coeffs, rgb_to_sh

NAMES = ("means", "scales", "quats", "opacities", "sh0", "shN")


@dataclass
class GaussianModel:
    params: torch.nn.ParameterDict
    sh_degree: int  # the largest degree the coefficients hold
    envmap: EnvMap | None = None  # what the pixels the Gaussians leave uncovered see (None: the background colour)

    def __len__(self) -> int:
        return self.params["means"].shape[0]

    @classmethod
    def from_points(cls, xyz: np.ndarray, rgb: np.ndarray, sh_degree: int = 3, init_opacity: float = 0.1,
                    init_scale: float = 1.0, device: str = "cpu") -> GaussianModel:
        """Isotropic Gaussians at `xyz` (N, 3) world, coloured `rgb` (N, 3) in [0, 1], each as wide as the mean
        distance to its 3 nearest neighbours times `init_scale` (as 3DGS and gsplat)."""
        xyz = np.asarray(xyz, np.float64)
        if xyz.ndim != 2 or xyz.shape[1] != 3 or len(xyz) < 4:
            raise DataError(f"Gaussians need at least 4 initial points (N, 3), got shape {xyz.shape}",
                            "give the scene more sparse points, or use init: random")
        dist, _ = cKDTree(xyz).query(xyz, k=4)
        dist = np.sqrt((dist[:, 1:] ** 2).mean(-1)).clip(min=1e-7)
        n = len(xyz)
        sh = torch.zeros(n, num_coeffs(sh_degree), 3)
        sh[:, 0] = rgb_to_sh(torch.tensor(rgb, dtype=torch.float32))
        quats = torch.zeros(n, 4)
        quats[:, 0] = 1
        tensors = {
            "means": torch.tensor(xyz, dtype=torch.float32),
            "scales": torch.log(torch.as_tensor(dist * init_scale, dtype=torch.float32))[:, None].repeat(1, 3),
            "quats": quats,
            "opacities": torch.full((n,), math.log(init_opacity / (1 - init_opacity))),
            "sh0": sh[:, :1].contiguous(),
            "shN": sh[:, 1:].contiguous(),
        }
        return cls.from_tensors(tensors, sh_degree, device)

    @classmethod
    def from_tensors(cls, tensors: dict[str, Tensor], sh_degree: int, device: str = "cpu") -> GaussianModel:
        missing = [k for k in NAMES if k not in tensors]
        if missing:
            raise DataError(f"a Gaussian model needs {', '.join(NAMES)}; missing {', '.join(missing)}",
                            "pass a file written by recon3d (model.safetensors) or a 3DGS .ply")
        params = torch.nn.ParameterDict({k: torch.nn.Parameter(tensors[k].float().to(device).contiguous())
                                         for k in NAMES})
        return cls(params, sh_degree)

    # -- activated values ------------------------------------------------------------------------------

    @property
    def means(self) -> Tensor:
        return self.params["means"]

    @property
    def scales(self) -> Tensor:
        """(N, 3) standard deviations."""
        return torch.exp(self.params["scales"])

    @property
    def quats(self) -> Tensor:
        return self.params["quats"]

    @property
    def opacities(self) -> Tensor:
        """(N,) in (0, 1)."""
        return torch.sigmoid(self.params["opacities"])

    @property
    def sh(self) -> Tensor:
        """(N, K, 3) SH coefficients."""
        return torch.cat([self.params["sh0"], self.params["shN"]], 1)

    # -- files -----------------------------------------------------------------------------------------

    def save(self, path: str | Path) -> Path:
        tensors = {**self.params, **({} if self.envmap is None else {"envmap": self.envmap.texture.detach()})}
        return write_weights(path, tensors, {"format": "recon3d-gaussians", "sh_degree": str(self.sh_degree)})

    @classmethod
    def load(cls, path: str | Path, device: str = "cpu") -> GaussianModel:
        path = Path(path)
        if not path.is_file():
            raise DataError(f"no Gaussian model at {path}", "train one first (recon3d splat) or pass its file")
        tensors, meta = read_weights(path)
        model = cls.from_tensors(tensors, int(meta.get("sh_degree", 3)), device)
        if "envmap" in tensors:
            model.envmap = EnvMap.from_texture(tensors["envmap"]).to(device)
        return model
