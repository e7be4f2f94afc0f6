"""The spend ledger: every model call reserves its worst case before it is sent.

N concurrent calls can therefore never overshoot a cap: a call that does not fit is refused
before any HTTP request, and each reservation is settled with the real usage afterwards.
Whoever watches the budget (`on_budget`) hears once when a budget is 80 % spent and once when
one runs out.

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

# The run's budgets: what `exhausted` names when one ran out (a stop names its reason instead).
BUDGETS = ("tokens", "cost", "wall_seconds", "cycles")
RUNNING_LOW = 0.8  # the share of a budget spent that is worth telling
BudgetWatcher = Callable[[str, str], None]  # ("running-low" | "exhausted", budget)


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
        self.max_wall_seconds = max_wall_seconds
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
        self.on_budget: BudgetWatcher | None = None
        self._told: set[tuple[str, str]] = set()

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
            if not self.exhausted:
                self._reserved_tokens += tokens
                self._reserved_cost += cost
        self._tell()
        if self.exhausted:
            raise BudgetExhausted(self.exhausted)
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
        self._tell()

    def stop(self, reason: str) -> None:
        """Refuse every further call (a stop request or a signal drains like an empty budget)."""
        with self._lock:
            self.exhausted = self.exhausted or reason
        self._tell()

    def spent(self) -> Spent:
        """What the run has used so far, this process's wall time included."""
        with self._lock:
            return Spent(
                tokens=self.tokens,
                cost_usd=self.cost,
                wall_seconds=self._earlier_seconds + time.monotonic() - self._started,
            )

    def usage(self) -> dict[str, tuple[float, float]]:
        """(spent, cap) of each budget the ledger keeps: tokens, cost, wall_seconds."""
        spent = self.spent()
        return {
            "tokens": (spent.tokens, self.max_tokens),
            "cost": (round(spent.cost_usd, 6), self.max_cost_usd),
            "wall_seconds": (round(spent.wall_seconds, 1), self.max_wall_seconds),
        }

    def _tell(self) -> None:
        """Tell the watcher what it has not heard yet: a budget 80 % spent, one exhausted."""
        if self.on_budget is None:
            return
        news = [
            ("running-low", k)
            for k, (spent, cap) in self.usage().items()
            if cap and spent >= RUNNING_LOW * cap
        ]
        if self.exhausted in BUDGETS:
            news.append(("exhausted", self.exhausted))
        with self._lock:
            news = [n for n in news if n not in self._told]
            self._told.update(news)
        for kind, budget in news:
            try:
                self.on_budget(kind, budget)
            except Exception:  # a watcher must not break the budget
                pass

    def left(self) -> dict[str, float]:
        with self._lock:
            return {
                "tokens": self.max_tokens - self.tokens,
                "cost_usd": round(self.max_cost_usd - self.cost, 6),
                "seconds": round(self.deadline - time.monotonic(), 1),
            }
