"""3D Gaussian Splatting as Markov Chain Monte Carlo (Kheradmand et al. 2024), shaped like gsplat's
`MCMCStrategy`: the same hook as `strategy.DefaultStrategy`, a different way of placing Gaussians.

Every `refine_every` steps (between `refine_start_iter` and `refine_stop_iter`) the dead Gaussians (opacity at
most `min_opacity`) are moved onto live ones drawn with probability proportional to their opacity, and the
count grows by `growth` (5 %, up to the cap) with more such draws, or faster where `cap_at` asks for the cap
by that share of training (a CPU's time budget allows few refinements, and a photo folder's sparse points may be
few: at 5 % a refinement 1,800 points stay under 3,000 in a short run). The cap is `cap_max`, or with
`cap_per_step` that many Gaussians for each step the run will take at its pace, whichever is fewer: a run its
time budget cuts to a fifth of its steps grows to a fifth of the count, as each Gaussian slows every step. A
Gaussian drawn n - 1 times shares its place with its n - 1 copies, their opacity and scale set so that the n of
them render as it did alone (the paper's relocation, eq. 9). Every step, positions get noise shaped by each
Gaussian's covariance and gated by its transparency (the nearly transparent ones explore; the opaque ones stay),
scaled by the position learning rate times `noise_lr` (stochastic gradient Langevin dynamics). Nothing is cloned
by gradient, split or reset.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from recon3d.radiance.gaussians.project import quat_to_rotmat
from recon3d.radiance.gaussians.strategy import extend

N_MAX = 51  # most copies of one Gaussian in one relocation (gsplat's table size)
MAX_RATE = 2.0  # most growth in one refinement, whatever cap_at asks


@dataclass
class MCMCStrategy:
    cap_max: int = 1_000_000
    noise_lr: float = 5e5
    refine_start_iter: int = 500
    refine_stop_iter: int = 25_000
    refine_every: int = 100
    min_opacity: float = 0.005
    growth: float = 0.05  # the count grows by at least this share at each refinement, up to the cap
    cap_at: float = 0.0  # reach the cap by this share of training (steps or time budget); 0 = by `growth` only
    cap_per_step: float = 0.0  # the cap is at most this many Gaussians per step the run will take; 0 = cap_max
    progress: float = 0.0  # how far training is, in [0, 1]: set by the trainer before each step

    def initialize_state(self, n: int) -> dict[str, Any]:
        binoms = torch.zeros((N_MAX, N_MAX))
        for a in range(N_MAX):
            for b in range(a + 1):
                binoms[a, b] = math.comb(a, b)
        return {"binoms": binoms}

    def step_post_backward(self, params: torch.nn.ParameterDict, optimizers: dict[str, torch.optim.Optimizer],
                           state: dict[str, Any], step: int, meta: dict[str, Any], width: int, height: int,
                           scene_scale: float) -> dict[str, int]:
        """Relocate the dead and add Gaussians at refinement steps; inject position noise every step."""
        changed: dict[str, int] = {}
        if self.refine_start_iter < step < self.refine_stop_iter and step % self.refine_every == 0:
            changed["relocated"] = self._relocate(params, optimizers, state["binoms"])
            changed["added"] = self._add(params, optimizers, state["binoms"], step)
        inject_noise(params, optimizers["means"].param_groups[0]["lr"] * self.noise_lr)
        return changed

    @torch.no_grad()
    def _relocate(self, params, optimizers, binoms: Tensor) -> int:
        opacities = torch.sigmoid(params["opacities"])
        dead = opacities <= self.min_opacity
        n = int(dead.sum())
        alive = torch.nonzero(~dead).ravel()
        if n == 0 or len(alive) == 0:
            return 0
        sampled = alive[torch.multinomial(opacities[alive], n, replacement=True)]
        self._share(params, optimizers, sampled, binoms)
        dead_rows = torch.nonzero(dead).ravel()
        for key in list(params.keys()):
            params[key].data[dead_rows] = params[key].data[sampled]
        _clear_moments(params, optimizers, dead_rows)
        return n

    def cap(self, step: int) -> int:
        """The most Gaussians at `step`: `cap_max`, or fewer with `cap_per_step`: that many for each step the run
        will take, counted at this run's pace (`step / progress`; all its steps when they end it first)."""
        if self.cap_per_step <= 0 or self.progress <= 0:
            return self.cap_max
        return min(self.cap_max, round(self.cap_per_step * step / self.progress))

    def target(self, current: int, step: int) -> int:
        """How many Gaussians after this step's refinement: `growth` more, or more still when `cap_at` asks for
        the cap by then: the rate that, kept at each refinement until that point of training (counted at this
        run's pace, `step / progress` steps per unit of progress), ends at the cap — at most a doubling, each
        Gaussian drawn about once (a run too short for that keeps doubling until the cap)."""
        cap = self.cap(step)
        rate = 1.0 + self.growth
        if self.cap_at > 0 and self.progress > 0:
            left = round(step * (self.cap_at / self.progress - 1.0) / self.refine_every, 6)  # refinements after this
            needed = MAX_RATE if left < 1 else (cap / current) ** (1.0 / (left + 1))
            rate = min(MAX_RATE, max(rate, needed))
        return min(cap, int(rate * current))

    @torch.no_grad()
    def _add(self, params, optimizers, binoms: Tensor, step: int) -> int:
        current = len(params["means"])
        n = max(0, self.target(current, step) - current)
        if n == 0:
            return 0
        sampled = torch.multinomial(torch.sigmoid(params["opacities"]), n, replacement=True)
        self._share(params, optimizers, sampled, binoms)
        extend(params, optimizers, {}, lambda key, p: p[sampled])
        return n

    def _share(self, params, optimizers, sampled: Tensor, binoms: Tensor) -> None:
        """Give each drawn Gaussian the opacity and scale it keeps when it and its copies (one per draw) share its
        place, and clear its Adam moments."""
        ratios = torch.bincount(sampled, minlength=len(params["means"]))[sampled] + 1
        opacity, scale = relocation(torch.sigmoid(params["opacities"][sampled]),
                                    torch.exp(params["scales"][sampled]), ratios, binoms)
        opacity = opacity.clamp(self.min_opacity, 1.0 - torch.finfo(torch.float32).eps)
        params["opacities"].data[sampled] = torch.logit(opacity)
        params["scales"].data[sampled] = torch.log(scale)
        _clear_moments(params, optimizers, sampled)


