"""Resident memory of this process: its peak over a block of code (what the runner reports per node), and
giving freed heap back to the system between nodes."""

from __future__ import annotations

import ctypes
import os
import resource
import threading


class PeakMemory:
    """Peak resident memory (MB) of this process while the `with` block runs, sampled every 20 ms
    (the process-wide maximum would charge one node's peak to every later node of the same process).
    Resident pages of memory-mapped files (a loaded scene's arrays, once touched) count too."""

    def __init__(self, every_s: float = 0.02):
        self.every_s, self.start_mb, self.peak_mb = every_s, 0.0, 0.0
        self._stop = threading.Event()

    def _rss_mb(self) -> float:
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
        except OSError:  # no /proc: the process's maximum so far is the best bound there is
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    def _watch(self) -> None:
        while not self._stop.wait(self.every_s):
            self.peak_mb = max(self.peak_mb, self._rss_mb())

    def __enter__(self) -> PeakMemory:
        self.start_mb = self.peak_mb = self._rss_mb()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_mb = max(self.peak_mb, self._rss_mb())


def release_free_memory() -> None:
    """Hand the heap memory this process has freed back to the system (glibc's `malloc_trim`; nothing where
    there is no glibc). The pages a long run's earlier nodes freed (a mapper's C++ structures, a stage's
    temporary arrays) the allocator would otherwise keep resident under every node after them."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):
        pass
