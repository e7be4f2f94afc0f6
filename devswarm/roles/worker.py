"""Workers: one task each, alone in a worktree — agent → checks → commit → land → report.

A check that fails or a landing that conflicts goes back to the same agent, within bounds
(check_turns, conflict_turns); then the task ends with a handoff for its planner.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from devswarm.agent.loop import Agent
from devswarm.git.conflict import ConflictError
from devswarm.git.landing import Lander, LandResult
from devswarm.git.workspace import CommitRefused
from devswarm.ids import file_safe, trailers, worker_id
from devswarm.model.errors import ModelCallError
from devswarm.records import now
from devswarm.roles import narrate, prompts
from devswarm.roles.rows import landing_row, task_row
from devswarm.roles.session import CallFactory, Session, agent_session
from devswarm.run.run import Run
from devswarm.scheduler import already_landed
from devswarm.schemas import PlannedTask, WorkerReport
from devswarm.tools.toolbox import Toolbox
from devswarm.verify.gate import repository_gate

# (the lane: the workspace, or the merge queue in strict mode; worktree; agent id)
LandFn = Callable[[Lander, Path, str], LandResult]


def task_worker_id(run: Run, task: PlannedTask, attempt: int = 1) -> str:
    return worker_id(run.run_id, task.cycle, task.plan_path, task.spec.id, attempt)


def _land_plain(lane: Lander, worktree: Path, _agent_id: str) -> LandResult:
    return lane.land(worktree)


def work_task(
    run: Run,
    calls: CallFactory,
    task: PlannedTask,
    *,
    attempt: int = 1,
    land: LandFn = _land_plain,
    retried: bool = False,
) -> WorkerReport:
    """One worker: worktree at the task's base → agent → checks → commit → land → report.
    `retried`: the same worker runs again after raising (a Prefect flow retry): a task whose
    commit reached the branch is not done twice; otherwise its answered calls replay free."""
    if retried and task.key in run.landed_task_keys():
        return already_landed(task.key, "before its worker's retry")
    cfg = run.config
    agent_id = task_worker_id(run, task, attempt)
    report = WorkerReport(
        task_key=task.key,
        agent_id=agent_id,
        status="error",
        records=str(run.agent_log(agent_id).path),
    )
    task_row(run, task, "running", worker=agent_id, attempts=attempt, started=True)
    try:
        with agent_session(
            run, calls, agent_id, "worker", cycle=task.cycle, plan_path=task.plan_path,
            task_key=task.key, model=cfg.models.worker, busy="working",
        ) as session:  # fmt: skip
            session.report = report
            narrate.worker_started(run, agent_id, task, attempt)
            try:
                if reason := run.should_stop():
                    report.status, report.reason = "skipped", f"not started: {reason}"
                    return report
                if landed := run.workspace.landed_commit(run.run_id, task.key):
                    # Run again after a crash that came after its landing: never land twice.
                    report.status, report.commit = "landed", landed
                    report.reason = "already on the branch (landed before this attempt)"
                    return report
                with run.workspace.worktree(file_safe(agent_id), task.base_commit) as wt:
                    _work(run, session, task, wt, report, land)
            finally:
                _settle(report, session.outcome)
    finally:
        task_row(
            run,
            task,
            report.status,
            worker=agent_id,
            attempts=attempt,
            reason=report.reason,
            commit=report.commit,
            ended=True,
        )
        narrate.worker_ended(run, report)
    return report


def _work(
    run: Run, session: Session, task: PlannedTask, wt: Path, report: WorkerReport, land: LandFn
) -> None:
    """In the worktree: setup, the agent, then checks, commit and landing (see _finish)."""
    cfg = run.config
    landed: LandResult | None = None
    try:
        setup = run.checks.setup(wt, task.base_commit)
        if setup is not None and not setup.passed:
            narrate.check(run, "worker", session.agent_id, "setup", setup)
            report.status = "setup_failed"
            report.reason = f"setup `{setup.command}` failed: {setup.output[-2000:]}"
            return
        toolbox = Toolbox(
            wt,
            command_timeout=cfg.command_timeout,
            env=run.env(),
            sandbox=cfg.sandbox,
            secrets=run.secrets,
            hidden=run.hidden,
        )
        agent = session.new_agent(toolbox, prompts.WORKER, prompts.worker_user(task, ""))
        agent.run()
        landed = _finish(run, agent, task, wt, report, land)
    except ModelCallError as exc:
        report.status, report.reason = "error", f"model call failed: {exc}"
    finally:
        # What landed (the worktree may hold others' changes after a conflict turn), else
        # what the worker changed.
        if landed is not None and landed.old_tip and landed.new_tip:
            report.diff_stat = _diff_stat(run, wt, landed.old_tip, landed.new_tip)
        else:
            report.diff_stat = _diff_stat(run, wt, task.base_commit)


def _settle(report: WorkerReport, outcome: Any) -> None:
    """The report's usage and handoff, from how the agent ended."""
    if outcome is not None:
        report.input_tokens, report.output_tokens = outcome.input_tokens, outcome.output_tokens
        report.cost_usd = round(outcome.cost_usd, 6)
    if outcome is not None and outcome.finish:
        report.handoff = _handoff(outcome.finish)
    elif not report.handoff:
        report.handoff = report.reason or ""


