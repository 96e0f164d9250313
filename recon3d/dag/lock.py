"""One run per output folder at a time: an `fcntl` lock on `OUT/.recon3d.lock`.

The lock file holds the process id and host of the run that holds it, so a second run on the same folder
is refused with whom to wait for. The kernel drops an `flock` when its process dies, however it dies, so
the lock of a killed run is simply taken over by the next one. The lock is re-entrant within a process
(the CLI holds it around a run and its report; the runner takes it again).
"""

from __future__ import annotations

import fcntl
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from recon3d.errors import DataError

LOCK = ".recon3d.lock"
_held: dict[Path, list] = {}  # resolved OUT -> [file descriptor, depth]


def holder(out: Path) -> str | None:
    """'pid N on host H' while a run holds `out`, else None."""
    path = Path(out) / LOCK
    if not path.is_file():
        return None
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return Path(path).read_text().strip() or "another process"
    finally:
        os.close(fd)
    return None


@contextmanager
def run_lock(out: Path) -> Iterator[None]:
    """Hold `out` for this process; refuse clearly when another run holds it or the folder is not writable."""
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        where = out.resolve()
        if where in _held:
            _held[where][1] += 1
        else:
            fd = os.open(out / LOCK, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                who = holder(out) or "another process"
                raise DataError(f"{out} is in use by recon3d ({who})",
                                "wait for it to finish, or use another --out") from None
            os.ftruncate(fd, 0)
            os.write(fd, f"pid {os.getpid()} on host {socket.gethostname()}\n".encode())
            _held[where] = [fd, 1]
    except PermissionError as exc:
        raise DataError(f"--out {out} is not writable ({exc.strerror}: {exc.filename})",
                        "choose another --out, or make that folder writable") from None
    try:
        yield
    finally:
        _held[where][1] -= 1
        if _held[where][1] == 0:
            fd = _held.pop(where)[0]
            os.ftruncate(fd, 0)
            os.close(fd)
