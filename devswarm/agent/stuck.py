"""Stuck detection: small, reusable, each pattern with its own threshold.

An agent step is summarised as (action, observation, error). The detector looks at the tail of
that history and names the first pattern it sees, or returns None. The patterns, by name:

- `same_action_result`: the same action with the same result, N times in a row;
- `same_error`: the same kind of error N times in a row, whatever the actions were;
- `no_tool_calls`: N replies in a row without a tool call;
- `alternation`: A-B-A-B…, two different steps alternating for N full pairs.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

from pydantic import BaseModel, Field

NO_TOOL_CALL = "(no tool call)"  # the action recorded for a reply without tool calls
PATTERNS = ("same_action_result", "same_error", "no_tool_calls", "alternation")


class StuckThresholds(BaseModel):
    """How many repeats make each pattern; 0 turns a pattern off."""

    same_action_result: int = Field(4, ge=0)  # identical action with identical result, in a row
    same_error: int = Field(4, ge=0)  # identical error type, in a row (whatever the action)
    no_tool_calls: int = Field(3, ge=0)  # replies without any tool call, in a row
    alternation: int = Field(3, ge=0)  # A-B-A-B...: number of full A-B pairs


Step = tuple[str, str, str | None]  # (action, observation, error type)


class StuckDetector:
    """Feed it each step; `check()` names the pattern once one crosses its threshold."""

    def __init__(self, thresholds: StuckThresholds | None = None) -> None:
        self.t = thresholds or StuckThresholds()
        self.steps: list[Step] = []

    def add(self, action: str, observation: str, error: str | None = None) -> None:
        """Record one step: a tool call (name and arguments), what it returned, its error type."""
        self.steps.append((action, observation, error))

    def check(self) -> str | None:
        """`"<pattern>: <what was seen>"` for the first pattern that matches the tail, else None."""
        s, t = self.steps, self.t
        if not s:
            return None
        if _tail_equal(s, t.same_action_result, key=lambda x: (x[0], x[1])):
            return (
                f"same_action_result: the same action with the same result "
                f"{t.same_action_result} times in a row: {s[-1][0][:120]}"
            )
        if s[-1][2] and _tail_equal(s, t.same_error, key=lambda x: x[2]):
            return f"same_error: the same error {t.same_error} times in a row: {s[-1][2]}"
        if s[-1][0] == NO_TOOL_CALL and _tail_equal(s, t.no_tool_calls, key=lambda x: x[0]):
            return f"no_tool_calls: {t.no_tool_calls} replies in a row without a tool call"
        n = 2 * t.alternation
        if n and len(s) >= n:
            tail = [(a, o) for a, o, _ in s[-n:]]
            a, b = tail[0], tail[1]
            if a != b and all(step == (a if i % 2 == 0 else b) for i, step in enumerate(tail)):
                return (
                    f"alternation: alternating between two actions {t.alternation} times: "
                    f"{a[0][:60]} / {b[0][:60]}"
                )
        return None


def _tail_equal(steps: list[Step], n: int, key: Callable[[Step], Hashable | Any]) -> bool:
    if n <= 0 or len(steps) < n:
        return False
    last = key(steps[-1])
    return all(key(x) == last for x in steps[-n:])
