"""compare: put the image evaluations of several trained models in one table, only when their protocols match.

Reads every `evaluate` result of kind `images` in the scene (one per method and seed, from the parallel
branches of `pipelines/compare.yaml`), refuses them when any two protocols differ (naming the field and the
two nodes), and groups them by method: mean and sample standard deviation (ddof 1) over seeds of test PSNR and
SSIM (plain and colour-corrected),
training time and steps, render FPS, peak memory during training, model size on disk, the Gaussian count
or the voxel grid's resolution, plus each seed's time-to-PSNR curve. Written to the scene's metrics and to
`OUT/compare.json`; the HTML report (`recon3d report OUT`) draws the table, the curves, the renders side by
side with their error maps, and the protocol.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import Field

from recon3d.errors import StageError
from recon3d.io.files import write_json
from recon3d.radiance.protocol import Protocol
from recon3d.scene import Scene
from recon3d.stages.base import Stage, StageConfig, StageContext

# table columns: name -> where in an evaluation's metrics
FIGURES = {
    "psnr": ("psnr",),
    "ssim": ("ssim",),
    "psnr_cc": ("psnr_cc",),
    "ssim_cc": ("ssim_cc",),
    "lpips": ("lpips",),
    "train_seconds": ("train", "train_seconds"),
    "steps": ("train", "steps"),
    "fps": ("fps",),
    "peak_rss_mb": ("train", "peak_rss_mb"),
    "model_mb": ("train", "model_bytes"),
    "gaussians": ("train", "gaussians"),
    "grid_resolution": ("train", "resolution"),
}


class CompareConfig(StageConfig):
    evaluations: list[str] = Field(default_factory=list, description="evaluate node ids to compare "
                                   "([] = every image evaluation in the scene)")


def run(scene: Scene, cfg: CompareConfig, ctx: StageContext | None = None) -> Scene:
    ctx = ctx or StageContext.standalone("compare")
    found = scene.metrics_of_kind("images")
    missing = [e for e in cfg.evaluations if e not in found]
    if missing:
        raise StageError(f"compare: no image evaluation from node(s) {', '.join(missing)} in the scene",
                         f"the scene has: {', '.join(found) or 'none'}; put evaluate (kind: images) nodes before it")
    results = {k: found[k] for k in cfg.evaluations} if cfg.evaluations else found
    if not results:
        raise StageError("compare: the scene has no image evaluations", "put evaluate (kind: images) nodes before it")
    check_protocols(results)
    methods: dict[str, list[str]] = {}
    for node, m in results.items():
        methods.setdefault(m["model_kind"], []).append(node)
    table = [summarise(kind, [results[n] for n in nodes], nodes) for kind, nodes in methods.items()]
    unequal = stopped_before_budget(results)
    comparison = {
        "kind": "comparison",
        "protocol": next(iter(results.values()))["protocol"],
        "table": table,
        "curves": {n: {"method": m["model_kind"], "seed": m.get("seed"), "curve": m["train"].get("curve", [])}
                   for n, m in results.items()},
        "evaluations": list(results),
        "stopped_before_budget": unequal,
    }
    write_json(ctx.published / "compare.json", comparison)
    for row in table:
        ctx.count(f"{row['method']}_psnr", row["psnr"])
    ctx.count("methods", list(methods))
    ctx.count("results", len(results))
    if unequal:
        ctx.count("stopped_before_budget", "; ".join(unequal))
    return scene.replace(metrics={**scene.metrics, ctx.node_id: comparison})


def check_protocols(results: dict[str, dict]) -> None:
    """StageError naming the first field in which two results' protocols differ."""
    nodes = list(results)
    protocols = {n: Protocol(**results[n]["protocol"]) for n in nodes}
    base = protocols[nodes[0]]
    for n in nodes[1:]:
        diff = base.differences(protocols[n])
        if diff:
            field = diff[0]
            raise StageError(f"compare: the protocols of {nodes[0]} and {n} differ in {field!r} "
                             f"({getattr(base, field)!r} vs {getattr(protocols[n], field)!r})"
                             + (f" and {len(diff) - 1} more field(s)" if len(diff) > 1 else ""),
                             "train and evaluate every method under one protocol (same data, split, background, "
                             "resolution, budget, device, threads) before comparing them")


def stopped_before_budget(results: dict[str, dict]) -> list[str]:
    """The results whose training ended at its step cap under a time budget (a budget is the same for every
    method, a step cap is each method's own): `gaussians-s0 stopped at its 200 steps after 2.5 s of the 15 s
    budget`. Such a comparison is not at equal time; the table says so rather than refusing it (lego's
    Gaussians end their 10,000 steps before a 20-minute budget)."""
    said = []
    for node, m in results.items():
        budget_s = 60 * float(m["protocol"].get("budget_min") or 0)
        train = m.get("train", {})
        if budget_s and train.get("stopped_by") == "steps":
            seconds = train.get("train_seconds") or 0.0
            said.append(f"{m.get('model', node)} stopped at its {train.get('steps')} steps after {seconds:.1f} s of "
                        f"the {budget_s:g} s budget")
    return said


def summarise(method: str, evaluations: list[dict], nodes: list[str]) -> dict[str, Any]:
    """One table row: mean and sample std (ddof 1) over seeds of each figure (std 0 with one seed; None when
    absent), and what ended each seed's training (`stopped_by`: steps or budget)."""
    row: dict[str, Any] = {"method": method, "seeds": [e.get("seed") for e in evaluations], "nodes": nodes,
                           "stopped_by": [_get(e, ("train", "stopped_by")) for e in evaluations]}
    for name, path in FIGURES.items():
        values = [_get(e, path) for e in evaluations]
        values = [float(v) for v in values if v is not None]
        if name == "model_mb":
            values = [v / 2**20 for v in values]
        row[name] = float(np.mean(values)) if values else None
        row[f"{name}_std"] = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0 if values else None
    return row


def _get(d: dict, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(d, dict) or key not in d:
            return None
        d = d[key]
    return d


STAGE = Stage(
    name="compare",
    version=2,  # 2: ssim_cc, stopped_by per seed, stopped_before_budget; the std over seeds with ddof 1
    config=CompareConfig,
    run=run,
    reads=("metrics",),
    writes=("metrics",),
    summary="radiance-field results side by side: mean +- std over seeds, refused when protocols differ",
)
