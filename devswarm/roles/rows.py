"""The records roles write as they go: agents, tasks and landings (one JSONL line each)."""

from __future__ import annotations

import json
from typing import Any

from devswarm.agent.loop import Outcome
from devswarm.git.landing import LandResult
from devswarm.history import current_flow_run_id
from devswarm.ids import planner_id
from devswarm.records import RecordLog, now, span_id
from devswarm.run.run import Run
from devswarm.schemas import PlannedTask, WorkerReport


def agent_started(
    run: Run,
    log: RecordLog,
    agent_id: str,
    role: str,
    cycle: int,
    plan_path: str,
    task_key: str | None,
    model: str,
) -> None:
    log.write(
        "agent",
        agent_id=agent_id,
        run_id=run.run_id,
        cycle=cycle,
        role=role,
        plan_path=plan_path,
        task_key=task_key,
        parent_agent_id=planner_id(run.run_id, cycle, plan_path) if role == "worker" else None,
        request_model=model,
        status="running",
        steps=0,
        started_at=run.starts.setdefault(agent_id, now()),
        flow_run_id=current_flow_run_id(),  # joins Prefect's history (devswarm history import)
        span_id=span_id(agent_id),
        parent_span_id=span_id(run.run_id, str(cycle)),
    )


def agent_ended(
    log: RecordLog, agent_id: str, outcome: Outcome | None, report: WorkerReport | None = None
) -> None:
    """The agent's end: only what changed (the import merges it into the row it started)."""
    log.write(
        "agent",
        agent_id=agent_id,
        status=report.status if report else (outcome.status if outcome else "error"),
        steps=outcome.steps if outcome else 0,
        ended_at=now(),
        handoff=(report.handoff if report else (outcome.reason if outcome else "")) or None,
    )


def task_row(
    run: Run,
    task: PlannedTask,
    status: str,
    *,
    worker: str | None = None,
    attempts: int = 0,
    reason: str | None = None,
    commit: str | None = None,
    started: bool = False,
    ended: bool = False,
) -> None:
    log = run.agent_log(worker) if worker else run.agent_log(task.planner_agent_id)
    fields: dict[str, Any] = {
        "run_id": run.run_id,
        "task_key": task.key,
        "cycle": task.cycle,
        "planner_agent_id": task.planner_agent_id,
        "worker_agent_id": worker,
        "title": task.spec.title,
        "description": task.spec.description,
        "acceptance": "\n".join(task.spec.acceptance),
        "files": json.dumps(task.spec.files),
        "check_command": task.check,
        "depends_on": json.dumps(task.depends_on),
        "status": status,
        "reason": reason,
        "attempts": attempts,
        "base_commit": task.base_commit,
        "commit_sha": commit,
    }
    if started:
        run.starts[task.key] = now()
    fields["started_at"] = run.starts.get(task.key)
    fields["ended_at"] = now() if ended else None
    log.write("task", **fields)


def landing_row(
    run: Run, task: PlannedTask, agent_id: str, result: LandResult, started: str, *, resolved: bool
) -> str:
    """The landing attempt's row; returns its landing id."""
    return write_landing(
        run, task.cycle, task.key, agent_id, result, started, resolved=resolved, what="landing"
    )


def write_landing(
    run: Run,
    cycle: int | None,
    task_key: str,
    agent_id: str,
    result: LandResult,
    started: str,
    *,
    resolved: bool = False,
    what: str = "landing",
) -> str:
    """A landing's row in `agent_id`'s records (a worker's, or the verifier's revert: `what`
    tells its landing id apart); returns the landing id."""
    landing_id = span_id(agent_id, what, started)
    run.agent_log(agent_id).write(
        "landing",
        landing_id=landing_id,
        run_id=run.run_id,
        cycle=cycle,
        task_key=task_key,
        agent_id=agent_id,
        branch=run.branch,
        commit_sha=result.new_tip if result.status == "landed" else result.commit,
        old_tip=result.old_tip,
        new_tip=result.new_tip,
        status=result.status,
        published=result.published,
        publish_error=result.publish_error,
        cas_retries=result.cas_retries,
        conflict_files=json.dumps(result.conflict_files),
        resolved=resolved and result.status == "landed",
        started_at=started,
        # When the branch moved, if it did: landings' rows then order as the branch does.
        ended_at=result.landed_at or now(),
        duration_ms=result.duration_ms,
        span_id=landing_id,
        parent_span_id=span_id(agent_id),
    )
    return landing_id


def record_landed_before(run: Run, task: PlannedTask) -> None:
    """A task of a resumed run whose commit is already on the branch: it is landed, not run."""
    commit = run.workspace.landed_commit(run.run_id, task.key)
    task_row(run, task, "landed", reason="landed before the resume", commit=commit, ended=True)
    run.progress.bump("landed")
    run.progress.emit(f"{task.key}: landed (before the resume)")


def record_skip(run: Run, task: PlannedTask, reason: str) -> None:
    """A task that never started (a dependency failed, or the swarm is draining): settled, and
    counted as not landed."""
    task_row(run, task, "skipped", reason=reason, ended=True)
    run.progress.bump("skipped")
    run.progress.emit(f"{task.key}: skipped ({reason})")
