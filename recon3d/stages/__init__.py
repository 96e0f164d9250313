"""The stage registry: name -> Stage. Modules import lazily, so the CLI starts fast.

A stage module defines `STAGE = Stage(...)`. Third-party stages join with `register(stage)`.
"""

from __future__ import annotations

import importlib

from recon3d.errors import ConfigError
from recon3d.stages.base import Stage

# stage name -> module that defines STAGE
_MODULES = {
    "ingest": "recon3d.stages.ingest",
    "evaluate": "recon3d.stages.evaluate",
    "calibrate": "recon3d.stages.calibrate",
    "bundle_adjust": "recon3d.stages.bundle_adjust",
    "features": "recon3d.stages.features",
    "match": "recon3d.stages.match",
    "essential": "recon3d.stages.essential",
    "export": "recon3d.stages.export",
    "triangulate": "recon3d.stages.triangulate",
    "gaussians": "recon3d.stages.gaussians",
    "render": "recon3d.stages.render",
    "nerf": "recon3d.stages.nerf",
    "compare": "recon3d.stages.compare",
    "detect": "recon3d.stages.detect", "segment": "recon3d.stages.segment",
    "lift_labels": "recon3d.stages.lift_labels",
    "mesh": "recon3d.stages.mesh",
}
_REGISTERED: dict[str, Stage] = {}


def register(stage: Stage) -> None:
    """Add (or replace) a stage under `stage.name`."""
    _REGISTERED[stage.name] = stage


def names() -> list[str]:
    return sorted(set(_MODULES) | set(_REGISTERED))


def get(name: str) -> Stage:
    """The stage called `name`; ConfigError listing the known ones otherwise."""
    if name in _REGISTERED:
        return _REGISTERED[name]
    if name not in _MODULES:
        raise ConfigError(f"unknown stage {name!r}", f"known stages: {', '.join(names())} (see `recon3d stages`)")
    stage = importlib.import_module(_MODULES[name]).STAGE
    _REGISTERED[name] = stage
    return stage
