"""The cycle's scheduler: workers stream, no barrier.

Tasks start as soon as the tasks they depend on have landed (a failed dependency skips its
dependants). Each report is handled the moment its worker ends: records imported, counters
updated, and the handoff given to the planner that owns the task, which may add follow-up tasks
(bounded per cycle) while other workers still run. The cycle ends when nothing is pending or
running.

Others may add tasks to a running cycle (thread-safe: add, retry, unland): the verifier gives a
culprit's task back as its next attempt after a revert, or a repair task to its planner. When
nothing is pending or running, `settle` (the verifier's) is waited for before the cycle ends,
so what it adds in the meantime still runs in this cycle.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

from devswarm.schemas import PlannedTask, WorkerReport

WorkFn = Callable[[PlannedTask, int], WorkerReport]  # (task, attempt) -> report
FollowupFn = Callable[[PlannedTask, WorkerReport], list[PlannedTask]]


def submit(pool: ThreadPoolExecutor, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Future:
    """`pool.submit` in a copy of the caller's context: a Prefect subflow started in the
    thread keeps its parent flow run (Prefect keeps it in context variables)."""
    return pool.submit(contextvars.copy_context().run, fn, *args, **kwargs)


def wants_followup(report: WorkerReport) -> bool:
    """A handoff worth a planner's attention: the task did not land, or the worker left work."""
    if report.status in {"skipped", "stopped", "budget_exhausted"}:
        return False
    return (
        report.status != "landed" or "Not done:" in report.handoff or "Concerns:" in report.handoff
    )


