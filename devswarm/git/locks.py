"""The locks that keep git writers apart, shared by every workspace object of a process.

Process-wide registries hold one landing lane per (clone, branch), one worktree-add lock per
clone and one publisher per (user repository, branch). Between processes: a file lock while a
clone is opened, and on one machine a file lock that extends the landing lane (MachineLane).
"""

from __future__ import annotations

import contextlib
import fcntl
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from devswarm.errors import UserError

_T = TypeVar("_T")

_REGISTRY_LOCK = threading.Lock()
LANES: dict[tuple[str, str], threading.Lock] = {}
ADD_LOCKS: dict[str, threading.RLock] = {}
PUBLISHERS: dict[tuple[str, str], Publisher] = {}


def registered(registry: dict[Any, _T], key: object, factory: Callable[[], _T]) -> _T:
    """The registry's object for `key`, made by `factory` on first use."""
    with _REGISTRY_LOCK:
        if key not in registry:
            registry[key] = factory()
        return registry[key]


class Publisher:
    """Coalesces publishes: a fetch that starts after your landing covers it, so landings that
    finish while a fetch runs share the next one instead of queueing one fetch each."""

    def __init__(self) -> None:
        self._run = threading.Lock()
        self._state = threading.Lock()
        self._requested = 0
        self._done = 0
        self._error: str | None = None

    def publish(self, fetch: Callable[[], None]) -> None:
        """Run `fetch` unless a fetch that started after this call already covered it;
        UserError with the covering fetch's message if that one failed."""
        with self._state:
            self._requested += 1
            ticket = self._requested
        with self._run:
            with self._state:
                covered = self._done >= ticket
                target = self._requested
                error = self._error
            if not covered:
                try:
                    fetch()
                    error = None
                except UserError as exc:
                    error = str(exc)
                with self._state:
                    self._done, self._error = target, error
        if error:
            raise UserError(error)


class MachineLane:
    """A landing lane shared by the processes of one machine: the process's lane, then an
    exclusive lock on a file beside the clone they share (so they land one at a time instead
    of racing each other's pushes)."""

    def __init__(self, lane: threading.Lock, path: Path) -> None:
        self._lane, self._path = lane, path
        self._fh: Any = None

    def __enter__(self) -> None:
        self._lane.acquire()
        try:
            self._fh = open(self._path, "a")
            fcntl.flock(self._fh, fcntl.LOCK_EX)
        except BaseException:
            if self._fh is not None:
                self._fh.close()
            self._lane.release()
            raise

    def __exit__(self, *exc: object) -> None:
        try:
            fcntl.flock(self._fh, fcntl.LOCK_UN)
            self._fh.close()
        finally:
            self._fh = None
            self._lane.release()


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock between processes (two runs opening the same data folder)."""
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
