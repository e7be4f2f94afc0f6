"""A run's course: its start, each cycle's scheduler and end, and the run's end.

The swarm flow (flows/swarm.py) calls these between its subflows; what is recorded at the end
of a cycle is what the next cycle's planners start from (a summary, not transcripts).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from devswarm.config import SwarmConfig
from devswarm.errors import UserError
from devswarm.records import now, span_id
from devswarm.roles import prompts
from devswarm.roles.rows import record_landed_before, record_skip
from devswarm.run.endpoint import know_models
from devswarm.run.registry import take_key
from devswarm.run.run import Run
from devswarm.scheduler import DRAINED, FollowupFn, Scheduler, WorkFn
from devswarm.schemas import PlannedTask, Verdict, WorkerReport
from devswarm.settings import api_key_from_env
from devswarm.verify.queue import MergeQueue
from devswarm.verify.verifier import Verifier


def start_run(config: SwarmConfig, flow_run_id: str | None = None) -> Run:
    """The Run of a swarm flow run: its key from the process that started it (never a flow
    parameter), or the environment; its start recorded and announced."""
    if not config.api_key.get_secret_value():
        key = take_key(config.run_id) or api_key_from_env()
        config = config.model_copy(update={"api_key": key})
    run = Run(config)
    know_models(run)  # probed at preflight already (`devswarm run`): then read from the state
    if flow_run_id and flow_run_id not in run.state.flow_runs:
        run.state.flow_runs.append(flow_run_id)
        run.save_state()
    run.record_run("running", len(run.state.cycles), flow_run_id)
    for model in run.unpriced:
        run.progress.emit(
            f"warning: no known price for model {model}; dollar caps count it at the fallback price"
        )
    if run.state.cycles:
        run.progress.emit(f"resuming after cycle {len(run.state.cycles)}")
    if spent := run.ledger.tokens:
        run.progress.emit(
            f"spent before this resume: {spent:,} tokens, ${run.ledger.cost:.4f}; "
            "calls answered then replay free"
        )
    start_verifier(run)
    return run


def start_verifier(run: Run) -> None:
    """The verifier beside the landing lane, and in strict mode the merge queue in front of it:
    only where this process lands (workers of --executor deployment land through the shared
    remote, out of this process's sight), and only with a repository check."""
    cfg = run.config
    if not cfg.check or cfg.executor != "local":
        return
    if cfg.verify_before_land:
        run.merge_queue = MergeQueue(run, width=max(1, min(4, os.cpu_count() or 1)))
    if cfg.verify:
        run.verifier = Verifier(run).start()


def stop_verifier(run: Run) -> None:
    if run.merge_queue is not None:
        run.merge_queue.stop()
    if run.verifier is not None:
        run.verifier.stop()


def end_run(run: Run, status: str, flow_run_id: str | None = None) -> Path | None:
    """Record the run's end, import every record, merge into the warehouse; the HTML report."""
    stop_verifier(run)
    run.record_run(status, len(run.state.cycles), flow_run_id)
    try:  # landings a failed publish left in the clone get another try before the run ends
        run.workspace.publish()
    except UserError as exc:
        run.unpublished = str(exc)
        run.progress.emit(f"landed in the clone, not published: {exc}")
    run.save_spent()  # this process's wall time too
    run.workspace.prune()
    run.records.import_now()
    report = run.publish()
    run.close()
    return report


def next_cycle(run: Run) -> int | None:
    """The number of the cycle to run next, or None when the run must stop."""
    if run.should_stop():
        return None
    if len(run.state.cycles) >= run.config.max_cycles:
        run.ledger.stop("cycles")
        return None
    return len(run.state.cycles) + 1


def cycle_scheduler(
    run: Run, work: WorkFn, followup: Callable[..., list[PlannedTask]]
) -> Scheduler:
    """The cycle's scheduler: each report recorded and imported the moment it arrives."""

    def on_report(task: PlannedTask, report: WorkerReport) -> None:
        run.progress.count_report(report)
        if run.verifier is not None:
            run.verifier.task_ended(task.key, report.status, report.commit)
        files = [run.dir / "records" / "swarm.jsonl"] + (
            [Path(report.records)] if report.records else []
        )
        run.records.import_soon([f for f in files if f.exists()])  # off the scheduler's loop
        run.progress.emit(
            f"{task.key}: {report.status}" + (f" ({report.reason[:120]})" if report.reason else "")
        )
        settled_event(run, report)

    followup_fn: FollowupFn = lambda task, report: followup(run.run_id, task, report)  # noqa: E731
    scheduler = Scheduler(
        work=work,
        followup=followup_fn,
        should_stop=run.should_stop,
        tip=run.workspace.tip,
        on_report=on_report,
        on_skip=lambda task, reason: record_skip(run, task, reason),
        max_workers=run.config.max_workers,
        max_planners=run.config.max_planners,
        max_followups=run.config.max_followups,
        landed=run.landed_task_keys(),
        on_landed_before=lambda task: record_landed_before(run, task),
        on_branch=run.landed_task_keys,
        settle=run.verifier.settle if run.verifier is not None else None,
    )
    if run.verifier is not None:
        run.verifier.serve(scheduler)  # it gives reverted tasks and repairs back to this cycle
    return scheduler


def settled_event(run: Run, report: WorkerReport) -> None:
    """The event of a task's end: task.landed, or task.abandoned when it ended without landing
    for a reason of its own (not the swarm draining)."""
    if report.status == "landed":
        run.progress.notify(
            "task.landed",
            task=report.task_key,
            agent=report.agent_id,
            commit=report.commit,
            conflicts=report.conflicts,
        )
    elif report.status not in DRAINED:
        run.progress.notify(
            "task.abandoned",
            task=report.task_key,
            agent=report.agent_id or None,
            status=report.status,
            reason=report.reason or "",
        )


def plan_and_work(
    run: Run,
    cycle: int,
    plan: Callable[[], list[PlannedTask]],
    work: WorkFn,
    followup: Callable[..., list[PlannedTask]],
) -> list[WorkerReport]:
    """One cycle's planning and work with no barrier between them: `plan` (the root planner,
    which recurses into sub-planners) hands each planner's tasks to the cycle's scheduler
    (run.scheduler) the moment that planner returns them (Run.dispatch), so the root's own
    tasks start while its sub-planners and their siblings still plan. Returns the reports
    when every task has settled and the planners are done."""

    def planning() -> None:
        tasks = plan()
        run.progress.emit(f"cycle {cycle}: {len(tasks)} tasks planned")

    scheduler = run.scheduler = cycle_scheduler(run, work, followup)
    try:
        return scheduler.run(producers=[planning])
    finally:
        run.scheduler = None


def finish_cycle(run: Run, cycle: int, verdict: Verdict, reports: list[WorkerReport]) -> None:
    """Record the cycle and what the next one starts from (a summary, not transcripts)."""
    if run.verifier is not None:
        run.verifier.serve(None)  # what it finds from now on is the next cycle's first job
    tip = run.workspace.tip()
    check = run.checks.at(tip)
    if check is None or check.passed:
        run.state.last_green = tip
    summary = [f"Judge: {verdict.decision} — {verdict.reasons}"]
    summary += [
        f"- {r.task_key}: {r.status}" + (f" — {r.handoff[:400]}" if r.handoff else "")
        for r in reports
    ]
    if check is not None and not check.passed:
        summary.insert(
            0,
            prompts.red_tip(
                run.config.check or "",
                check.output[-3000:],
                commits_since(run, run.state.last_green),
            ),
        )
    run.state.cycles.append(
        {"cycle": cycle, "decision": verdict.decision, "summary": "\n".join(summary), "tip": tip}
    )
    run.save_state()
    run.log.write(
        "cycle",
        run_id=run.run_id,
        cycle=cycle,
        started_at=run.starts.get(f"cycle-{cycle}"),
        ended_at=now(),
        tip_before=run.state.cycle_tips.get(cycle),
        tip_after=tip,
        decision=verdict.decision,
        reasons=verdict.reasons,
        score=verdict.score,
        label=verdict.decision,
        check_passed=None if check is None else check.passed,
        span_id=span_id(run.run_id, str(cycle)),
        parent_span_id=span_id(run.run_id),
    )
    run.records.import_now()


def commits_since(run: Run, green: str | None) -> list[str]:
    """The landings after the last green tip, one line each (the red tip's suspects)."""
    rev = f"{green or run.workspace.base_commit}..{run.workspace.tip()}"
    return [
        f"{t['commit'][:10]} {t.get('subject') or ''} (task {t.get('task')})"
        for t in run.workspace.landed_trailers(rev)
    ]


def run_ending(run: Run, status: str, verdict: Verdict | None) -> tuple[str, str]:
    """How the swarm's flow run ends ("completed", "failed" or "cancelled") and why, in a
    sentence: completed only when the judge said done; cancelled when a person's stop (a
    signal, `devswarm stop`, Cancel in the UI) drained it; failed when a budget ran out, the
    judge stopped the run, or there was no verdict."""
    done = f"{run.progress.board()['landed']} task(s) landed in {len(run.state.cycles)} cycle(s)"
    if status == "done":
        return "completed", f"the judge says done; {done}"
    if status == "stopped" and run.stop_reason:
        return "cancelled", f"{run.stop_reason}; drained, {done}"
    if status == "budget_exhausted":
        return "failed", f"budget exhausted ({run.ledger.exhausted}); {done}"
    if verdict is not None:
        return "failed", f"the judge stopped the run: {verdict.reasons[:300]}; {done}"
    return "failed", f"{status} without a verdict; {done}"
