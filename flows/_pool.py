"""Run subflows concurrently from threads, keeping their parent (Prefect 3 flows have no .map).

Each call runs in a copy of the caller's context, so the child flow run is linked to the parent
flow run in the Prefect UI. Results are yielded as they complete: no barrier.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from typing import Any, TypeVar

T = TypeVar("T")


def submit(pool: ThreadPoolExecutor, fn: Callable[..., T], *args: Any, **kwargs: Any) -> Future[T]:
    ctx = contextvars.copy_context()
    return pool.submit(ctx.run, fn, *args, **kwargs)


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
