"""`recon3d compare`: pipelines/compare.yaml expanded into one branch per method and seed.

The YAML holds one branch per method (`<method>` -> `render-<method>` -> `evaluate-<method>`) after one
ingest, and a `compare` node after the evaluations. Here each requested method's branch is copied per seed
(node ids `<method>-s<seed>`, ...), the seed, the time budget and the hold-out set on its training node,
and every copy's metrics file named after its node, so the branches are independent nodes an executor may
run side by side and every result is scored on the same test views. A folder of photos gets the SfM nodes in
front (`recon3d.photos`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from recon3d.dag.pipeline import Node, NodeSpec, build_nodes, read_spec
from recon3d.errors import ConfigError
from recon3d.photos import for_data

PIPELINE = "compare"

# the training settings that enter the protocol as they are set (background and device resolve per method)
PROTOCOL_SETTINGS = ("max_side", "downscale", "holdout_every", "budget_min")


def parse_list(text: str, what: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise ConfigError(f"--{what} {text!r} names nothing", f"e.g. --{what} " +
                          ("gaussians,nerf" if what == "methods" else "0,1,2"))
    twice = sorted({t for t in items if items.count(t) > 1})
    if twice:  # a seed named twice would run once and count once: the table would not hold what was asked
        raise ConfigError(f"--{what} {text!r} names {', '.join(twice)} more than once", "name each once")
    return items


def compare_pipeline(data: str | Path, methods: list[str], seeds: list[int], budget_min: float,
                     holdout_every: int | None = None, sets: dict[str, dict[str, Any]] | None = None,
                     lpips: tuple[str, str] | None = None) -> tuple[str, list[Node]]:
    """The compare pipeline for `methods` x `seeds`, validated (ConfigError naming a bad method, seed or budget).
    `lpips`: local (AlexNet backbone, LPIPS heads) weight files; every evaluation then scores LPIPS too."""
    spec, where = read_spec(PIPELINE)
    template = {n.id: n for n in spec.nodes}
    known = [n.id for n in spec.nodes if f"evaluate-{n.id}" in template]
    unknown = [m for m in methods if m not in known]
    if unknown or not methods:
        raise ConfigError(f"unknown method(s) {', '.join(map(repr, unknown)) or '(none given)'}",
                          f"choose from: {', '.join(known)}")
    if not budget_min > 0:
        raise ConfigError(f"--budget-min {budget_min:g}: a comparison on equal terms needs a training-time budget",
                          "give minutes > 0, e.g. --budget-min 20 (each method also stops at its step count)")
    if not seeds or any(s < 0 for s in seeds):
        raise ConfigError(f"--seeds {seeds}: seeds are integers >= 0", "e.g. --seeds 0,1,2")
    nodes: list[NodeSpec] = [template["ingest"]]
    evaluations = []
    for method in methods:
        for seed in seeds:
            suffix = f"-s{seed}"
            train, render, evaluate = (template[method], template[f"render-{method}"],
                                       template[f"evaluate-{method}"])
            hold = {} if holdout_every is None else {"holdout_every": holdout_every}
            scorer = {} if lpips is None else {"lpips_backbone": str(lpips[0]), "lpips_heads": str(lpips[1])}
            nodes.append(train.model_copy(update={"id": method + suffix, "overrides": {
                **train.overrides, "seed": seed, "budget_min": budget_min, **hold}}))
            nodes.append(render.model_copy(update={"id": render.id + suffix, "after": [method + suffix],
                                                   "overrides": {**render.overrides, "model": method + suffix}}))
            nodes.append(evaluate.model_copy(update={"id": evaluate.id + suffix, "after": [render.id + suffix],
                                                     "overrides": {**evaluate.overrides, **scorer,
                                                                   "renders": render.id + suffix,
                                                                   "output": f"metrics/{evaluate.id}{suffix}.json"}}))
            evaluations.append(evaluate.id + suffix)
    compare = template["compare"]
    nodes.append(compare.model_copy(update={"after": evaluations,
                                            "overrides": {**compare.overrides, "evaluations": evaluations}}))
    spec = spec.model_copy(update={"nodes": nodes})  # with SfM or point triangulation in front where needed
    name, built = build_nodes(for_data(spec, data), where, per_seed(sets or {}, [n.id for n in nodes]), data)
    trained = [n for n in built if n.id.rpartition("-s")[0] in methods]
    for key in PROTOCOL_SETTINGS:  # what would make compare refuse the results, refused before any training
        values = {n.id: getattr(n.config, key) for n in trained}
        if len(set(values.values())) > 1:
            shown = ", ".join(f"{node} {value!r}" for node, value in values.items())
            raise ConfigError(f"the methods would be trained under different protocols: {key} differs ({shown})",
                              f"set it for every method (--set gaussians.{key}=... --set nerf.{key}=...), or for "
                              "none")
    return name, built



def per_seed(sets: dict[str, dict[str, Any]], ids: list[str]) -> dict[str, dict[str, Any]]:
    """`--set` overrides with a template node's name (`gaussians`, `render-nerf`) given to each of its seeds' nodes
    (`gaussians-s0`, `gaussians-s1`, ...); a seed's own `--set gaussians-s1.key=...` wins over it."""
    out = dict(sets)
    for name, values in sets.items():
        copies = [i for i in ids if i.startswith(name + "-s") and i[len(name) + 2:].isdigit()]
        if copies and name not in ids:
            del out[name]
            for i in copies:
                out[i] = {**values, **sets.get(i, {})}
    return out
