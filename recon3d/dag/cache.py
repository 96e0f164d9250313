"""Cache keys and folders of DAG nodes (Meshroom's model), sealed so that damage is found, not trusted.

A node's key hashes what can change its output: stage name and version, the validated config, the keys of
its inputs, and a fingerprint of external data the config points at. Its folder
`OUT/cache/<node>-<key[:16]>/` is complete once `done.json` exists; a folder without it is the remains of
an interrupted run and is cleared before the node runs again, all but its `resume/` folder, where long
stages (training) keep checkpoints to resume from.

`done.json` seals the folder: the size and sha256 of every file it holds (but `resume/`) and the seals of
the inputs it was computed from. Before a run trusts a folder it checks both (`check`): a file missing,
cut short or changed, an unreadable `done.json`, or an input sealed anew since (recomputed after damage,
with other bytes) make the folder stale; the runner sets it aside (`set_aside`, nothing deleted) and
recomputes the node.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from recon3d.errors import Recon3dError
from recon3d.io.files import TMP_SUFFIX, file_sha256, read_json, write_json
from recon3d.scene import SCENE_FORMAT
from recon3d.stages.base import Stage, StageConfig

DONE = "done.json"
RESUME = "resume"  # survives an interrupted run: checkpoints of the same node (same key) to resume from
ASIDE = ".set-aside"  # OUT/cache/.set-aside/: folders found damaged or stale, kept for the user to inspect
_TMP = re.compile(rf"^\..+\.[A-Za-z0-9_]{{8}}{re.escape(TMP_SUFFIX)}$")  # what atomic_write leaves when killed


def node_key(stage: Stage, config: StageConfig, input_keys: list[str], fingerprint: str | None) -> str:
    payload = {
        "stage": stage.name,
        "version": stage.version,
        "config": config.model_dump(mode="json"),
        "inputs": input_keys,
        "external": fingerprint,
        "scene_format": SCENE_FORMAT,  # a cache written in another format is recomputed, not misread
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def node_dir(out: Path, node_id: str, key: str) -> Path:
    return out / "cache" / f"{node_id}-{key[:16]}"


def is_done(folder: Path) -> bool:
    return (folder / DONE).is_file()


def manifest(folder: Path) -> dict[str, list]:
    """{relative path: [size, sha256]} of every file in `folder` but `done.json` and `resume/`."""
    files = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if rel.parts[0] in (DONE, RESUME) or not path.is_file():
            continue
        files[rel.as_posix()] = [path.stat().st_size, file_sha256(path)]
    return files


def _seal_of(key: str, files: dict, inputs: dict) -> str:
    return hashlib.sha256(json.dumps({"key": key, "files": files, "inputs": inputs}, sort_keys=True)
                          .encode()).hexdigest()


def seal(folder: Path, key: str, seconds: float, inputs: dict[str, str]) -> str:
    """Write `done.json` (the folder's manifest, the input seals) last; returns this folder's seal."""
    files = manifest(folder)
    seal_id = _seal_of(key, files, inputs)
    write_json(folder / DONE, {"key": key, "seconds": seconds, "seal": seal_id, "inputs": inputs, "files": files})
    return seal_id


@dataclass(frozen=True)
class Verdict:
    seal: str | None = None  # set when the folder is complete and intact
    problem: str | None = None  # set when it is complete but cannot be trusted; both None: not computed yet


def check(folder: Path, inputs: dict[str, str]) -> Verdict:
    """Is the sealed folder intact, and computed from these input seals?"""
    if not is_done(folder):
        return Verdict()
    try:
        record = read_json(folder / DONE)
        files, seal_id, recorded_inputs = record["files"], record["seal"], record["inputs"]
        if _seal_of(record["key"], files, recorded_inputs) != seal_id:
            return Verdict(problem=f"{DONE} has changed since it was written")
    except (OSError, Recon3dError, KeyError, TypeError, ValueError):
        return Verdict(problem=f"{DONE} is unreadable or from an older recon3d")
    for rel, (size, digest) in files.items():
        path = folder / rel
        if not path.is_file():
            return Verdict(problem=f"{rel} is missing")
        if path.stat().st_size != size:
            return Verdict(problem=f"{rel} has {path.stat().st_size} bytes, sealed with {size}")
        if file_sha256(path) != digest:
            return Verdict(problem=f"{rel} has changed since it was written")
    changed = sorted(p for p in set(inputs) | set(recorded_inputs) if inputs.get(p) != recorded_inputs.get(p))
    if changed:
        return Verdict(problem=f"its input {', '.join(changed)} was recomputed since")
    return Verdict(seal=seal_id)


def set_aside(folder: Path) -> Path:
    """Move a damaged or stale node folder to `cache/.set-aside/<name>.<time>` (nothing is deleted)."""
    target = folder.parent / ASIDE / f"{folder.name}.{time.strftime('%Y%m%d-%H%M%S')}"
    n = 1
    while target.exists():
        target = target.with_name(f"{target.name.split('~')[0]}~{n}")
        n += 1
    target.parent.mkdir(parents=True, exist_ok=True)
    folder.rename(target)
    return target


def clear_partial(folder: Path) -> None:
    """Remove what an interrupted run left in a node folder that never completed, but `resume/`."""
    if folder.exists() and not is_done(folder):
        for child in folder.iterdir():
            if child.name == RESUME:
                remove_temporaries(child)
                continue
            if child.is_dir():
                shutil.rmtree(child)
            else:
                child.unlink()


def remove_temporaries(root: Path) -> None:
    """Delete the temporary files atomic writes killed mid-write left under `root` (not in `.set-aside`)."""
    for path in root.rglob(f".*{TMP_SUFFIX}"):
        if _TMP.match(path.name) and ASIDE not in path.parts and path.is_file():
            path.unlink()
