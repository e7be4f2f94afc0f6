"""The work flow: one worker on one task — worktree → agent → checks → commit → land → report."""

from __future__ import annotations

from prefect import flow
from prefect.runtime import flow_run

from devswarm.ids import WORK_RUN_NAME
from devswarm.roles.worker import work_task
from devswarm.run.registry import get_run
from devswarm.schemas import PlannedTask, WorkerReport
from tasks.artifacts import work_artifact
from tasks.landing import land
from tasks.model import prefect_calls
from tasks.subflows import STARTS


@flow(
    name="work",
    flow_run_name=WORK_RUN_NAME,
    persist_result=False,
    # Called in-process with typed objects: Prefect would build a pydantic model of the
    # signature for every call to check them (2 % of the swarm process's CPU at 100 agents).
    validate_parameters=False,
    # One retry when the worker raises (it never does for the task's own failure): the same
    # agent again, its answered model calls replayed from the cache for free.
    retries=1,
    retry_delay_seconds=0,
)
def work(run_id: str, task: PlannedTask, attempt: int = 1) -> WorkerReport:
    """Run one worker to the end and return its report (never raises for the task's own failure)."""
    STARTS.started()  # the next queued subflow may start (tasks/subflows.py StartGate)
    run = get_run(run_id)
    retried = flow_run.run_count > 1
    report = work_task(run, prefect_calls, task, attempt=attempt, land=land, retried=retried)
    work_artifact(report, task)
    return report
