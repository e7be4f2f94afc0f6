"""The spend ledger: every model call reserves its worst case before it is sent.

N concurrent calls can therefore never overshoot a cap: a call that does not fit is refused
before any HTTP request, and each reservation is settled with the real usage afterwards.

A run's ledger outlives its process: what it has spent (`Spent`) is handed to `on_settle` after
every settled call (the run keeps it in its folder) and given back to the ledger of a resumed
run, so the budget is never spent twice. A call replayed from Prefect's cache never reaches
the model client, so it reserves and settles nothing: a free replay is not counted as spend.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from pydantic import BaseModel


class BudgetExhausted(Exception):
    """The global budget cannot cover another call; the swarm drains."""


@dataclass
class Reservation:
    tokens: int
    cost: float


class Spent(BaseModel):
    """What a run has used of its budget so far, over all the processes that ran it."""

    tokens: int = 0
    cost_usd: float = 0.0
    wall_seconds: float = 0.0


class Ledger:
    """Thread-safe token and dollar ledger with hard caps and a wall-clock deadline.

    `spent`: what earlier processes of the run used (a resumed run starts from it).
    `on_settle`: called after every settled call, outside the ledger's lock (to persist it).
    """

    def __init__(
        self,
        max_tokens: int,
        max_cost_usd: float,
        max_wall_seconds: float,
        *,
        spent: Spent | None = None,
        on_settle: Callable[[], None] | None = None,
    ) -> None:
        spent = spent or Spent()
        self.max_tokens = max_tokens
        self.max_cost_usd = max_cost_usd
        self._started = time.monotonic()
        self._earlier_seconds = spent.wall_seconds
        self.deadline = self._started + max_wall_seconds - spent.wall_seconds
        self.tokens = spent.tokens  # settled
        self.cost = spent.cost_usd
        self._reserved_tokens = 0
        self._reserved_cost = 0.0
        self._lock = threading.Lock()
        self._on_settle = on_settle
        self.exhausted: str | None = None  # which cap ran out, once one did

    def reserve(self, tokens: int, cost: float) -> Reservation:
        """Reserve a call's worst case, or raise BudgetExhausted (and remember why)."""
        with self._lock:
            if self.exhausted:
                raise BudgetExhausted(self.exhausted)
            if time.monotonic() > self.deadline:
                self.exhausted = "wall_seconds"
            elif self.tokens + self._reserved_tokens + tokens > self.max_tokens:
                self.exhausted = "tokens"
            elif self.cost + self._reserved_cost + cost > self.max_cost_usd + 1e-12:
                self.exhausted = "cost"
            if self.exhausted:
                raise BudgetExhausted(self.exhausted)
            self._reserved_tokens += tokens
            self._reserved_cost += cost
            return Reservation(tokens, cost)

    def settle(self, reservation: Reservation, tokens: int, cost: float) -> None:
        """Replace a reservation with what the call really used."""
        with self._lock:
            self._reserved_tokens -= reservation.tokens
            self._reserved_cost -= reservation.cost
            self.tokens += tokens
            self.cost += cost
        if self._on_settle is not None:
            self._on_settle()

    def spent(self) -> Spent:
        """What the run has used so far, this process's wall time included."""
        with self._lock:
            return Spent(
                tokens=self.tokens,
                cost_usd=self.cost,
                wall_seconds=self._earlier_seconds + time.monotonic() - self._started,
            )

    def stop(self, reason: str) -> None:
        """Refuse every further call (a stop request or a signal drains like an empty budget)."""
        with self._lock:
            self.exhausted = self.exhausted or reason

    def left(self) -> dict[str, float]:
        with self._lock:
            return {
                "tokens": self.max_tokens - self.tokens,
                "cost_usd": round(self.max_cost_usd - self.cost, 6),
                "seconds": round(self.deadline - time.monotonic(), 1),
            }
