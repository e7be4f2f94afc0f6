"""Planners: explore the cycle's tip read-only and turn a goal (or a worker's handoff) into
tasks for workers and scopes for sub-planners."""

from __future__ import annotations

from devswarm.agent.loop import DRAINED
from devswarm.ids import file_safe, followup_id, planner_id, task_key
from devswarm.roles import narrate, prompts
from devswarm.roles.rows import task_row
from devswarm.roles.session import CallFactory, agent_session
from devswarm.run.run import Run
from devswarm.schemas import Plan, PlannedTask, WorkerReport, validate_plan
from devswarm.tools.toolbox import Toolbox


def plan_scope(
    run: Run,
    calls: CallFactory,
    *,
    cycle: int,
    plan_path: str,
    goal: str,
    scope_paths: list[str],
    depth: int,
    previous: str | None = None,
) -> tuple[Plan, list[PlannedTask]]:
    """One planner explores the cycle's tip read-only and returns its Plan and the tasks it owns."""
    cfg = run.config
    allow_scopes = depth < cfg.plan_depth
    return _planner(
        run,
        calls,
        agent_id=planner_id(run.run_id, cycle, plan_path),
        cycle=cycle,
        plan_path=plan_path,
        tip=run.cycle_base(cycle),
        scope_paths=scope_paths,
        allow_scopes=allow_scopes,
        system=prompts.planner_system(cfg.max_tasks_per_plan, allow_scopes, cfg.max_scopes),
        user=prompts.planner_user(
            goal, scope_paths, cfg.check, previous, run.cycle_hot_files(cycle)
        ),
        required=depth == 0,
    )


def plan_followups(
    run: Run, calls: CallFactory, task: PlannedTask, report: WorkerReport
) -> list[PlannedTask]:
    """The planner that owns a task reads its worker's handoff and may add follow-up tasks."""
    _plan, tasks = _planner(
        run,
        calls,
        agent_id=followup_id(task.planner_agent_id, task.spec.id),
        cycle=task.cycle,
        plan_path=task.plan_path,
        tip=run.workspace.tip(),
        scope_paths=[],
        allow_scopes=False,
        system=prompts.planner_system(run.config.max_followup_tasks, False),
        user=prompts.followup_user(run.config.goal, task, report),
    )
    return tasks


def _planner(
    run: Run,
    calls: CallFactory,
    *,
    agent_id: str,
    cycle: int,
    plan_path: str,
    tip: str,
    scope_paths: list[str],
    allow_scopes: bool,
    system: str,
    user: str,
    required: bool = False,
) -> tuple[Plan, list[PlannedTask]]:
    """One planner's session; `required`: the cycle's root planner, without whose plan the run
    cannot go on (no plan ends it with status no_plan)."""
    cfg = run.config
    plan: Plan | None = None
    with (
        agent_session(
            run, calls, agent_id, "planner", cycle=cycle, plan_path=plan_path,
            model=cfg.models.planner, busy="planning",
        ) as session,
        run.workspace.worktree(file_safe(agent_id), tip) as wt,
    ):  # fmt: skip
        agent = session.new_agent(Toolbox(wt, read_only=True), system, user, answer_schema=Plan)
        for turn in range(2):  # an invalid plan goes back to the planner once, with the errors
            outcome = agent.run()
            if outcome.status != "finished" or outcome.answer is None:
                break
            plan = Plan.model_validate(outcome.answer)
            # The depth limit and the fan-out bound recursion: extra scopes are dropped.
            plan.scopes = plan.scopes[: cfg.max_scopes] if allow_scopes else []
            errors = validate_plan(plan, scope_paths)
            if not errors:
                break
            if turn == 0:
                agent.tell(prompts.invalid_plan(errors))
            else:
                plan = repair(plan, errors)
    if plan is None:
        why = f"the planner ended with {agent.outcome.status}: {agent.outcome.reason}"
        if required and agent.outcome.status not in DRAINED:  # nothing to work on or judge
            run.fail("no_plan", f"the model never produced a valid plan: {why}")
        plan = Plan(summary=why)
        narrate.planned(run, agent_id, plan_path, plan, [])
        return plan, []
    keys = {t.id: run.unique_task_key(task_key(cycle, plan_path, t.id)) for t in plan.tasks}
    tasks: list[PlannedTask] = []
    for spec in plan.tasks[: cfg.max_tasks_per_plan]:
        task = PlannedTask(
            spec=spec,
            key=keys[spec.id],
            cycle=cycle,
            plan_path=plan_path,
            planner_agent_id=agent_id,
            base_commit=tip,
            check=spec.check,
            depends_on=[keys[d] for d in spec.depends_on if d in keys],
        )
        tasks.append(task)
        task_row(run, task, "pending")
    run.progress.bump("planned", len(tasks))
    narrate.planned(run, agent_id, plan_path, plan, tasks)
    return plan, tasks


def repair(plan: Plan, errors: list[str]) -> Plan:
    """Still invalid after a second try: keep what is sound (first of each id, no bad edges, no scopes)."""
    seen: set[str] = set()
    tasks = []
    for t in plan.tasks:
        if t.id not in seen:
            seen.add(t.id)
            tasks.append(t)
    for t in tasks:
        t.depends_on = [d for d in t.depends_on if d in seen and d != t.id]
    fixed = Plan(summary=plan.summary, tasks=tasks, scopes=[])
    if validate_plan(fixed):  # a dependency cycle remains: drop the dependencies
        for t in fixed.tasks:
            t.depends_on = []
    return fixed
