"""Cache keys and folders of DAG nodes (Meshroom's model).

A node's key hashes what can change its output: stage name and version, the validated config, the keys of
its inputs, and a fingerprint of external data the config points at. Its folder
`OUT/cache/<node>-<key[:16]>/` is complete once `done.json` exists; a folder without it is the remains of
an interrupted run and is cleared before the node runs again, all but its `resume/` folder, where long
stages (training) keep checkpoints to resume from.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from recon3d.stages.base import Stage, StageConfig

DONE = "done.json"
RESUME = "resume"  # survives an interrupted run: checkpoints of the same node (same key) to resume from


def node_key(stage: Stage, config: StageConfig, input_keys: list[str], fingerprint: str | None) -> str:
    payload = {
        "stage": stage.name,
        "version": stage.version,
        "config": config.model_dump(mode="json"),
        "inputs": input_keys,
        "external": fingerprint,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def node_dir(out: Path, node_id: str, key: str) -> Path:
    return out / "cache" / f"{node_id}-{key[:16]}"


def is_done(folder: Path) -> bool:
    return (folder / DONE).is_file()


def clear_partial(folder: Path) -> None:
    """Remove what an interrupted run left in a node folder that never completed, except `resume/`."""
    if folder.exists() and not is_done(folder):
        for child in folder.iterdir():
            if child.name == RESUME:
                continue
            if child.is_dir():
                shutil.rmtree(child)
            else:
                child.unlink()
