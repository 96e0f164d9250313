"""pycolmap, imported without the SIGTERM handler it brings.

pycolmap's module start installs glog's failure signal handler, which takes SIGTERM among the crash signals:
`timeout`, `kill` or a job scheduler stopping a run then printed each process's native stack trace (80 lines of
`@ 0x... _PyEval_EvalFrameDefault`) instead of the run's one line. Importing it through here puts back what
SIGTERM did before (the command's own handler in the main process, the default in the pool's workers); the crash
signals (SIGSEGV, SIGABRT, ...) keep glog's traces. Import pycolmap from here: only its first import installs
the handler, wherever it happens. A first import outside a main thread (a Dask worker's task) cannot put the
handler back, so the dask executor's LocalCluster preloads this module into each worker.
"""

from __future__ import annotations

import signal
import threading

_main = threading.current_thread() is threading.main_thread()  # signals can be set from the main thread only
_before = signal.getsignal(signal.SIGTERM) if _main else None

import pycolmap  # noqa: E402  (the point of this module: what SIGTERM does is read before and put back after)

if _main and _before is not None:
    signal.signal(signal.SIGTERM, _before)

__all__ = ["pycolmap"]
