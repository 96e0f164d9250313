"""Pipelines as data: a YAML list of nodes, validated before anything runs.

```yaml
name: demo
nodes:
  - {id: ingest, stage: ingest}
  - {id: check, stage: evaluate, after: [ingest], preset: default, overrides: {max_position_rmse: 1e-6}}
```
A node's config is the stage's defaults, then `configs/<stage>/<preset>.yaml`, then `overrides`, then
`--set node.key=value` from the command line, validated by the stage's pydantic model.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from recon3d import paths, stages
from recon3d.errors import ConfigError
from recon3d.stages.base import Stage, StageConfig


class NodeSpec(BaseModel):
    """One node of a pipeline file."""

    model_config = ConfigDict(extra="forbid")
    id: str = Field(description="unique name of the node; its cache folder and report carry it")
    stage: str = Field(description="registered stage name (see `recon3d stages`)")
    preset: str = Field("default", description="configs/<stage>/<preset>.yaml")
    overrides: dict[str, Any] = Field(default_factory=dict, description="config keys set on top of the preset")
    after: list[str] = Field(default_factory=list, description="ids of the nodes whose scenes this one reads")


class PipelineSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    description: str = ""
    nodes: list[NodeSpec]


class Node:
    """A validated node: its stage and config resolved."""

    def __init__(self, spec: NodeSpec, stage: Stage, config: StageConfig):
        self.id, self.after, self.stage, self.config = spec.id, list(spec.after), stage, config


def _yaml(path: Path, what: str) -> dict[str, Any]:
    """A YAML file holding a mapping (empty: {}); ConfigError naming it otherwise."""
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, ValueError, RecursionError) as exc:  # ValueError: UnicodeDecodeError
        raise ConfigError(f"{what} {path} is not valid YAML ({(str(exc).splitlines() or [''])[0]})",
                          "fix the file's syntax") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{what} {path} holds a {type(loaded).__name__}, not a mapping of keys",
                          "fix the file: it holds `key: value` lines at the top level")
    return loaded


def pipeline_path(name_or_path: str) -> Path:
    """A pipeline file given as a path, or as a name in pipelines/."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") and p.is_file():
        return p
    named = paths.PIPELINE_DIR / f"{name_or_path}.yaml"
    if named.is_file():
        return named
    known = sorted(f.stem for f in paths.PIPELINE_DIR.glob("*.yaml"))
    raise ConfigError(f"no pipeline {name_or_path!r}", f"pass a YAML file or one of: {', '.join(known)}")


def validation_message(exc: ValidationError, where: str) -> str:
    """One line per problem, naming the bad key: `node 'check': unknown key 'tolerence'`."""
    parts = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        if not err["loc"] and err["type"] == "value_error":  # a rule across keys: its message says what to do
            parts.append(f"{where}: {err['msg'].removeprefix('Value error, ')}")
        elif err["type"] == "extra_forbidden":
            parts.append(f"{where}: unknown key {key!r}")
        elif err["type"] == "missing":
            parts.append(f"{where}: missing key {key!r}")
        else:
            parts.append(f"{where}: {key}: {err['msg']} (got {err.get('input')!r})")
    return "; ".join(parts)


def resolve_config(stage: Stage, preset: str, overrides: dict[str, Any], where: str) -> StageConfig:
    """Stage defaults < preset file < overrides, validated."""
    values: dict[str, Any] = {}
    preset_file = paths.CONFIG_DIR / stage.name / f"{preset}.yaml"
    if preset_file.is_file():
        values.update(_yaml(preset_file, "preset"))
    elif preset != "default":
        raise ConfigError(f"{where}: no preset {preset!r} for stage {stage.name}", f"expected {preset_file}")
    values.update(overrides)
    odd = [k for k in values if not isinstance(k, str)]
    if odd:
        raise ConfigError(f"{where}: config key {odd[0]!r} is not a name", f"{stage.name} takes: "
                          f"{', '.join(stage.config.model_fields)}")
    try:
        return stage.config(**values)
    except ValidationError as exc:
        raise ConfigError(validation_message(exc, where), config_fix(exc, stage)) from None


def config_fix(exc: ValidationError, stage: Stage) -> str:
    """What to do about the first problem: the key meant, for a misspelt one (and every key the stage takes, where
    none is near); what the key means, for a bad value; where the keys are explained, for a rule across keys."""
    fields = stage.config.model_fields
    err = exc.errors()[0]
    key = str(err["loc"][0]) if err["loc"] else ""
    if err["type"] == "extra_forbidden":
        near = difflib.get_close_matches(key, list(fields), n=1, cutoff=0.6)
        if near:
            return f"did you mean {near[0]!r}? (`recon3d stages` lists every key of {stage.name})"
        return f"{stage.name} takes: {', '.join(fields)}"
    if key in fields and fields[key].description:
        return f"{key}: {fields[key].description}"
    return f"`recon3d stages` lists every key of {stage.name} with its meaning"


