"""A run's course: its start, each cycle's scheduler and end, and the run's end.

The swarm flow (flows/swarm.py) calls these between its subflows; what is recorded at the end
of a cycle is what the next cycle's planners start from (a summary, not transcripts).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from pydantic import SecretStr

from devswarm.config import SwarmConfig
from devswarm.records import now, span_id
from devswarm.roles import prompts
from devswarm.roles.rows import record_skip
from devswarm.run.registry import take_key
from devswarm.run.run import Run
from devswarm.scheduler import FollowupFn, Scheduler, WorkFn
from devswarm.schemas import PlannedTask, Verdict, WorkerReport
from devswarm.verify.queue import MergeQueue
from devswarm.verify.verifier import Verifier


def start_run(config: SwarmConfig, flow_run_id: str | None = None) -> Run:
    """The Run of a swarm flow run: its key from the process that started it (never a flow
    parameter), or the environment; its start recorded and announced."""
    if not config.api_key.get_secret_value():
        key = take_key(config.run_id) or SecretStr(os.environ.get("OPENAI_API_KEY", ""))
        config = config.model_copy(update={"api_key": key})
    run = Run(config)
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
            run.verifier.task_ended(task.key, report.status)
        files = [run.dir / "records" / "swarm.jsonl"] + (
            [Path(report.records)] if report.records else []
        )
        run.records.import_soon([f for f in files if f.exists()])  # off the scheduler's loop
        run.progress.emit(
            f"{task.key}: {report.status}" + (f" ({report.reason[:120]})" if report.reason else "")
        )

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
        settle=run.verifier.settle if run.verifier is not None else None,
    )
    if run.verifier is not None:
        run.verifier.serve(scheduler)  # it gives reverted tasks and repairs back to this cycle
    return scheduler


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
