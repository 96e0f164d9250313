"""Executors: where DAG nodes and the work inside stages run.

The interface is `concurrent.futures`-shaped (`submit`, `wait_any`, `map`); `local` runs nodes in process
(and a stage's tasks on a local process pool), `dask` (recon3d.dag.dask_executor) on a Dask `distributed`
cluster. Tasks are plain functions of picklable arguments (paths, configs), never large arrays: a worker
reads its inputs from the filesystem.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import signal
import tempfile
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, InvalidStateError, ProcessPoolExecutor, as_completed
from typing import Any

Progress = Callable[[str, int, int, str], None]  # (node id, done, total, text)
OnDone = Callable[[int, int], None]  # (tasks done, tasks in all)


class TaskError(Exception):
    """`map`'s task `index` raised `cause`; StageContext.map turns it into an error naming the item."""

    def __init__(self, index: int, cause: BaseException):
        self.index = index
        self.cause = cause
        super().__init__(f"task {index} failed: {type(cause).__name__}: {cause}")

    def __reduce__(self):
        return type(self), (self.index, self.cause)


class Executor(ABC):
    name: str
    workers: int = 1  # how many tasks run at once; stages size their task blocks by it

    @abstractmethod
    def submit(self, fn: Callable, *args) -> Future:
        """Start `fn(*args)`; the returned future holds its result or exception."""

    @abstractmethod
    def wait_any(self, futures: Iterable[Future]) -> set[Future]:
        """Block until at least one of `futures` is done; return the done ones."""

    def map(self, fn: Callable, items: Sequence, on_done: OnDone | None = None) -> list:
        """`fn` over `items`, results in input order. The first failure is raised as a TaskError."""
        results = []
        for i, item in enumerate(items):
            try:
                results.append(fn(item))
            except Exception as exc:
                raise TaskError(i, exc) from exc
            if on_done is not None:
                on_done(i + 1, len(items))
        return results

    def for_nodes(self, on_progress: Progress | None) -> tuple[Executor, Progress | None]:
        """The executor a node's stage uses for its inner work, and the progress callback it reports to, as
        seen from wherever this executor runs nodes (both picklable when that is another process)."""
        return self, on_progress

    def close(self) -> None:  # noqa: B027 - optional hook; the local executor holds nothing
        """Release workers; the executor is not used afterwards."""


class LocalExecutor(Executor):
    """In process, no server. Nodes run one at a time in submission order. A stage's tasks (`map`) run in
    this process one after another with `workers=1` (the default, for stages called from Python), else on a
    pool of `workers` processes started once (forkserver: fresh interpreters, nothing inherited from this
    process's threads), as tasks on Dask workers do: COLMAP's extractor holds the GIL, so threads would not
    overlap it. The command line gives one worker per core. The workers' temporary files go to one folder of
    the pool's, removed with it: a worker that the run terminates mid-task cannot remove its own."""

    name = "local"

    def __init__(self, workers: int = 1):
        self.workers = max(1, workers)
        self._pool: ProcessPoolExecutor | None = None
        self._scratch: str | None = None

    def map(self, fn: Callable, items: Sequence, on_done: OnDone | None = None) -> list:
        """On the pool even for one task (a photo set's one block of pairs to match): a long C++ call in this
        process would hold Ctrl-C and SIGTERM until it returned; on the pool they stop it at once, the workers
        terminated (their task's partial work is lost either way)."""
        if self.workers == 1 or not items:
            return super().map(fn, items, on_done)
        if self._pool is None:
            _quiet_cancelled_broken_pool()
            self._scratch = tempfile.mkdtemp(prefix="recon3d-tasks-")
            self._pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("forkserver"),
                                             initializer=_start_worker, initargs=(self._scratch,))
        results: list = [None] * len(items)
        futures = {self._pool.submit(fn, item): i for i, item in enumerate(items)}
        try:
            for done, future in enumerate(as_completed(futures), start=1):
                index, exc = futures[future], future.exception()
                if exc is not None:
                    raise TaskError(index, exc) from exc
                results[index] = future.result()
                if on_done is not None:
                    on_done(done, len(items))
        except KeyboardInterrupt:  # Ctrl-C, SIGTERM: not waiting for the tasks running (a block of matching
            self._terminate()  # can take minutes); shutdown would
            raise
        finally:
            for future in futures:
                future.cancel()
        return results

    def _terminate(self) -> None:
        """End the pool now: its workers ignore SIGINT (the run stops them), and SIGTERM ends them."""
        pool, self._pool = self._pool, None
        processes = list((getattr(pool, "_processes", None) or {}).values())  # no public way to stop a task
        for process in processes:
            process.terminate()
        pool.shutdown(wait=False, cancel_futures=True)
        for process in processes:  # gone before their folder goes
            process.join(timeout=2)
        self._remove_scratch()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None
        self._remove_scratch()

    def _remove_scratch(self) -> None:
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None

    def submit(self, fn: Callable, *args) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args))
        except Exception as exc:  # the future carries it to whoever asks for the result
            future.set_exception(exc)
        return future

    def wait_any(self, futures: Iterable[Future]) -> set[Future]:
        return {f for f in futures if f.done()}


def _quiet_cancelled_broken_pool() -> None:
    """threading.excepthook without one CPython 3.11 traceback: when `timeout` stops a run, SIGTERM ends the
    pool's workers as the run cancels its futures, and the pool's manager thread, marking them failed, raises
    InvalidStateError on a cancelled one and stops there (3.12 ignores the error and goes on to terminate the
    workers; here SIGTERM has ended them already). The run says in its own line that it was stopped."""
    hook = threading.excepthook
    if getattr(hook, "quiets_broken_pool", False):
        return

    def quiet(args) -> None:
        if not (args.exc_type is InvalidStateError and type(args.thread).__name__ == "_ExecutorManagerThread"):
            hook(args)

    quiet.quiets_broken_pool = True
    threading.excepthook = quiet


def _start_worker(scratch: str) -> None:
    """A pool worker ignores SIGINT: Ctrl-C reaches the whole process group, and the run, not each worker (each
    would print its own traceback), stops; shutting the pool down ends the workers. SIGTERM ends a worker
    silently (`recon3d.colmap_module`): the pool's own terminate() sends it to workers it gives up on, and
    their temporary files are in `scratch`, which the executor removes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    tempfile.tempdir = scratch


def make_executor(name: str, **options: Any) -> Executor:
    """`local`, or `dask` with `scheduler` (an address; none = a LocalCluster) and `workers` (LocalCluster size)."""
    from recon3d.errors import ConfigError

    if name == "local":
        if any(v is not None for v in options.values()):
            given = ", ".join(k for k, v in options.items() if v is not None)
            raise ConfigError(f"executor local takes no {given}", "drop it, or use --executor dask")
        return LocalExecutor(workers=os.cpu_count() or 1)
    if name == "dask":
        from recon3d.dag.dask_executor import DaskExecutor

        return DaskExecutor(**options)
    raise ConfigError(f"unknown executor {name!r}", "choose one of: local, dask")