def _finish(
    run: Run, agent: Agent, task: PlannedTask, wt: Path, report: WorkerReport, land: LandFn
) -> LandResult | None:
    """After the agent finishes: its task's check, commit, the repository gate, land; a failed
    check, a refused commit or a conflict goes back to the agent within bounds. The landing
    when it landed."""
    cfg = run.config
    ws = run.workspace
    check_turns = conflict_turns = 0
    while True:
        o = agent.outcome
        if o.status != "finished":
            report.status, report.reason = o.status, o.reason
            return None
        failure: str | None = None
        if task.check:  # the task's own check
            res = run.checks.run(task.check, wt)
            narrate.check(run, "worker", agent.agent_id, "task check", res)
            if not res.passed:
                failure = prompts.check_failed(task.check, res.output)
                report.reason = f"task check `{task.check}` failed"
        if failure is None:
            try:
                sha = ws.commit(
                    wt, _commit_message(task), trailers(run.run_id, task.key, report.agent_id)
                )
            except ConflictError as exc:  # the agent finished with conflict markers left
                if conflict_turns > cfg.conflict_turns:
                    report.status = "abandoned"
                    report.reason = f"conflict markers left in {', '.join(exc.files)}"
                    return None
                conflict_turns += 1
                agent.tell(prompts.conflict(exc.files, []))
                agent.run()
                continue
            except CommitRefused as exc:  # e.g. a repository inside the worktree: it can go
                failure, report.reason = str(exc), str(exc)
            else:
                if sha is None and not ws.changed_files(wt, task.base_commit):
                    report.status = "failed"
                    report.reason = "the worker finished without changing anything"
                    return None
                # The repository check, gated on the last green tip while the tip is red.
                if refused := repository_gate(run, wt):
                    failure, report.reason = refused
        if failure is not None:
            if check_turns >= cfg.check_turns:
                report.status = "failed"
                return None
            check_turns += 1
            agent.tell(failure)
            agent.run()
            continue
        started = now()
        result = land(run.merge_queue or ws, wt, report.agent_id)
        landing_id = landing_row(
            run, task, report.agent_id, result, started, resolved=conflict_turns > 0
        )
        narrate.landing(run, task, report.agent_id, result, conflict_turns)
        if result.status == "landed":
            if run.verifier is not None and result.new_tip != result.old_tip:
                run.verifier.landed(landing_id, result.new_tip)
            report.status, report.commit, report.reason = "landed", result.new_tip, None
            report.published, report.publish_error = result.published, result.publish_error
            report.conflicts = conflict_turns
            return result
        if result.status == "refused" and check_turns < cfg.check_turns:
            # Strict mode: the check failed on the landing candidate (the change on the tip).
            check_turns += 1
            agent.tell(prompts.candidate_failed(cfg.check or "", result.reason or ""))
            agent.run()
            continue
        if result.status != "conflict":
            report.status, report.reason = "failed", f"landing {result.status}: {result.reason}"
            return None
        run.progress.conflicted(result.conflict_files)
        if conflict_turns >= cfg.conflict_turns:
            report.status = "abandoned"
            report.reason = f"unresolved conflicts in {', '.join(result.conflict_files)}"
            report.conflicts = conflict_turns + 1
            return None
        conflict_turns += 1
        files = ws.begin_conflict(wt, ws.tip())
        if not files:  # the tip moved and the rebase went through cleanly this time
            continue
        agent.tell(prompts.conflict(files, result.their_commits))
        agent.run()


def _diff_stat(run: Run, wt: Path, base: str, commit: str | None = None) -> str:
    try:
        return run.workspace.diff_stat(wt, base, commit)
    except Exception:  # a report without a diff stat beats a lost report
        return ""


def _commit_message(task: PlannedTask) -> str:
    return f"{task.spec.title}\n\n{task.spec.description.strip()}"[:4000]


def _handoff(finish: dict[str, Any]) -> str:
    parts = [str(finish.get("summary") or "").strip()]
    if finish.get("not_done"):
        parts.append(f"Not done: {finish['not_done']}")
    if finish.get("concerns"):
        parts.append(f"Concerns: {finish['concerns']}")
    return "\n".join(p for p in parts if p)
