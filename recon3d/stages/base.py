"""The stage contract: a typed config, a `run(scene, cfg, ctx)` function, and what it reads and writes.

A stage reads only the Scene fields it declares and returns `scene.replace(...)` with the fields it
declares written; the runner checks the second half. Stages report counts and dropped items through the
context, which also gives them a folder for files and the executor for work that splits.
"""

from __future__ import annotations

import hashlib
import logging
import math
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict

from recon3d.dag.executor import Executor, LocalExecutor, TaskError
from recon3d.errors import StageError
from recon3d.scene import Scene

log = logging.getLogger("recon3d")
AUTO_BLOCK_MAX = 64  # items per executor task when a stage leaves the block size to the context


def _torch_device(value: str) -> str:
    """A device torch can use here: `cpu`, or `cuda[:N]` where this torch build sees that GPU."""
    if value == "cpu":
        return value
    import torch

    try:
        device = torch.device(value)
    except (RuntimeError, ValueError):
        raise ValueError(f"{value!r} is not a torch device: cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count <= (device.index or 0):
            raise ValueError(f"{value!r}: this machine's torch sees {count} CUDA device(s) "
                             f"({'a CPU build' if torch.version.cuda is None else 'no GPU'}): set device=cpu")
    return value


Device = Annotated[str, AfterValidator(_torch_device)]  # a config's torch device, checked before anything runs


class StageConfig(BaseModel):
    """Base of every stage config: validated, immutable, unknown keys are an error."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass
class StageContext:
    """What a running stage may use besides its scene and config."""

    node_id: str
    workdir: Path  # the node's own folder for files it writes (models, images)
    # files for the user: written here, copied into the run's output folder (OUT) once the node is done,
    # and again whenever the node comes from the cache (`sparse/0/` here becomes `OUT/sparse/0/`)
    publish_dir: Path | None = None
    executor: Executor = field(default_factory=LocalExecutor)
    # checkpoints that survive an interruption of this node (same key), so a re-run resumes from them
    resume_dir: Path | None = None
    on_progress: Callable[[str, int, int, str], None] | None = None  # (node id, done, total, text)
    counts: dict[str, Any] = field(default_factory=dict)
    dropped: list[dict[str, str]] = field(default_factory=list)
    results: dict[str, Any] = field(default_factory=dict)  # top-level fields of the report

    @classmethod
    def standalone(cls, node_id: str = "standalone") -> StageContext:
        """A context for calling a stage directly from Python, with a fresh temporary folder."""
        workdir = Path(tempfile.mkdtemp(prefix=f"recon3d-{node_id}-"))
        return cls(node_id=node_id, workdir=workdir, publish_dir=workdir / "publish")

    @property
    def published(self) -> Path:
        """The folder for files the user gets in OUT (created on first use)."""
        folder = self.publish_dir or self.workdir / "publish"
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    @property
    def resumable(self) -> Path:
        """The folder for checkpoints (created on first use); see `resume_dir`."""
        folder = self.resume_dir or self.workdir / "resume"
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def progress(self, done: int, total: int, text: str = "") -> None:
        """Tell whoever watches (the CLI's progress bar) how far the stage is; logged otherwise."""
        if self.on_progress is not None:
            self.on_progress(self.node_id, done, total, text)
        else:
            log.debug("%s: %d/%d %s", self.node_id, done, total, text)

    def count(self, key: str, value: Any) -> None:
        """Record a figure for the report (`images: 12`, `seconds_io: 0.3`)."""
        self.counts[key] = value

    def record(self, key: str, value: Any) -> None:
        """Put a stage-specific result at the top level of the report (`rms_px`, a per-image table)."""
        self.results[key] = value

    def drop(self, item: str, reason: str) -> None:
        """Record something the stage left out, and why."""
        self.dropped.append({"item": item, "reason": reason})
        log.info("%s: dropped %s (%s)", self.node_id, item, reason)

    def blocks(self, items: Sequence, per_block: int = 0) -> list[tuple]:
        """`items` cut into consecutive blocks of `per_block` (0 = auto: about four blocks per executor worker,
        at most AUTO_BLOCK_MAX items each, so every worker stays busy and a slow block does not hold the rest)."""
        if per_block <= 0:
            per_block = max(1, min(AUTO_BLOCK_MAX, math.ceil(len(items) / (4 * self.executor.workers))))
        return [tuple(items[lo:lo + per_block]) for lo in range(0, len(items), per_block)]

    def map(self, fn: Callable, items: Sequence, describe: Callable[[Any], str] | None = None) -> list:
        """Run `fn` over `items` through the executor; results in the order of `items`, progress as tasks
        complete. A task that raises becomes a StageError naming its item (`describe(item)`)."""
        name = getattr(fn, "__name__", "task")
        try:
            return self.executor.map(fn, items, on_done=lambda done, total: self.progress(done, total, name))
        except TaskError as exc:
            what = describe(items[exc.index]) if describe else f"item {exc.index} of {len(items)}"
            cause = exc.cause
            fix = getattr(cause, "fix", None) or (  # not an input recon3d could judge: no blame on it
                "re-run the same command (it resumes); if it fails again there, report it with this line")
            problem = getattr(cause, "problem", None) or f"{type(cause).__name__}: {cause}"
            raise StageError(f"{self.node_id}: {name} failed on {what}: {problem}", fix) from cause


@dataclass(frozen=True)
class Stage:
    """A registered stage."""

    name: str
    version: int  # bump when the output for the same config changes: invalidates cached results
    config: type[StageConfig]
    run: Callable[..., Scene]  # run(scene, cfg, ctx=None) -> Scene
    reads: tuple[str, ...]
    writes: tuple[str, ...]
    summary: str
    # hash of what the config points at outside the scene (an input folder), part of the cache key
    fingerprint: Callable[[StageConfig], str] | None = None


DIFFERENT_SCENES = ("; labeled photos of different scenes have no 3D: `recon3d run labels` detects and segments "
                    "them alone")  # what the SfM stages add to their hint when no pair of labeled photos fits


def describe_pairs(pairs: Sequence[tuple[str, str]]) -> str:
    """A block of image pairs for an error message: its count, first and last pair."""
    first, last = pairs[0], pairs[-1]
    span = f"{first[0]} | {first[1]}" + ("" if len(pairs) == 1 else f" ... {last[0]} | {last[1]}")
    return f"the {len(pairs)} pair(s) {span}"


def hash_files(root: Path, files: Sequence[Path]) -> str:
    """sha256 over the relative names and contents of `files` under `root`."""
    h = hashlib.sha256()
    for f in sorted(files):
        h.update(str(f.relative_to(root)).encode() + b"\0")
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()
