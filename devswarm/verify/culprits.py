"""Acting on a confirmed culprit during the cycle, within bounds.

Policy `revert` (the default): a revert commit lands through the lane at once, and the task
goes back to the running cycle as its next attempt from the green tip, with the check's output
(devswarm.verify.actions.retry_task). Policy `repair`: the landing stays and the culprit's own
planner gets a repair task (its output and diff) in the running cycle; if the revert cannot be
made (later landings changed the same lines), a repair task is given instead. Retries and
repairs have their own bound, `max_repairs` per culprit task (a repair's own break counts
against the task it repairs); past it the landing is reverted and the task is not retried.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING

from devswarm.git.changes import contains
from devswarm.ids import revert_trailers
from devswarm.schemas import PlannedTask
from devswarm.verify.actions import repair_key, repair_task, retry_task, revert_message
from devswarm.verify.landings import Landing
from devswarm.verify.rows import VerifierRows

if TYPE_CHECKING:
    from devswarm.run.run import Run
    from devswarm.scheduler import Scheduler

SETTLE_SECONDS = 60.0  # how long a revert waits for the culprit's worker to report


class Culprits:
    """What the verifier does with culprits, and what it has given out to fix them."""

    def __init__(
        self,
        run: Run,
        rows: VerifierRows,
        mark: Callable[[dict[str, str]], None],
        landed: Callable[[str, str], None],
    ) -> None:
        self.run, self.ws, self.rows = run, run.workspace, rows
        self.check = run.config.check or ""
        self.mark, self.landed = mark, landed  # findings of landings; the verifier's own landings
        self.scheduler: Scheduler | None = None  # the running cycle's, when there is one
        self.fixes: Counter[str] = Counter()  # retries and repairs given, per culprit task
        self.origin: dict[str, str] = {}  # a repair task's key -> the task it repairs
        self.awaiting: dict[str, str] = {}  # culprit commit -> the task in flight fixing it
        self.fixed: dict[str, str] = {}  # culprit commit -> the commit its fix landed as

    def ended(self, key: str, landed_as: str | None = None) -> bool:
        """A task's report arrived; True if it was fixing a culprit (now free to act on).
        `landed_as`: the fix's commit, when it landed (a tip without it proves nothing)."""
        freed = [c for c, k in self.awaiting.items() if k == key]
        for commit in freed:
            del self.awaiting[commit]
            if landed_as:
                self.fixed[commit] = landed_as
        return bool(freed)

    def act(self, culprit: Landing, output: str, tip: str) -> tuple[str, str | None]:
        """Revert or repair; (what was done, the commit the verifier landed, if any)."""
        run, cfg = self.run, self.run.config
        key = culprit.task
        if culprit.run != run.run_id or not key or culprit.revert:
            return "none: not a landing of this run's tasks", None
        if culprit.last in self.awaiting:
            return f"none: {self.awaiting[culprit.last]} is fixing it", None
        fix = self.fixed.pop(culprit.last, None)
        if fix and not contains(self.ws.clone, tip, fix):  # checked before its fix landed
            self.fixed[culprit.last] = fix
            return f"none: its fix {fix[:10]} landed after this tip; a newer tip decides", None
        root = self.origin.get(key, key)
        scheduler = self.scheduler
        task = scheduler.task(key) if scheduler is not None else None
        may_fix = self.fixes[root] < cfg.max_repairs and not run.should_stop()
        if cfg.on_red == "repair" and may_fix and task is not None and scheduler is not None:
            return self._repair(scheduler, task, culprit, tip, output, root), None
        if scheduler is not None:  # the culprit's worker writes its rows first, then the revert
            _wait_until(lambda: scheduler.settled(key), SETTLE_SECONDS)
        result = self.ws.revert(
            culprit.first,
            culprit.last,
            revert_message(culprit, self.check),
            revert_trailers(run.run_id, key, culprit.last),
        )
        if result.status != "landed":
            if may_fix and task is not None and scheduler is not None:
                done = self._repair(scheduler, task, culprit, tip, output, root)
                return f"revert failed ({result.reason}); {done}", None
            return f"none: the revert failed ({result.reason})", None
        new_tip = result.new_tip or ""
        self.landed(new_tip, self.rows.revert_landing(key, task.cycle if task else None, result))
        self.mark({culprit.last: "reverted"})
        run.progress.bump("landed", -1)
        if may_fix and task is not None and scheduler is not None:
            self.fixes[root] += 1
            self.awaiting[culprit.last] = key
            scheduler.retry(retry_task(task, new_tip, self.check, output))
            done = f"reverted by {new_tip[:10]}; task retried"
        else:
            if scheduler is not None:
                scheduler.unland(key)
            # Only a task that is not retried ends "reverted": a retry's own rows follow at once,
            # and an older record would fill the reason they leave empty (the store's merge).
            self.rows.task_reverted(key, f"reverted by the verifier: `{self.check}` failed with it")
            run.progress.bump("reverted")
            done = f"reverted by {new_tip[:10]}; not retried"
        self.rows.flush()
        return done, new_tip

    def _repair(
        self,
        scheduler: Scheduler,
        task: PlannedTask,
        culprit: Landing,
        tip: str,
        output: str,
        root: str,
    ) -> str:
        key = self.run.unique_task_key(repair_key(task))
        repair = repair_task(self.ws, task, culprit, tip, self.check, output, key)
        self.fixes[root] += 1
        self.origin[key] = root
        self.awaiting[culprit.last] = key
        self.run.progress.bump("planned")
        scheduler.add([repair], first=True)
        return f"repair task {key} given to {task.planner_agent_id}"


def _wait_until(ready: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not ready() and time.monotonic() < deadline:
        time.sleep(0.05)
