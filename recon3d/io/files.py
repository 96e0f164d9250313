"""Atomic writes: write a temporary file in the same folder, then `os.replace` it into place.

The temporary file is `.NAME.*.tmp`; the file that replaces NAME gets the mode a plain `open` would give it
(0666 less the umask: 0644 by default), not `mkstemp`'s private 0600.

A killed process leaves NAME whole or untouched. No fsync: that would guard only against the machine losing
power, and there the cache's seals already catch it (recon3d.dag.cache re-hashes every sealed file before
trusting it, so a file the disk lost is recomputed); syncing each of a run's files cost a second per run.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from recon3d.errors import DataError

TMP_SUFFIX = ".tmp"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _umask()  # read once: setting it to read it is not safe while other threads create files


def atomic_write(path: str | Path, write: Callable[[Any], None], mode: str = "wb") -> Path:
    """Call `write(fileobj)` on a temporary file beside `path`, then move it onto `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)
        with os.fdopen(fd, mode) as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def link_or_copy(source: str | Path, path: str | Path) -> Path:
    """Make `path` a hard link to `source` (a copy where the filesystem cannot link), replacing `path`
    atomically. For files that are only ever replaced, never modified in place (what atomic_write writes).
    A `path` that is already that file is left as it is (renaming a link onto another link of the same file does
    nothing, POSIX says, and would leave the temporary name behind)."""
    path = Path(path)
    if path.exists() and os.path.samefile(source, path):
        return path
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}{TMP_SUFFIX}")
    try:
        try:
            os.link(source, tmp)
        except OSError:  # another filesystem, or one without hard links
            shutil.copyfile(source, tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_json(path: str | Path, obj: Any, indent: int | None = 2) -> Path:
    """Write `obj` as JSON, atomically: indented for people to read, or compact with `indent=None`."""
    text = json.dumps(obj, indent=indent, separators=None if indent else (",", ":"), sort_keys=False,
                      allow_nan=True)
    return atomic_write(path, lambda f: f.write(text + "\n"), mode="w")


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes, hex."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def read_text(path: str | Path) -> str:
    """A UTF-8 text file's contents; one that is not UTF-8 (a binary file, another encoding) is a DataError."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start})",
                        "save it as UTF-8 text, or replace it") from None


def read_json(path: str | Path) -> Any:
    """Parse a JSON file; a damaged one is a DataError naming it."""
    with open(path, encoding="utf-8") as f:
        try:
            return json.load(f)
        except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError; absurdly deep nesting
            raise DataError(f"{path} is not valid JSON ({exc})", "fix or replace that file") from None