def _clear_moments(params: torch.nn.ParameterDict, optimizers: dict[str, torch.optim.Optimizer], rows: Tensor) -> None:
    """Zero the Adam moments of `rows` of every parameter: those Gaussians start afresh."""
    for key in list(params.keys()):
        for moment in optimizers[key].state.get(params[key], {}).values():
            if isinstance(moment, Tensor) and moment.ndim and moment.shape[0] == len(params[key]):
                moment[rows] = 0


def relocation(opacity: Tensor, scale: Tensor, ratio: Tensor, binoms: Tensor) -> tuple[Tensor, Tensor]:
    """The paper's eq. 9: a Gaussian of opacity o (N,) and scales s (N, 3) replaced by n (N,) copies that render
    as it did: each of opacity 1 - (1 - o)^(1/n) and scales s * o / sum_{i=1..n} sum_{k<i} C(i-1, k) (-1)^k
    o_new^(k+1) / sqrt(k + 1). n = 1 returns (o, s)."""
    dtype, opacity = opacity.dtype, opacity.double()  # an alternating sum of binomials up to C(50, 25)
    n = ratio.clamp(1, N_MAX).double()
    new_opacity = 1.0 - (1.0 - opacity) ** (1.0 / n)
    k = torch.arange(N_MAX, dtype=torch.float64, device=opacity.device)
    # term[k] = (-1)^k / sqrt(k + 1) * o_new^(k + 1); inner[i] = sum_k C(i - 1, k) term[k] for i = 1..N_MAX
    term = (-1.0) ** k / torch.sqrt(k + 1) * new_opacity[:, None] ** (k + 1)  # (N, K)
    inner = term @ binoms.to(opacity).T  # (N, N_MAX): row i - 1 of binoms holds C(i - 1, k)
    used = torch.arange(1, N_MAX + 1, device=opacity.device)[None, :] <= n[:, None]
    denominator = (inner * used).sum(dim=1)
    return new_opacity.to(dtype), scale * (opacity / denominator).to(dtype)[:, None]


GATE_MIN = 1e-6  # inject_noise leaves out Gaussians whose gate is below this (opacity above 0.14)


@torch.no_grad()
def inject_noise(params: torch.nn.ParameterDict, scaler: float) -> None:
    """Move each mean by covariance x standard normal noise x `scaler`, gated by a steep sigmoid of its
    transparency (1 - opacity around 0.995, slope 100): transparent Gaussians move, opaque ones hardly."""
    gate = torch.sigmoid(100.0 * ((1.0 - torch.sigmoid(params["opacities"])) - 0.995))
    noise = torch.randn_like(params["means"]) * (gate * scaler)[:, None]
    moving = torch.nonzero(gate > GATE_MIN).squeeze(1)  # the opaque rest would move by under 1e-6 of it
    rot = quat_to_rotmat(params["quats"][moving])
    local = (rot * noise[moving, :, None]).sum(1) * torch.exp(params["scales"][moving]) ** 2  # S^2 R^T noise
    params["means"].data[moving] += (rot * local[:, None, :]).sum(-1)  # R S^2 R^T noise: covariance x noise
