"""The plan flow: a planner explores the tip read-only and returns tasks; sub-scopes go to
sub-plan flows, concurrently and recursively, up to the depth limit."""

from __future__ import annotations

from prefect import flow

from devswarm.run.run import get_run, plan_followups, plan_scope
from devswarm.schemas import PlannedTask, WorkerReport
from tasks.model import prefect_calls
from tasks.subflows import map_concurrently


@flow(
    name="plan",
    flow_run_name="plan · cycle {cycle} · {plan_path}",
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
    """Plan one scope; return its tasks and those of all its sub-scopes."""
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
    _artifact(plan_path, cycle, the_plan, tasks)

    def sub(scope):
        return plan(
            run_id,
            cycle,
            f"{plan_path}.{scope.name}",
            scope.goal,
            scope.paths,
            depth + 1,
            None,
        )

    # A fresh bounded pool per planner: recursion can never starve the workers' pool or itself.
    for _scope, fut in map_concurrently(sub, the_plan.scopes, run.config.max_planners):
        tasks.extend(fut.result())
    return tasks


@flow(
    name="followup",
    flow_run_name="followup · {task.spec.id}",
    persist_result=False,
    validate_parameters=False,  # called in-process with typed objects; see flows/work.py
)
def followup(run_id: str, task: PlannedTask, report: WorkerReport) -> list[PlannedTask]:
    """The owning planner reads a worker's handoff and may add follow-up tasks to the cycle."""
    return plan_followups(get_run(run_id), prefect_calls, task, report)


def _artifact(plan_path: str, cycle: int, the_plan, tasks: list[PlannedTask]) -> None:
    from prefect.artifacts import create_table_artifact

    rows = [
        {
            "task": t.key,
            "title": t.spec.title,
            "files": ", ".join(t.spec.files),
            "check": t.check or "",
        }
        for t in tasks
    ] + [
        {"task": f"scope:{s.name}", "title": s.goal, "files": ", ".join(s.paths), "check": ""}
        for s in the_plan.scopes
    ]
    create_table_artifact(
        key=f"plan-{plan_path}".replace(".", "-").replace("_", "-").lower()[:60],
        table=rows or [{"task": "(none)", "title": the_plan.summary, "files": "", "check": ""}],
        description=f"Plan of {plan_path}, cycle {cycle}: {the_plan.summary}",
    )
