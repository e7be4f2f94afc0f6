"""Strict mode (`--verify-before-land`): the check runs on what would land, before it lands.

A merge queue beside the lane, like Zuul's: workers' changes queue up; each round takes up to
`width` of them, replays them as a stack onto the tip (the first on the tip, the second on the
first, ...), checks every candidate of the stack at once, and lands them in order, each with a
compare-and-swap from the one before (the lane's lock held only for that, milliseconds). The
first candidate that fails splits the batch: it is refused, and the ones behind it, built on
it, go back to the queue to be rebuilt on the new tip. A red is confirmed by a second check
before a change is refused, so a flaky check does not refuse good work.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from devswarm.git.changes import Merged, merge_base, replay_change
from devswarm.git.landing import LandResult
from devswarm.git.plumbing import git
from devswarm.git.refs import worktree_head

if TYPE_CHECKING:
    from devswarm.run.run import Run

_MOVED = "the tip moved before the candidate landed"


@dataclass
class _Entry:
    worktree: Path
    head: str
    queued: float = field(default_factory=time.perf_counter)
    future: Future = field(default_factory=Future)

    def settle(self, result: LandResult) -> None:
        result.wait_ms = (time.perf_counter() - self.queued) * 1000 - result.duration_ms
        result.duration_ms = (time.perf_counter() - self.queued) * 1000
        self.future.set_result(result)


class MergeQueue:
    """Lands workers' changes only after the check passed on the commit that would land."""

    def __init__(self, run: Run, *, width: int = 2, gather_seconds: float = 0.05) -> None:
        self.run, self.ws, self.checks = run, run.workspace, run.checks
        self.width, self.gather_seconds = max(1, width), gather_seconds
        self._cond = threading.Condition()
        self._entries: list[_Entry] = []
        self._stopped = False
        self._thread: threading.Thread | None = None
        self.rounds = 0  # batches checked (for the bench and the tests)

    def land(self, worktree: Path) -> LandResult:
        """Queue the worktree's change and wait until it landed, was refused or conflicted."""
        entry = _Entry(Path(worktree), worktree_head(Path(worktree)))
        with self._cond:
            if self._stopped:
                return LandResult(status="error", reason="the merge queue has stopped")
            self._entries.append(entry)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="merge-queue", daemon=True)
                self._thread.start()
            self._cond.notify_all()
        return entry.future.result()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            for entry in self._entries:
                entry.future.set_result(LandResult(status="error", reason="the run ended"))
            self._entries.clear()
            self._cond.notify_all()

    def _loop(self) -> None:
        with ThreadPoolExecutor(self.width, thread_name_prefix="candidate") as pool:
            while True:
                with self._cond:
                    while not self._entries and not self._stopped:
                        self._cond.wait()
                    if self._stopped:
                        return
                time.sleep(self.gather_seconds)  # let the changes that finish together batch
                with self._cond:
                    batch = self._entries[: self.width]
                try:
                    done = self._round(batch, pool)
                except Exception as exc:  # a broken round refuses nothing silently
                    done = batch
                    for entry in batch:
                        if not entry.future.done():
                            entry.settle(LandResult(status="error", reason=str(exc)))
                with self._cond:
                    self._entries = [e for e in self._entries if e not in done]

    def _round(self, batch: list[_Entry], pool: ThreadPoolExecutor) -> list[_Entry]:
        """Stack, check at once, land in order; the entries settled."""
        self.rounds += 1
        tip = self.ws.tip()
        stack: list[tuple[_Entry, str, str]] = []  # (entry, candidate, its parent)
        done: list[_Entry] = []
        onto = tip
        for entry in batch:
            base = merge_base(self.ws.clone, entry.head, tip)
            made = replay_change(self.ws.clone, base, entry.head, onto)
            if isinstance(made, Merged) or made == onto:
                if onto != tip:
                    break  # against a candidate ahead of it: retried on the new tip
                entry.settle(_conflict(self.ws.clone, entry, tip, made))
                done.append(entry)
                continue
            stack.append((entry, made, onto))
            onto = made
        results = list(pool.map(self.checks.at, [made for _, made, _ in stack]))
        for (entry, made, parent), res in zip(stack, results, strict=True):
            if res is not None and not res.passed:
                res = self.checks.at(made, fresh=True)  # confirm before refusing
            if res is not None and not res.passed:
                entry.settle(
                    LandResult(
                        status="refused",
                        commit=made,
                        old_tip=parent,
                        reason=f"the check fails on the landing candidate:\n{res.output[-3000:]}",
                    )
                )
                done.append(entry)
                break  # the rest was built on it: back to the queue, rebuilt on the new tip
            landed = self.ws.land_made(
                lambda t, made=made, parent=parent: (
                    made if t == parent else LandResult(status="refused", old_tip=t, reason=_MOVED)
                )
            )
            if landed.status == "refused" and landed.reason == _MOVED:
                break  # another process moved the branch: rebuild
            entry.settle(landed)
            done.append(entry)
            if landed.status != "landed":
                break
        return done


def _conflict(clone: Path, entry: _Entry, tip: str, made: str | Merged) -> LandResult:
    if not isinstance(made, Merged):  # nothing new: the change is on the branch already
        return LandResult(
            status="landed",
            commit=entry.head,
            old_tip=tip,
            new_tip=tip,
            reason="the changes were already on the branch",
        )
    base = merge_base(clone, entry.head, tip)
    log = git(
        clone, "log", "--format=%h %s", "-n", "20", f"{base}..{tip}", "--", *made.conflicts
    ).stdout
    return LandResult(
        status="conflict",
        commit=entry.head,
        old_tip=tip,
        conflict_files=made.conflicts,
        their_commits=[line for line in log.splitlines() if line],
        reason=f"replay onto {tip[:12]} conflicts in {', '.join(made.conflicts)}",
    )