def parse_sets(sets: list[str]) -> dict[str, dict[str, Any]]:
    """`["check.max_position_rmse=1e-3"]` -> `{"check": {"max_position_rmse": 0.001}}` (values as YAML)."""
    out: dict[str, dict[str, Any]] = {}
    for item in sets:
        key, sep, value = item.partition("=")
        node, dot, field = key.partition(".")
        if not sep or not dot or not node or not field:
            raise ConfigError(f"--set {item!r} is not of the form node.key=value", "e.g. --set check.require_pass=true")
        try:
            out.setdefault(node, {})[field] = yaml.safe_load(value) if value else ""
        except (yaml.YAMLError, RecursionError) as exc:
            raise ConfigError(f"--set {item!r}: the value is not valid YAML ({(str(exc).splitlines() or [''])[0]})",
                              "quote it, e.g. --set 'node.key=\"text\"'") from None
    return out


def load_pipeline(source: str | Path, sets: dict[str, dict[str, Any]] | None = None,
                  data: str | Path | None = None) -> tuple[str, list[Node]]:
    """Read, validate and topologically sort a pipeline. Every error is raised before anything runs.

    `sets` are `--set` overrides per node; `data` (from `--data`) sets `path` on every ingest node.
    """
    spec, where = read_spec(source)
    return build_nodes(spec, where, sets, data)


def read_spec(source: str | Path) -> tuple[PipelineSpec, str]:
    """A pipeline file (path or name in pipelines/) as a validated spec, and its file name for messages."""
    path = pipeline_path(str(source))
    try:
        return PipelineSpec.model_validate(_yaml(path, "pipeline")), path.name
    except ValidationError as exc:
        raise ConfigError(validation_message(exc, f"pipeline {path.name}"),
                          "a pipeline has `name`, `description` and `nodes` with id, stage, preset, overrides, after")\
            from None


def build_nodes(spec: PipelineSpec, where: str, sets: dict[str, dict[str, Any]] | None = None,
                data: str | Path | None = None) -> tuple[str, list[Node]]:
    """Validate a spec (ids, links, configs) and sort it; see `load_pipeline`."""
    ids = [n.id for n in spec.nodes]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise ConfigError(f"pipeline {where}: node id {dupes[0]!r} is used twice", "give every node its own id")
    sets = sets or {}
    for node_id in sets:
        if node_id not in ids:
            raise ConfigError(f"--set names node {node_id!r}, which pipeline {where} does not have",
                              f"its nodes: {', '.join(ids)}")
    for n in spec.nodes:
        for parent in n.after:
            if parent not in ids:
                raise ConfigError(f"pipeline {where}: node {n.id!r} runs after {parent!r}, which does not exist",
                                  f"its nodes: {', '.join(ids)}")
    order = toposort({n.id: n.after for n in spec.nodes}, where)
    by_id = {n.id: n for n in spec.nodes}
    nodes = []
    for node_id in order:
        n = by_id[node_id]
        try:
            stage = stages.get(n.stage)
        except ConfigError as exc:
            raise ConfigError(f"pipeline {where}, node {n.id!r}: {exc.problem}", exc.fix) from None
        # one folder, one key: `photos/`, `./photos` and its absolute path share their cached nodes
        from_data = {}
        if data is not None and stage.name == "ingest":
            from_data = {"path": str(Path(data).expanduser().resolve())}
        cfg = resolve_config(stage, n.preset, {**n.overrides, **from_data, **sets.get(n.id, {})},
                             f"pipeline {where}, node {n.id!r}")
        nodes.append(Node(n, stage, cfg))
    return spec.name, nodes


def toposort(deps: dict[str, list[str]], where: str) -> list[str]:
    """Kahn's algorithm, stable in file order; a cycle is a ConfigError naming its nodes."""
    remaining = {k: list(v) for k, v in deps.items()}
    order: list[str] = []
    while remaining:
        ready = [k for k, parents in remaining.items() if all(p in order for p in parents)]
        if not ready:
            cycle = " -> ".join(sorted(remaining))
            raise ConfigError(f"pipeline {where} has a cycle among nodes: {cycle}", "remove one of their `after` links")
        for k in ready:
            order.append(k)
            del remaining[k]
    return order
