"""The plan flow: a planner explores the cycle's base read-only and hands its tasks to the running
cycle at once; sub-scopes go to sub-plan flows, concurrently and recursively, up to the depth
limit."""

from __future__ import annotations

from prefect import flow

from devswarm.ids import FOLLOWUP_RUN_NAME, PLAN_RUN_NAME
from devswarm.roles.planner import plan_followups, plan_scope
from devswarm.run.registry import get_run
from devswarm.schemas import PlannedTask, WorkerReport
from tasks.artifacts import plan_artifact
from tasks.model import prefect_calls
from tasks.subflows import map_concurrently


@flow(
    name="plan",
    flow_run_name=PLAN_RUN_NAME,
    persist_result=False,
    validate_parameters=False,  # called in-process with typed objects; see flows/work.py
)
def plan(
    run_id: str,
    cycle: int,
    plan_path: str = "root",
    goal: str = "",
    scope_paths: list[str] | None = None,
    depth: int = 0,
    previous: str | None = None,
) -> list[PlannedTask]:
    """Plan one scope; hand its tasks to the running cycle at once, then plan its sub-scopes;
    return its tasks and those of all its sub-scopes."""
    run = get_run(run_id)
    the_plan, tasks = plan_scope(
        run,
        prefect_calls,
        cycle=cycle,
        plan_path=plan_path,
        goal=goal or run.config.goal,
        scope_paths=scope_paths or [],
        depth=depth,
        previous=previous,
    )
    plan_artifact(plan_path, cycle, the_plan, tasks)
    run.dispatch(tasks)  # workers start on them now, while the sub-planners below still plan

    def sub(scope):
        return plan(run_id, cycle, f"{plan_path}.{scope.name}", scope.goal, scope.paths, depth + 1)

    # A fresh bounded pool per planner: recursion can never starve the workers' pool or itself.
    for _scope, fut in map_concurrently(sub, the_plan.scopes, run.config.max_planners):
        tasks.extend(fut.result())
    return tasks


@flow(
    name="followup",
    flow_run_name=FOLLOWUP_RUN_NAME,
    persist_result=False,
    validate_parameters=False,  # called in-process with typed objects; see flows/work.py
)
def followup(run_id: str, task: PlannedTask, report: WorkerReport) -> list[PlannedTask]:
    """The owning planner reads a worker's handoff and may add follow-up tasks to the cycle."""
    return plan_followups(get_run(run_id), prefect_calls, task, report)
