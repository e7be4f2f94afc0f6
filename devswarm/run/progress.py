"""A run's live counters, event lines and events: what the live panel, CI logs, the Prefect UI
and automations see.

Two channels: event lines (`emit`), a sentence each for people watching (the terminal, the
swarm run's log), and events (`notify`), a name from EVENTS and plain fields, for
machines: Prefect's edge forwards them as `devswarm.<name>` events (tasks/events.py). Anyone in
the core may notify; a watcher that breaks never stops the swarm.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any, Literal, get_args

from devswarm.schemas import WorkerReport

# Counters that are not a task's outcome (the rest are report statuses: landed, failed, ...).
NOT_OUTCOMES = frozenset({"landed", "planned", "planning", "working", "conflicts"})
# "reverted" is an outcome: a task whose landing the verifier reverted and that is not retried.

EventName = Literal[
    "task.landed",  # a worker's commit reached the branch
    "task.conflicted",  # landing met a conflict; it goes back to the worker's agent
    "task.abandoned",  # given up (conflicts unresolved, check failing, agent stopped)
    "tip.turned-red",  # the branch tip's check fails where the last checked tip passed
    "tip.turned-green",  # the tip passes again
    "budget.running-low",  # 80 % of a run budget (tokens, dollars, wall time) is spent
    "budget.exhausted",  # a run budget ran out; the swarm drains
    "run.finished",  # the run ended; its status says how
]
EVENTS: tuple[str, ...] = get_args(EventName)  # Prefect names them devswarm.<name>

Listener = Callable[[str], None]
# (event name, fields): `task` and `agent` name the task key and agent id; the rest is payload.
Sink = Callable[[str, dict[str, Any]], None]


class Progress:
    """Counters (planned, planning, working, conflicts, skipped and each report status), the
    files that conflicted, the listeners of the run's event lines and the sinks of its events.
    Thread-safe."""

    def __init__(self, listeners: Iterable[Listener] = (), sinks: Iterable[Sink] = ()) -> None:
        self._lock = threading.Lock()
        self.stats: Counter[str] = Counter()
        self.hot_files: Counter[str] = Counter()  # conflicts per file, this run and earlier ones
        self.listeners = list(listeners)
        self.sinks = list(sinks)
        self.tip = "unchecked"  # the tip's state, as the verifier last said (the live panel)

    def set_tip(self, state: str) -> None:
        """The branch tip's state in a few words (green at ..., red since task ..., checking)."""
        self.tip = state

    def emit(self, line: str) -> None:
        """One event line for whoever watches (the live panel, CI logs, the swarm run's log)."""
        for listener in list(self.listeners):
            try:
                listener(line)
            except Exception:  # a broken watcher must not stop the swarm
                pass

    def notify(self, name: EventName, **fields: Any) -> None:
        """One event for machines (automations): `name` from EVENTS; `task` (a task key)
        and `agent` (an agent id) name what it is about; other fields are short plain values.

        The verifier tells the tip's colour here: notify("tip.turned-red", commit=sha, ...)."""
        if name not in EVENTS:
            raise ValueError(f"unknown devswarm event {name!r}; known: {', '.join(EVENTS)}")
        for sink in list(self.sinks):
            try:
                sink(name, dict(fields))
            except Exception:  # events are a side channel: never the swarm's failure
                pass

    def bump(self, key: str, n: int = 1) -> None:
        with self._lock:
            self.stats[key] += n

    def count_report(self, report: WorkerReport) -> None:
        with self._lock:
            self.stats[report.status] += 1
            self.stats["conflicts"] += report.conflicts

    def conflicted(self, files: Iterable[str]) -> None:
        with self._lock:
            self.hot_files.update(files)

    def hot(self) -> dict[str, int]:
        with self._lock:
            return dict(self.hot_files)

    def counts(self) -> dict[str, int]:
        """A consistent copy of the counters."""
        with self._lock:
            return dict(self.stats)

    def not_landed(self) -> int:
        """Tasks that ended without landing (failed, abandoned, skipped, ...)."""
        with self._lock:
            return sum(v for k, v in self.stats.items() if k not in NOT_OUTCOMES)

    def board(self) -> dict[str, int]:
        """The tasks of the run as a person watching counts them: planners `planning` now;
        tasks `planned` so far, `working`, `pending`, `landed`, `failed` (every other ending
        but skipped), `skipped`, and `settled` (landed, failed or skipped); `conflicts`."""
        s = Counter(self.counts())
        failed = sum(v for k, v in s.items() if k not in NOT_OUTCOMES | {"skipped"})
        settled = s["landed"] + failed + s["skipped"]
        return {
            "planning": s["planning"],
            "planned": s["planned"],
            "working": s["working"],
            "pending": max(0, s["planned"] - s["working"] - settled),
            "landed": s["landed"],
            "failed": failed,
            "skipped": s["skipped"],
            "settled": settled,
            "conflicts": s["conflicts"],
        }

    def percent_settled(self) -> float:
        """Tasks settled of the tasks planned so far, 0–100 (0 before any plan): a run whose
        tasks all ended, landed or not, is at 100."""
        board = self.board()
        if not board["planned"]:
            return 0.0
        return min(100.0, 100.0 * board["settled"] / board["planned"])
