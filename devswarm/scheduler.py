"""The cycle's scheduler: workers stream, no barrier.

Tasks start as soon as the tasks they depend on have landed (a failed dependency skips its
dependants). Each report is handled the moment its worker ends: records imported, counters
updated, and the handoff given to the planner that owns the task, which may add follow-up tasks
(bounded per cycle) while other workers still run. The cycle ends when nothing is pending or
running and nobody holds it open.

Tasks join a running cycle through thread-safe entries: `add(tasks)` — planners hand their
tasks to it the moment they return them (while sub-planners and siblings still plan), and the
verifier a repair task; `retry(task)` — the verifier gives a reverted task back as its next
attempt; `unland(key)` — a reverted task that will not run again. Tasks given back start before
those still waiting (the tip is red until they land). Whoever may still add tasks holds the
cycle open with `hold()`; the scheduler's producers (run(producers=...): the cycle's planner
tree) are held for as long as they run; and when nothing is pending or running, `settle` (the
verifier's) is waited for before the cycle ends, so what it gives back still runs in it.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
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


class WorkerCrashed(Exception):
    """A worker's process died (its flow run crashed). The scheduler resubmits a crashed worker's
    task once (this, or a BaseException that is no Exception: an in-process subflow killed),
    unless the task's commit reached the branch first. A worker that raised an Exception is not
    resubmitted: Prefect's flow retries already ran it again (its answered calls replayed free)."""


