"""Subflows from threads: Prefect 3 flows have no .map, so devswarm runs them on thread pools.

Each call runs in a copy of the caller's context, so the child flow run is linked to the parent
flow run in the Prefect UI. Results are yielded as they complete: no barrier.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from typing import Any, TypeVar

from devswarm.scheduler import submit

T = TypeVar("T")


def map_concurrently(
    fn: Callable[[Any], T], items: Iterable[Any], max_workers: int
) -> Iterator[tuple[Any, Future[T]]]:
    """Yield (item, finished future) in completion order, at most max_workers at once."""
    items = list(items)
    if not items:
        return
    with ThreadPoolExecutor(max_workers=max(1, min(max_workers, len(items)))) as pool:
        futures = {submit(pool, fn, item): item for item in items}
        for fut in as_completed(futures):
            yield futures[fut], fut


def off_main_thread(fn: Callable[..., T], *args: Any) -> T:
    """Call fn in a worker thread with this context (its subflow keeps its parent). A subflow on
    the main thread would put Prefect's SIGTERM handler back in place of the swarm's drain."""
    with ThreadPoolExecutor(1) as pool:
        return submit(pool, fn, *args).result()


@contextlib.contextmanager
def subflows_without_heartbeats() -> Iterator[None]:
    """Subflows started inside send no heartbeats. They run in this process and die with it,
    and the parent flow run's own heartbeat already says the process is alive; a heartbeat
    thread costs each subflow up to 1 s at its end (Prefect joins a thread that sleeps in 1 s
    steps)."""
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        yield


class StartGate:
    """At most `n` subflows of this process between "called" and "body running".

    Prefect starts a subflow with a handful of requests (create the flow run, set it pending and
    running) and, started together, a hundred subflows advance through them in lockstep: the
    first body ran 12 s after the first call at N=100 on `devswarm server` (bench/efficiency.py).
    Let through a few at a time, the first body runs in ~0.4 s and the rest follow at the same
    rate as before, so the work starts while the others are still starting.
    """

    def __init__(self, n: int) -> None:
        self._slots = threading.Semaphore(n)
        self._mine = threading.local()

    @contextlib.contextmanager
    def starting(self) -> Iterator[None]:
        """Around the subflow call; its body calls `started()` (a body that never runs, a
        subflow that fails to start: the gate opens when the call returns)."""
        self._slots.acquire()
        self._mine.held = True
        try:
            yield
        finally:
            self.started()

    def started(self) -> None:
        """Called first thing in the subflow's body (the same thread as its call)."""
        if getattr(self._mine, "held", False):
            self._mine.held = False
            self._slots.release()


# Subflow starts of this process at once: two per core (4 on the 2-core machine bench/ measured).
STARTS = StartGate(2 * (os.cpu_count() or 2))
