"""The `dask` executor: DAG nodes and the work inside stages on a Dask `distributed` cluster (as GTSfM does).

Without a scheduler address it starts a `LocalCluster` on this machine (worker processes with one thread
each, as many as there are cores, no dashboard); with one (`tcp://host:8786`) it connects to the user's
cluster. A node runs as one task on a worker; the stage's inner work (`StageContext.map`: features per
image, match blocks, pair verification) is submitted from there through `worker_client()`, which hands the
node's thread back to the worker while it waits, so every worker slot takes inner tasks. Results come
back in input order, so the output equals the local executor's byte for byte.

Tasks carry paths and configs; workers read images and descriptors from the filesystem, which must be
shared between the machines of a real cluster (the same path on every worker). A worker that dies is
replaced by its nanny and its tasks are rescheduled (up to `distributed.scheduler.allowed-failures`
times); a task that raises is not retried: its error reaches the stage, which names the item.
Progress of inner tasks is sent as Dask events on topic `recon3d-progress` and reaches the CLI's bar.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from recon3d.dag.executor import Executor, OnDone, Progress, TaskError
from recon3d.errors import ConfigError

TOPIC = "recon3d-progress"


def _map(client: Any, fn: Callable, items: Sequence, on_done: OnDone | None) -> list:
    """`fn` over `items` on `client`'s cluster, results in input order; the first failure as a TaskError."""
    from distributed import as_completed

    futures = client.map(fn, list(items), pure=False)
    index = {f.key: i for i, f in enumerate(futures)}
    try:
        for done, future in enumerate(as_completed(futures), start=1):
            if future.status == "error":
                raise TaskError(index[future.key], future.exception())
            if on_done is not None:
                on_done(done, len(futures))
        return client.gather(futures)
    finally:
        client.cancel([f for f in futures if not f.done()])


class _OnCluster(Executor):
    """What both Dask executors do with their `client`: the driver's own, or a worker's."""

    name = "dask"
    client: Any

    @property
    def workers(self) -> int:
        return max(1, sum(self.client.nthreads().values()))

    def submit(self, fn: Callable, *args):
        return self.client.submit(fn, *args, pure=False)

    def wait_any(self, futures: Iterable) -> set:
        from distributed import wait

        return set(wait(list(futures), return_when="FIRST_COMPLETED").done)

    def map(self, fn: Callable, items: Sequence, on_done: OnDone | None = None) -> list:
        return _map(self.client, fn, items, on_done)


def _refused(scheduler: str) -> None:
    """Raise at once where a TCP scheduler address refuses connections (nothing listens on that port), instead
    of after Client's whole timeout; an address that does not answer at all is left to that timeout."""
    from urllib.parse import urlsplit

    parts = urlsplit(scheduler if "://" in scheduler else f"tcp://{scheduler}")
    if parts.scheme not in ("tcp", "tls") or parts.hostname is None or parts.port is None:
        return
    try:
        socket.create_connection((parts.hostname, parts.port), timeout=2.0).close()
    except ConnectionRefusedError:
        raise ConnectionRefusedError(f"nothing listens on port {parts.port} of {parts.hostname} "
                                     "(connection refused)") from None
    except OSError:  # unreachable / slow / unknown host: Client says it in its own words
        return


class DaskExecutor(_OnCluster):
    """A client of a Dask cluster: the user's (`scheduler` address) or a LocalCluster of `workers` processes."""

    def __init__(self, scheduler: str | None = None, workers: int | None = None, connect_timeout_s: float = 20.0):
        from distributed import Client, LocalCluster

        self._cluster = None
        self._subscribed = False
        if scheduler is not None and workers is not None:
            raise ConfigError("--workers sizes a LocalCluster, but --scheduler connects to an existing one",
                              "give one of them")
        if workers is not None and workers < 1:
            raise ConfigError(f"--workers {workers}: a cluster needs at least one worker", "e.g. --workers 2")
        self._environ = dict(os.environ)
        if scheduler is None:
            self._cluster = LocalCluster(n_workers=workers or os.cpu_count() or 1, threads_per_worker=1,
                                         processes=True, dashboard_address=None, silence_logs=logging.ERROR,
                                         scheduler_kwargs={"dashboard_address": ":0"},  # any free port
                                         preload=["recon3d.colmap_module"])  # pycolmap in each worker's main
            # thread, where SIGTERM's handler can be put back: closing the cluster terminates its workers, and
            # pycolmap's glog handler, taken in a task's thread, printed each one's native stack trace
            self.client = Client(self._cluster)
            self._restore_environ()
        else:
            try:
                _refused(scheduler)
                self.client = Client(scheduler, timeout=f"{connect_timeout_s}s")
            except (OSError, TimeoutError, ValueError) as exc:
                raise ConfigError(f"cannot reach the Dask scheduler at {scheduler!r}: {exc}",
                                  "start one (`dask scheduler` and `dask worker ADDRESS`) or drop --scheduler "
                                  "for a LocalCluster") from None

    def for_nodes(self, on_progress: Progress | None) -> tuple[Executor, Progress | None]:
        if on_progress is not None and not self._subscribed:
            self.client.subscribe_topic(TOPIC, lambda event: on_progress(*event[1]))
            self._subscribed = True
        return WorkerExecutor(), EventProgress()

    def close(self) -> None:
        self.client.close()
        if self._cluster is not None:
            self._cluster.close()
            self._restore_environ()

    def _restore_environ(self) -> None:
        """Undo what the nannies did to this process's environment: they set OMP_NUM_THREADS=1 (and the like,
        `distributed.nanny.pre-spawn-environ`) in the parent before spawning a worker, which would make any
        later torch/OpenMP in the driver single-threaded (measured: local matching 1.8x slower after a run)."""
        for key in set(os.environ) | set(self._environ):
            if key not in self._environ:
                del os.environ[key]
            elif os.environ.get(key) != self._environ[key]:
                os.environ[key] = self._environ[key]


class WorkerExecutor(_OnCluster):
    """The executor of a node running as a task on a Dask worker: inner tasks go to the same cluster. It holds
    nothing (it is pickled to the worker with the node); the worker's client is looked up where it runs."""

    @property
    def client(self) -> Any:
        from distributed import get_client

        return get_client()

    def map(self, fn: Callable, items: Sequence, on_done: OnDone | None = None) -> list:
        from distributed import worker_client

        with worker_client() as client:  # secede: this worker slot runs inner tasks while the node waits
            return _map(client, fn, items, on_done)


class EventProgress:
    """A node's progress callback on a worker: sends (node id, done, total, text) to the client as an event."""

    def __call__(self, node_id: str, done: int, total: int, text: str) -> None:
        from distributed import get_worker

        get_worker().log_event(TOPIC, [node_id, done, total, text])
