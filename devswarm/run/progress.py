"""A run's live counters and event lines: what the live panel, CI logs and the summary show."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterable

from devswarm.schemas import WorkerReport

# Counters that are not a task's outcome (the rest are report statuses: landed, failed, ...).
NOT_OUTCOMES = frozenset({"landed", "planned", "planning", "working", "conflicts"})
# "reverted" is an outcome: a task whose landing the verifier reverted and that is not retried.


class Progress:
    """Counters (planned, planning, working, conflicts, and each report status), the files that
    conflicted, and the listeners that hear the run's event lines. Thread-safe."""

    def __init__(self, listeners: Iterable[Callable[[str], None]] = ()) -> None:
        self._lock = threading.Lock()
        self.stats: Counter[str] = Counter()
        self.hot_files: Counter[str] = Counter()  # conflicts per file, this run and earlier ones
        self.listeners = list(listeners)
        self.tip = "unchecked"  # the tip's state, as the verifier last said (the live panel)

    def set_tip(self, state: str) -> None:
        """The branch tip's state in a few words (green at ..., red since task ..., checking)."""
        self.tip = state

    def emit(self, line: str) -> None:
        """One event line for whoever watches (the live panel, CI logs)."""
        for listener in self.listeners:
            try:
                listener(line)
            except Exception:  # a broken watcher must not stop the swarm
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
