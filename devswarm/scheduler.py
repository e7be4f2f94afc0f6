"""The cycle's scheduler: workers stream, no barrier.

Tasks start as soon as the tasks they depend on have landed (a failed dependency skips its
dependants). Each report is handled the moment its worker ends: records imported, counters
updated, and the handoff given to the planner that owns the task, which may add follow-up tasks
(bounded per cycle) while other workers still run. The cycle ends when nothing is pending or
running.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

from devswarm.schemas import PlannedTask, WorkerReport

WorkFn = Callable[[PlannedTask, int], WorkerReport]  # (task, attempt) -> report
FollowupFn = Callable[[PlannedTask, WorkerReport], list[PlannedTask]]
# Report statuses of a worker that ended because the swarm drains: it gave nothing up.
DRAINED = frozenset({"skipped", "stopped", "budget_exhausted"})


def submit(pool: ThreadPoolExecutor, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Future:
    """`pool.submit` in a copy of the caller's context: a Prefect subflow started in the
    thread keeps its parent flow run (Prefect keeps it in context variables)."""
    return pool.submit(contextvars.copy_context().run, fn, *args, **kwargs)


def wants_followup(report: WorkerReport) -> bool:
    """A handoff worth a planner's attention: the task did not land, or the worker left work."""
    if report.status in DRAINED:
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
        on_landed_before: Callable[[PlannedTask], None] | None = None,
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
        self.on_landed_before = on_landed_before
        self.reports: dict[str, WorkerReport] = {}
        self.followups = 0

    def run(self, tasks: list[PlannedTask]) -> list[WorkerReport]:
        pending = list(tasks)
        running: dict[Future, tuple[str, PlannedTask, int]] = {}
        with (
            ThreadPoolExecutor(max(1, self.max_workers), thread_name_prefix="worker") as workers,
            ThreadPoolExecutor(
                max(1, self.max_planners), thread_name_prefix="followup"
            ) as planners,
        ):
            while pending or running:
                pending = self._start_ready(pending, running, workers)
                if not running:
                    for task in pending:  # waiting on tasks that will never land
                        self._skip(task, "its dependencies never landed")
                    break
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for fut in done:
                    kind, task, attempt = running.pop(fut)
                    if kind == "followup":
                        pending.extend(self._followup_result(fut))
                        continue
                    report = self._work_result(fut, task, attempt)
                    if report is None:  # crashed once: resubmitted from a fresh worktree
                        running[submit(workers, self.work, task, attempt + 1)] = (
                            "work",
                            task,
                            attempt + 1,
                        )
                        continue
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
                if self.on_landed_before:
                    self.on_landed_before(task)
            elif stop:
                self._skip(task, f"not started: {stop}")
            elif failed:
                self._skip(task, f"dependency {failed[0]} did not land")
            elif all(d in self.landed for d in task.depends_on) and busy < self.max_workers:
                if task.depends_on:  # start from the tip that holds its dependencies
                    task.base_commit = self.tip()
                running[submit(pool, self.work, task, 1)] = ("work", task, 1)
                busy += 1
            else:
                left.append(task)
        return left

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
