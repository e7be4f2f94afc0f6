"""How many model calls are in flight at once, and who gets the next free slot."""

from __future__ import annotations

import contextlib
import heapq
import itertools
import threading
import time
from collections.abc import Iterator


class ModelSlots:
    """At most `n` model calls in flight across the swarm, handed out oldest agent first.

    A free slot goes to the oldest waiting agent (the one whose first call came first), and an
    agent keeps its slot between its calls for up to `grace` seconds, or until `done(agent)`.
    So a swarm can run more workers than the endpoint takes calls: the extra ones start their
    worktree and Prefect subflow while others' calls are in flight and wait here, and a worker
    that finishes passes its slot at once to one already started. Workers finish in the order
    they started, each without waiting between its own calls, instead of all of them crawling
    to the end together; a worker busy longer than `grace` (a long command) lends its slot out.
    """

    def __init__(self, n: int, grace: float = 2.0) -> None:
        self.grace = grace
        self._cond = threading.Condition()  # guards everything below
        self.capacity = max(1, n)
        self._free = self.capacity  # below 0 after a shrink: slots in use beyond the capacity
        self._age: dict[str, int] = {}
        self._waiting: list[tuple[int, int, threading.Event]] = []  # (age, arrival, handoff)
        self._arrival = itertools.count()
        self._kept: dict[str, float] = {}  # agent -> monotonic time its kept slot is given up
        self._expirer: threading.Thread | None = None

    @contextlib.contextmanager
    def hold(self, agent: str) -> Iterator[None]:
        """A slot for one call of `agent`."""
        self._acquire(agent)
        try:
            yield
        finally:
            with self._cond:
                if self.grace > 0:  # later than any kept now: the expirer needs no wake-up
                    self._kept[agent] = time.monotonic() + self.grace
                    self._start_expirer()
                else:
                    self._give()

    def done(self, agent: str) -> None:
        """The agent makes no more calls: its kept slot goes to the next waiter now."""
        with self._cond:
            if self._kept.pop(agent, None) is not None:
                self._give()

    def resize(self, n: int) -> None:
        """Allow `n` calls in flight from now on (a server's parallel slots, once learned). Calls
        in flight finish; after a shrink, freed slots are kept back until the count fits."""
        with self._cond:
            n = max(1, n)
            delta, self.capacity = n - self.capacity, n
            if delta < 0:
                self._free += delta
            for _ in range(delta):
                self._give()

    def busy(self) -> tuple[int, int]:
        """The server refused a call for being busy with those in flight: one fewer at once
        than allowed before, and than are held now (at least one); none fewer when this call was
        alone (the server is busy with others, or loading). Returns (before, after)."""
        with self._cond:
            before = self.capacity
            held = self.capacity - self._free
        after = before if held <= 1 else max(1, min(before - 1, held - 1))
        if after < before:
            self.resize(after)
        return before, after

    def _acquire(self, agent: str) -> None:
        with self._cond:
            age = self._age.setdefault(agent, len(self._age))
            if self._kept.pop(agent, None) is not None:
                if self._free >= 0:
                    return  # back within its grace: its own slot
                self._give()  # shrunk meanwhile: its kept slot is one too many; queue anew
            if self._free > 0 and not self._waiting:
                self._free -= 1
                return
            entry = (age, next(self._arrival), threading.Event())
            heapq.heappush(self._waiting, entry)
        try:
            entry[2].wait()  # set by _give: the slot is ours
        except BaseException:  # interrupted while waiting: give up the place, or the slot
            with self._cond:
                if entry[2].is_set():
                    self._give()
                else:
                    self._waiting.remove(entry)
                    heapq.heapify(self._waiting)
            raise

    def _give(self) -> None:
        """One slot back: to the oldest waiter (never free in between), else free. Lock held."""
        if self._free < 0:  # shrunk: this slot is one too many
            self._free += 1
        elif self._waiting:
            heapq.heappop(self._waiting)[2].set()
        else:
            self._free += 1

    def _start_expirer(self) -> None:
        if self._expirer is None:
            self._expirer = threading.Thread(target=self._expire, name="model-slots", daemon=True)
            self._expirer.start()

    def _expire(self) -> None:
        """Give up kept slots whose grace ran out; ends when none is kept (started again later)."""
        with self._cond:
            while self._kept:
                now_ = time.monotonic()
                due = [a for a, t in self._kept.items() if t <= now_]
                for agent in due:
                    del self._kept[agent]
                    self._give()
                if self._kept:
                    self._cond.wait(min(self._kept.values()) - now_)
            self._expirer = None
