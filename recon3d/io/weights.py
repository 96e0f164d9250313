"""Model weights as safetensors (CONVENTIONS.md: no pickles): tensors plus string metadata, written atomically."""

from __future__ import annotations

from pathlib import Path

from safetensors import safe_open
from safetensors.torch import save
from torch import Tensor

from recon3d.io.files import atomic_write


def write_weights(path: str | Path, tensors: dict[str, Tensor], metadata: dict[str, str]) -> Path:
    """Write `tensors` (detached, moved to the CPU, made contiguous) and `metadata` to `path`, atomically."""
    data = save({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, metadata=metadata)
    return atomic_write(path, lambda f: f.write(data))


def read_weights(path: str | Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    """(tensors, metadata) of a safetensors file, in one open."""
    with safe_open(str(path), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata() or {}  # noqa: SIM118 - safe_open has no items
