"""The spend ledger: every model call reserves its worst case before it is sent.

N concurrent calls can therefore never overshoot a cap: a call that does not fit is refused
before any HTTP request, and each reservation is settled with the real usage afterwards.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass


class BudgetExhausted(Exception):
    """The global budget cannot cover another call; the swarm drains."""


@dataclass
class Reservation:
    tokens: int
    cost: float


class Ledger:
    """Thread-safe token and dollar ledger with hard caps and a wall-clock deadline."""

    def __init__(self, max_tokens: int, max_cost_usd: float, max_wall_seconds: float) -> None:
        self.max_tokens = max_tokens
        self.max_cost_usd = max_cost_usd
        self.deadline = time.monotonic() + max_wall_seconds
        self.tokens = 0  # settled
        self.cost = 0.0
        self._reserved_tokens = 0
        self._reserved_cost = 0.0
        self._lock = threading.Lock()
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
