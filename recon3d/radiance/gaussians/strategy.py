"""Adaptive density control (3DGS section 5.2), shaped like gsplat's `DefaultStrategy`.

A strategy is a small dataclass with an explicit `state` dict and a hook the trainer calls after each
backward pass; it grows Gaussians where the view-space positional gradient is high (clone the small ones,
split the large ones), prunes the transparent and the huge ones, and resets opacities now and then. Unlike
gsplat's default it also holds a cap on the count (as gsplat's `MCMCStrategy.cap_max`): when growing would
pass `cap_max`, only the Gaussians with the highest gradients grow. Means are taken in a frame centred on the
cameras (the trainer's `radiance.normalize` frame), so "too big" is judged by angular size beyond the cameras:
the sky and far background keep Gaussians as wide as their distance needs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from recon3d.radiance.gaussians.project import quat_to_rotmat


@dataclass
class DefaultStrategy:
    prune_opa: float = 0.005  # prune below this opacity
    grow_grad2d: float = 0.0002  # grow above this mean view-space gradient (NDC units, as gsplat)
    grow_scale3d: float = 0.01  # clone below / split above this largest scale, x scene scale
    prune_scale3d: float = 0.1  # prune above this largest scale, x scene scale x max(1, distance / scene scale)
    refine_start_iter: int = 500
    refine_stop_iter: int = 15_000
    reset_every: int = 3000
    refine_every: int = 100
    cap_max: int = 1_000_000

    def initialize_state(self, n: int) -> dict[str, Any]:
        return {"grad2d": torch.zeros(n), "count": torch.zeros(n)}

    def step_post_backward(self, params: torch.nn.ParameterDict, optimizers: dict[str, torch.optim.Optimizer],
                           state: dict[str, Any], step: int, meta: dict[str, Any], width: int, height: int,
                           scene_scale: float) -> dict[str, int]:
        """Accumulate gradient statistics; at refinement steps grow, prune and reset. Returns what changed."""
        if step >= self.refine_stop_iter:
            return {}
        self._accumulate(state, meta, width, height)
        changed: dict[str, int] = {}
        if step > self.refine_start_iter and step % self.refine_every == 0:
            changed["cloned"], changed["split"] = self._grow(params, optimizers, state, scene_scale)
            changed["pruned"] = self._prune(params, optimizers, state, step, scene_scale)
            state["grad2d"].zero_()
            state["count"].zero_()
        if step % self.reset_every == 0 and step > 0:
            reset_opacities(params, optimizers, 2 * self.prune_opa)
            changed["reset"] = 1
        return changed

    def _accumulate(self, state: dict[str, Any], meta: dict[str, Any], width: int, height: int) -> None:
        grad = meta["means2d"].grad
        if grad is None:
            return
        ids = meta["ids"]
        grad = grad.reshape(-1, 2)
        if grad.shape[0] != ids.shape[0]:  # gsplat gives every Gaussian's row
            grad = grad[ids]
        scaled = grad.detach().to(state["grad2d"].device) * torch.tensor([width / 2, height / 2])
        ids = ids.to(state["grad2d"].device)
        state["grad2d"].index_add_(0, ids, scaled.norm(dim=-1))
        state["count"].index_add_(0, ids, torch.ones(len(ids)))

    @torch.no_grad()
    def _grow(self, params, optimizers, state, scene_scale: float) -> tuple[int, int]:
        avg = state["grad2d"] / state["count"].clamp_min(1)
        high = avg > self.grow_grad2d
        room = self.cap_max - len(params["means"])
        if room <= 0:
            return 0, 0
        small = torch.exp(params["scales"]).max(-1).values.cpu() <= self.grow_scale3d * scene_scale
        # a split adds one net Gaussian, a clone one: keep the strongest gradients within the room left
        if int(high.sum()) > room:
            threshold = torch.topk(avg[high], room).values[-1]
            high &= avg >= threshold
        clone, split = high & small, high & ~small
        n_clone, n_split = int(clone.sum()), int(split.sum())
        if n_clone:
            extend(params, optimizers, state, lambda k, p: p[clone.to(p.device)])
        if n_split:
            split = torch.cat([split, torch.zeros(n_clone, dtype=torch.bool)])
            self._split(params, optimizers, state, split)
        return n_clone, n_split

    def _split(self, params, optimizers, state, mask: Tensor) -> None:
        dev = params["means"].device
        m = mask.to(dev)
        scales = torch.exp(params["scales"][m])
        rot = quat_to_rotmat(params["quats"][m])
        offsets = torch.einsum("nij,bnj->bni", rot, scales * torch.randn(2, *scales.shape, device=dev))

        def make(key: str, p: Tensor) -> Tensor:
            if key == "means":
                return (p[m] + offsets).reshape(-1, 3)
            if key == "scales":
                return torch.log(scales / 1.6).repeat(2, 1)
            return p[m].repeat(2, *[1] * (p.ndim - 1))

        extend(params, optimizers, state, make)
        _remove(params, optimizers, state, torch.cat([mask, torch.zeros(2 * int(mask.sum()), dtype=torch.bool)]))

    def _prune(self, params, optimizers, state, step: int, scene_scale: float) -> int:
        with torch.no_grad():
            drop = torch.sigmoid(params["opacities"]).cpu() < self.prune_opa
            if step > self.reset_every:  # too big for its distance: beyond the cameras, the bound grows with it
                far = (params["means"].norm(dim=-1).cpu() / scene_scale).clamp_min(1.0)
                drop |= torch.exp(params["scales"]).max(-1).values.cpu() > self.prune_scale3d * scene_scale * far
        n = int(drop.sum())
        if n:
            _remove(params, optimizers, state, drop)
        return n


def reset_opacities(params, optimizers, value: float) -> None:
    """Clamp every opacity to at most `value` and clear its Adam moments (3DGS's opacity reset)."""
    with torch.no_grad():
        params["opacities"].clamp_(max=math.log(value / (1 - value)))
    for s in optimizers["opacities"].state.values():
        for key in ("exp_avg", "exp_avg_sq"):
            s[key].zero_()


def _replace(params, optimizers, key: str, new: Tensor, state_fn) -> None:
    """Swap parameter `key` for `new`, carrying its Adam moments through `state_fn(moment) -> new moment`."""
    opt = optimizers[key]
    old = params[key]
    p = torch.nn.Parameter(new.contiguous())
    st = opt.state.pop(old, None)
    opt.param_groups[0]["params"] = [p]
    if st is not None:
        for k in ("exp_avg", "exp_avg_sq"):
            st[k] = state_fn(st[k]).contiguous()
        opt.state[p] = st
    params[key] = p


def extend(params, optimizers, state, make) -> None:
    """Append `make(key, param)` to every parameter; new rows start with zero moments and statistics."""
    n_new = None
    for key in list(params.keys()):
        with torch.no_grad():
            rows = make(key, params[key].data)
        n_new = rows.shape[0]
        _replace(params, optimizers, key, torch.cat([params[key].data, rows]),
                 lambda m, r=rows: torch.cat([m, torch.zeros_like(r)]))
    for k in ("grad2d", "count"):
        if k in state:  # the default strategy's statistics (MCMC keeps none per Gaussian)
            state[k] = torch.cat([state[k], torch.zeros(n_new)])


def _remove(params, optimizers, state, mask: Tensor) -> None:
    """Remove the rows where `mask` (N,) is true from every parameter, its moments and statistics."""
    keep = ~mask
    for key in list(params.keys()):
        k = keep.to(params[key].device)
        _replace(params, optimizers, key, params[key].data[k], lambda m, k=k: m[k])
    for name in ("grad2d", "count"):
        state[name] = state[name][keep]
