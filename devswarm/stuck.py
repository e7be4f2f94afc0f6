"""Stuck detection: small, reusable, each pattern with its own threshold.

An agent step is summarised as (action, observation, error). The detector looks at the tail of
that history and names the first pattern it sees, or returns None.
"""

from __future__ import annotations

from pydantic import BaseModel


class StuckThresholds(BaseModel):
    same_action_result: int = 4  # identical action with identical result, in a row
    same_error: int = 4  # identical error, in a row (whatever the action)
    no_tool_calls: int = 3  # replies without any tool call, in a row
    alternation: int = 3  # A-B-A-B...: number of full A-B pairs


class StuckDetector:
    """Feed it each step; `check()` names the pattern once one crosses its threshold."""

    def __init__(self, thresholds: StuckThresholds | None = None) -> None:
        self.t = thresholds or StuckThresholds()
        self.steps: list[tuple[str, str, str | None]] = []

    def add(self, action: str, observation: str, error: str | None = None) -> None:
        self.steps.append((action, observation, error))

    def check(self) -> str | None:
        s = self.steps
        if _tail_equal(s, self.t.same_action_result, key=lambda x: (x[0], x[1])):
            return f"same action and result repeated {self.t.same_action_result} times: {s[-1][0][:80]}"
        if s and s[-1][2] and _tail_equal(s, self.t.same_error, key=lambda x: x[2]):
            return f"same error repeated {self.t.same_error} times: {s[-1][2]}"
        if (
            s
            and s[-1][0] == "(no tool call)"
            and _tail_equal(s, self.t.no_tool_calls, key=lambda x: x[0])
        ):
            return f"{self.t.no_tool_calls} replies in a row without a tool call"
        n = 2 * self.t.alternation
        if len(s) >= n:
            tail = [(a, o) for a, o, _ in s[-n:]]
            a, b = tail[0], tail[1]
            if a != b and all(step == (a if i % 2 == 0 else b) for i, step in enumerate(tail)):
                return f"alternating between two actions {self.t.alternation} times: {a[0][:40]} / {b[0][:40]}"
        return None


def _tail_equal(steps: list, n: int, key) -> bool:
    if n <= 0 or len(steps) < n:
        return False
    last = key(steps[-1])
    return all(key(x) == last for x in steps[-n:])
