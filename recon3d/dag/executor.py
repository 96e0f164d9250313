"""Executors: where DAG nodes and the work inside stages run.

The interface is `concurrent.futures`-shaped (`submit`, `wait_any`, `map`) so a Dask `distributed`
client fits behind it without stages changing. Tasks are plain functions of picklable arguments (paths,
configs), never large arrays.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future


class Executor(ABC):
    name: str

    @abstractmethod
    def submit(self, fn: Callable, *args) -> Future:
        """Start `fn(*args)`; the returned future holds its result or exception."""

    @abstractmethod
    def wait_any(self, futures: Iterable[Future]) -> set[Future]:
        """Block until at least one of `futures` is done; return the done ones."""

    def map(self, fn: Callable, items: Sequence) -> list:
        """`fn` over `items`, results in input order; the first exception is raised."""
        futures = [self.submit(fn, item) for item in items]
        return [f.result() for f in futures]

    def close(self) -> None:  # noqa: B027 - optional hook; the local executor holds nothing
        """Release workers; the executor is not used afterwards."""


class LocalExecutor(Executor):
    """In process, one task at a time, in submission order. No server, no pickling."""

    name = "local"

    def submit(self, fn: Callable, *args) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args))
        except Exception as exc:  # the future carries it to whoever asks for the result
            future.set_exception(exc)
        return future

    def wait_any(self, futures: Iterable[Future]) -> set[Future]:
        return {f for f in futures if f.done()}


EXECUTORS: dict[str, Callable[[], Executor]] = {"local": LocalExecutor}


def make_executor(name: str) -> Executor:
    from recon3d.errors import ConfigError

    if name not in EXECUTORS:
        raise ConfigError(f"unknown executor {name!r}", f"choose one of: {', '.join(EXECUTORS)}")
    return EXECUTORS[name]()