def already_landed(task_key: str, when: str) -> WorkerReport:
    """The report of a task whose commit is already on the branch (its trailer): not run again."""
    return WorkerReport(task_key=task_key, agent_id="", status="landed", reason=f"landed {when}")


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
        on_branch: Callable[[], set[str]] = set,
        settle: Callable[[], None] | None = None,
    ) -> None:
        """`landed`: task keys already on the branch (a resumed run's); `on_branch`: the task
        keys on the branch now, read before a crashed worker's task is resubmitted; `settle`:
        waited for when nothing is pending or running (the verifier)."""
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
        self.on_branch = on_branch
        self.settle = settle
        self.reports: dict[str, WorkerReport] = {}
        self.tasks: dict[str, PlannedTask] = {}  # every task of the cycle by key
        self.attempts: dict[str, int] = {}  # key -> the last attempt started
        self.followups = 0
        self._lock = threading.Lock()
        self._inbox: list[tuple[str, PlannedTask | str]] = []  # not yet seen by the run loop
        self._deferred: list[PlannedTask] = []  # retries waiting for their last attempt's report
        self._active: set[str] = set()  # keys with an attempt running
        self._holds = 0
        self._wake: Future[None] = Future()  # completed by add and by a hold's release

    def add(self, tasks: Iterable[PlannedTask], *, first: bool = False) -> None:
        """Thread-safe: `tasks` join the cycle and start as soon as their dependencies (keys of
        tasks added with them or before) have landed and a worker is free; a key already on the
        branch counts as landed and does not run again. Added before `run`, they start with it;
        added after the cycle ended, they are never run (hold the cycle open to add later).
        `first`: ahead of the tasks still waiting (a repair: the tip is red until it lands)."""
        self._post([("first" if first else "add", t) for t in tasks])

    def retry(self, task: PlannedTask) -> None:
        """Thread-safe: a task that landed, run again as its next attempt (its landing was
        reverted); it starts once its last attempt has reported."""
        self._post([("retry", task)])

    def unland(self, key: str) -> None:
        """Thread-safe: a landed task's landing was reverted and it will not run again: its
        dependants that have not started are skipped."""
        self._post([("unland", key)])

    def task(self, key: str) -> PlannedTask | None:
        """The cycle's task with this key (None if it is not this cycle's)."""
        return self.tasks.get(key)

    def settled(self, key: str) -> bool:
        """Whether no attempt of this task is running (its last report is in)."""
        with self._lock:
            return key not in self._active

    def _post(self, items: list[tuple[str, PlannedTask | str]]) -> None:
        with self._lock:
            self._inbox.extend(items)
            self._wake_up()

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        """Keep the cycle open while inside, even with nothing pending or running: for whoever
        may still `add` tasks (a planner still planning, a verifier still checking)."""
        self._hold()
        try:
            yield
        finally:
            self._release()

    def run(
        self,
        tasks: Iterable[PlannedTask] = (),
        *,
        producers: Sequence[Callable[[], Any]] = (),
    ) -> list[WorkerReport]:
        """Run the cycle to its end and return its reports. Each producer runs on its own thread
        (in a copy of this context), holding the cycle open, and adds tasks as it finds them;
        the first one that raised re-raises here once everything started has settled."""
        self.add(tasks)
        pending: list[PlannedTask] = []
        running: dict[Future, tuple[str, PlannedTask, int]] = {}
        with (
            ThreadPoolExecutor(max(1, self.max_workers), thread_name_prefix="worker") as workers,
            ThreadPoolExecutor(
                max(1, self.max_planners), thread_name_prefix="followup"
            ) as planners,
            ThreadPoolExecutor(max(1, len(producers)), thread_name_prefix="producer") as makers,
        ):
            made = []
            for fn in producers:
                self._hold()  # before the loop first looks: the cycle cannot end before it ran
                made.append(submit(makers, self._produce, fn))
            while True:
                wake, held = self._take(pending)
                pending = self._start_ready(pending, running, workers)
                if not running and not held and self.settle is not None:
                    self.settle()  # the verifier may still give tasks back to this cycle
                    wake, held = self._take(pending)
                    pending = self._start_ready(pending, running, workers)
                if not running and not held:
                    for task in pending:  # waiting on tasks that will never land
                        self._skip(task, "its dependencies never landed")
                    break
                done, _ = wait([*running, wake], return_when=FIRST_COMPLETED)
                for fut in done:
                    if fut is wake:
                        continue
                    kind, task, attempt = running.pop(fut)
                    if kind == "followup":
                        self.add(self._followup_result(fut))
                        continue
                    report = self._work_result(fut, task, attempt)
                    if report is None:  # its process died once: resubmitted, fresh worktree
                        self._submit(workers, running, task, attempt + 1)
                        continue
                    with self._lock:
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
        for fut in made:
            fut.result()  # a producer's exception, now that what it started has settled
        return list(self.reports.values())

    def _produce(self, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        finally:
            self._release()

    def _hold(self) -> None:
        with self._lock:
            self._holds += 1

    def _release(self) -> None:
        with self._lock:
            self._holds -= 1
            self._wake_up()

    def _take(self, pending: list[PlannedTask]) -> tuple[Future, bool]:
        """Move what arrived to `pending` (tasks given back first); the future that the next
        arrival or release completes, and whether the cycle is held open."""
        with self._lock:
            if self._wake.done():
                self._wake = Future()
            items, self._inbox = self._inbox, []
            active, wake, held = set(self._active), self._wake, self._holds > 0
        items = [("retry", t) for t in self._deferred] + items
        self._deferred = []
        first: list[PlannedTask] = []
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
                (first if kind in ("retry", "first") else pending).append(item)
        pending[:0] = first
        return wake, held

    def _wake_up(self) -> None:
        """Wake the run loop (called with the lock held)."""
        if not self._wake.done():
            self._wake.set_result(None)

    def _start_ready(
        self, pending: list[PlannedTask], running: dict, pool: ThreadPoolExecutor
    ) -> list[PlannedTask]:
        busy = sum(1 for kind, _, _ in running.values() if kind == "work")
        stop = self.should_stop()
        left = []
        for task in pending:
            failed = [d for d in task.depends_on if d in self.reports and d not in self.landed]
            if task.key in self.landed:
                self.reports[task.key] = already_landed(task.key, "before the resume")
                if self.on_landed_before:
                    self.on_landed_before(task)
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
        with self._lock:
            self._active.add(task.key)
        running[submit(pool, self.work, task, attempt)] = ("work", task, attempt)

    def _skip(self, task: PlannedTask, reason: str) -> None:
        self.reports[task.key] = WorkerReport(
            task_key=task.key, agent_id="", status="skipped", reason=reason
        )
        self.on_skip(task, reason)

    def _work_result(self, fut: Future, task: PlannedTask, attempt: int) -> WorkerReport | None:
        """The worker's report; None to resubmit it (it crashed, for the first time)."""
        try:
            return fut.result()
        except KeyboardInterrupt:
            raise
        except BaseException as exc:
            if isinstance(exc, Exception) and not isinstance(exc, WorkerCrashed):
                return self._crashed(task, exc)  # it raised: its flow retries ran it again
            # It crashed (its process died, or its thread was killed): Prefect retries no crash.
            if task.key in self.on_branch():  # it landed before it died: never twice
                return already_landed(task.key, "before its worker crashed")
            if attempt < 2 and not self.should_stop():
                return None
            return self._crashed(task, exc)

    @staticmethod
    def _crashed(task: PlannedTask, exc: BaseException) -> WorkerReport:
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