class Scheduler:
    """Runs one cycle's tasks with bounded concurrency and reacts to each report as it arrives."""

    def __init__(
        self,
        *,
        work: WorkFn,
        followup: FollowupFn | None,
        should_stop: Callable[[], str | None],
        tip: Callable[[], str],
        on_report: Callable[[PlannedTask, WorkerReport], None],
        on_skip: Callable[[PlannedTask, str], None],
        max_workers: int,
        max_planners: int = 2,
        max_followups: int = 4,
        landed: set[str] | None = None,
        settle: Callable[[], None] | None = None,
    ) -> None:
        self.work, self.followup = work, followup
        self.should_stop, self.tip = should_stop, tip
        self.on_report, self.on_skip = on_report, on_skip
        self.max_workers, self.max_planners, self.max_followups = (
            max_workers,
            max_planners,
            max_followups,
        )
        self.landed: set[str] = set(landed or ())  # task keys already on the branch (resume)
        self.reports: dict[str, WorkerReport] = {}
        self.followups = 0
        self.settle = settle
        self.tasks: dict[str, PlannedTask] = {}  # every task of the cycle by key
        self.attempts: dict[str, int] = {}  # key -> the last attempt started
        self._inbox: list[tuple[str, PlannedTask | str]] = []  # from other threads
        self._deferred: list[PlannedTask] = []  # retries waiting for their last attempt's report
        self._inbox_lock = threading.Lock()
        self._wake: Future = Future()  # done when the inbox has something
        self._active: set[str] = set()  # keys with an attempt running

    # -- from other threads --------------------------------------------------------------------

    def add(self, task: PlannedTask) -> None:
        """A new task for the running cycle (thread-safe)."""
        self._post("add", task)

    def retry(self, task: PlannedTask) -> None:
        """A task that landed, run again as its next attempt (its landing was reverted); it
        starts once its last attempt has reported (thread-safe)."""
        self._post("retry", task)

    def unland(self, key: str) -> None:
        """A landed task's landing was reverted and it will not run again: its dependants that
        have not started are skipped (thread-safe)."""
        self._post("unland", key)

    def task(self, key: str) -> PlannedTask | None:
        """The cycle's task with this key (None if it is not this cycle's)."""
        return self.tasks.get(key)

    def settled(self, key: str) -> bool:
        """Whether no attempt of this task is running (its last report is in)."""
        with self._inbox_lock:
            return key not in self._active

    def _post(self, kind: str, item: PlannedTask | str) -> None:
        with self._inbox_lock:
            self._inbox.append((kind, item))
            if not self._wake.done():
                self._wake.set_result(None)

    def _take_inbox(self) -> list[PlannedTask]:
        """New tasks from the inbox (and deferred retries whose last attempt reported)."""
        with self._inbox_lock:
            items, self._inbox = self._inbox, []
            if self._wake.done():
                self._wake = Future()
            active = set(self._active)
        items = [("retry", t) for t in self._deferred] + items
        self._deferred = []
        new: list[PlannedTask] = []
        for kind, item in items:
            if isinstance(item, str):  # unland
                self.landed.discard(item)
                if item in self.reports:
                    self.reports[item] = self.reports[item].model_copy(
                        update={"status": "reverted", "reason": "its landing was reverted"}
                    )
            elif kind == "retry" and item.key in active:
                self._deferred.append(item)
            else:
                if kind == "retry":
                    self.landed.discard(item.key)
                    self.reports.pop(item.key, None)
                self.tasks[item.key] = item
                new.append(item)
        return new

    # -- the cycle -----------------------------------------------------------------------------

    def run(self, tasks: list[PlannedTask]) -> list[WorkerReport]:
        pending = list(tasks)
        self.tasks.update((t.key, t) for t in tasks)
        running: dict[Future, tuple[str, PlannedTask, int]] = {}
        with (
            ThreadPoolExecutor(max(1, self.max_workers), thread_name_prefix="worker") as workers,
            ThreadPoolExecutor(
                max(1, self.max_planners), thread_name_prefix="followup"
            ) as planners,
        ):
            while True:
                # Tasks given back (a retry, a repair) go first: the tip is red until they land.
                pending = self._start_ready(self._take_inbox() + pending, running, workers)
                if not running and self.settle is not None:
                    self.settle()  # the verifier may still give tasks back to this cycle
                    pending = self._start_ready(self._take_inbox() + pending, running, workers)
                if not running:
                    for task in pending:  # waiting on tasks that will never land
                        self._skip(task, "its dependencies never landed")
                    break
                done, _ = wait([*running, self._wake], return_when=FIRST_COMPLETED)
                for fut in done:
                    if fut not in running:  # the inbox's wake-up
                        continue
                    kind, task, attempt = running.pop(fut)
                    if kind == "followup":
                        followups = self._followup_result(fut)
                        self.tasks.update((t.key, t) for t in followups)
                        pending.extend(followups)
                        continue
                    report = self._work_result(fut, task, attempt)
                    if report is None:  # crashed once: resubmitted from a fresh worktree
                        self._submit(workers, running, task, attempt + 1)
                        continue
                    with self._inbox_lock:
                        self._active.discard(task.key)
                    self.reports[task.key] = report
                    if report.status == "landed":
                        self.landed.add(task.key)
                    self.on_report(task, report)
                    if (
                        self.followup
                        and self.followups < self.max_followups
                        and wants_followup(report)
                        and not self.should_stop()
                    ):
                        self.followups += 1
                        running[submit(planners, self.followup, task, report)] = (
                            "followup",
                            task,
                            0,
                        )
        return list(self.reports.values())

    def _start_ready(
        self, pending: list[PlannedTask], running: dict, pool: ThreadPoolExecutor
    ) -> list[PlannedTask]:
        busy = sum(1 for kind, _, _ in running.values() if kind == "work")
        stop = self.should_stop()
        left = []
        for task in pending:
            failed = [d for d in task.depends_on if d in self.reports and d not in self.landed]
            if task.key in self.landed:
                self.reports[task.key] = WorkerReport(
                    task_key=task.key,
                    agent_id="",
                    status="landed",
                    reason="landed before the resume",
                )
            elif stop:
                self._skip(task, f"not started: {stop}")
            elif failed:
                self._skip(task, f"dependency {failed[0]} did not land")
            elif all(d in self.landed for d in task.depends_on) and busy < self.max_workers:
                if task.depends_on:  # start from the tip that holds its dependencies
                    task.base_commit = self.tip()
                self._submit(pool, running, task, self.attempts.get(task.key, 0) + 1)
                busy += 1
            else:
                left.append(task)
        return left

    def _submit(
        self, pool: ThreadPoolExecutor, running: dict, task: PlannedTask, attempt: int
    ) -> None:
        self.attempts[task.key] = attempt
        with self._inbox_lock:
            self._active.add(task.key)
        running[submit(pool, self.work, task, attempt)] = ("work", task, attempt)

    def _skip(self, task: PlannedTask, reason: str) -> None:
        self.reports[task.key] = WorkerReport(
            task_key=task.key, agent_id="", status="skipped", reason=reason
        )
        self.on_skip(task, reason)

    def _work_result(self, fut: Future, task: PlannedTask, attempt: int) -> WorkerReport | None:
        try:
            return fut.result()
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # the subflow crashed or was killed: once more
            if attempt < 2 and not self.should_stop():
                return None
            return WorkerReport(
                task_key=task.key,
                agent_id="",
                status="crashed",
                reason=f"{type(exc).__name__}: {exc}"[:500],
            )

    def _followup_result(self, fut: Future) -> list[PlannedTask]:
        try:
            return list(fut.result())
        except Exception:
            return []
