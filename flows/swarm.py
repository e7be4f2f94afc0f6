"""The swarm flow: cycles of plan → work → judge until the judge says done/stop or a budget ends.

swarm ── plan (root) ── sub-plans (concurrent, recursive)
      ── work × N (concurrent, bounded, streamed; handoffs → follow-up plans)
      ── judge
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.runtime import flow_run
from pydantic import SecretStr

from devswarm.config import SwarmConfig
from devswarm.records import now
from devswarm.run.run import Run, drain_on_signals, record_skip, take_key
from devswarm.scheduler import Scheduler
from devswarm.schemas import PlannedTask, Verdict, WorkerReport
from devswarm.server import report_url
from flows.judge import judge
from flows.plan import followup, plan
from flows.work import work
from flows.worker_deployment import deployment_work
from tasks.subflows import STARTS


@flow(name="swarm", flow_run_name="swarm · {config.run_name}", persist_result=False)
def swarm(config: SwarmConfig) -> dict[str, Any]:
    """Run (or resume) the whole swarm for one goal on one repository; return its summary."""
    logger = get_run_logger()
    if not config.api_key.get_secret_value():
        # Never a flow parameter (Prefect stores those): from the environment or a provider block.
        config = config.model_copy(
            update={
                "api_key": take_key(config.run_name)
                or SecretStr(os.environ.get("OPENAI_API_KEY", ""))
            }
        )
    run = Run(config)
    run.record_run("running", len(run.state.cycles), str(flow_run.id))
    for model in run.unpriced:
        run.emit(
            f"warning: no known price for model {model}; dollar caps count it at the fallback price"
        )
    if run.state.cycles:
        run.emit(f"resuming after cycle {len(run.state.cycles)}")
    verdict: Verdict | None = None
    status = "crashed"
    try:
        with drain_on_signals(run.emit), subflows_without_heartbeats():
            verdict = run_cycles(run)
        status = run.final_status(verdict)
    finally:
        cycle = len(run.state.cycles)
        run.record_run(status, cycle, str(flow_run.id))
        run.workspace.prune()
        run.import_records()
        report = run.publish()  # merge into the warehouse; <run dir>/report.html
        run.close()
    logger.info("run %s ended: %s after %d cycle(s)", run.run_id, status, cycle)
    summary = {
        "run_id": run.run_id,
        "status": status,
        "cycles": cycle,
        "branch": run.branch,
        "tip": run.workspace.tip(),
        "db": str(config.db_path),
        "report": str(report) if report else None,
        "tasks_landed": run.stats["landed"],
        "tasks_not_landed": sum(run.stats[k] for k in run.stats if k not in _NOT_OUTCOMES),
        "tokens": run.ledger.tokens,
        "cost_usd": round(run.ledger.cost, 6),
        "verdict": verdict.model_dump() if verdict else None,
    }
    _summary_artifact(summary)
    return summary


_NOT_OUTCOMES = {"landed", "planned", "planning", "working", "conflicts"}


def run_cycles(run: Run) -> Verdict | None:
    """Plan → work → judge until the judge says done/stop, a budget ends, or a drain."""
    verdict = None
    while not run.should_stop():
        cycle = len(run.state.cycles)
        if cycle >= run.config.max_cycles:
            run.ledger.stop("cycles")
            break
        cycle += 1
        previous = run.state.cycles[-1]["summary"] if run.state.cycles else None
        # Planning and judging run off the main thread, so the drain's signal handler stays in
        # place (a subflow on the main thread would put Prefect's SIGTERM handler back).
        tasks = off_main_thread(plan, run.run_id, cycle, "root", run.config.goal, [], 0, previous)
        run.emit(f"cycle {cycle}: {len(tasks)} tasks planned")
        reports = run_workers(run, tasks)
        if run.should_stop():  # drained: the judge would be a call past the budget
            break
        verdict = off_main_thread(judge, run.run_id, cycle, reports)
        run.finish_cycle(cycle, verdict, reports)
        run.emit(f"cycle {cycle}: judge says {verdict.decision}: {verdict.reasons[:160]}")
        if verdict.decision != "continue":
            break
    return verdict


@contextlib.contextmanager
def subflows_without_heartbeats() -> Iterator[None]:
    """Subflows started inside send no heartbeats. They run in this process and die with it,
    and this flow run's own heartbeat already says the process is alive; a heartbeat thread
    costs each subflow up to 1 s at its end (Prefect joins a thread that sleeps in 1 s steps)."""
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        yield


def off_main_thread(fn: Any, *args: Any) -> Any:
    """Call fn in a worker thread with this context (its subflow keeps its parent)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(contextvars.copy_context().run, fn, *args).result()


def run_workers(run: Run, tasks: list[PlannedTask]) -> list[WorkerReport]:
    """One work subflow per task, streamed: each report is recorded the moment it arrives."""

    def on_report(task: PlannedTask, report: WorkerReport) -> None:
        run.count_report(report)
        files = [run.dir / "records" / "swarm.jsonl"] + (
            [Path(report.records)] if report.records else []
        )
        run.import_soon([f for f in files if f.exists()])  # off the scheduler's loop
        run.emit(
            f"{task.key}: {report.status}" + (f" ({report.reason[:120]})" if report.reason else "")
        )

    scheduler = Scheduler(
        work=(
            deployment_work(run)  # each worker a flow run on a work pool (docs/scale-out.md)
            if run.config.executor == "deployment"
            else lambda task, attempt: _start_work(run, task, attempt)
        ),
        followup=lambda task, report: followup(run.run_id, task, report),
        should_stop=run.should_stop,
        tip=run.workspace.tip,
        on_report=on_report,
        on_skip=lambda task, reason: record_skip(run, task, reason),
        max_workers=run.config.max_workers,
        max_planners=run.config.max_planners,
        max_followups=run.config.max_followups,
        landed=run.landed_task_keys(),
    )
    return scheduler.run(tasks)


def _start_work(run: Run, task: PlannedTask, attempt: int) -> WorkerReport:
    with STARTS.starting():  # a few subflow starts at once: the first bodies run sooner
        return work(run.run_id, task, attempt)


def _summary_artifact(summary: dict[str, Any]) -> None:
    from prefect.artifacts import create_markdown_artifact

    md = "\n".join(f"- **{k}**: `{v}`" for k, v in summary.items() if k != "verdict")
    if summary.get("verdict"):
        md += f"\n\n## Verdict\n{summary['verdict']['decision']}: {summary['verdict']['reasons']}"
    # A browser opens no file:// link from the UI: link the report only where this machine's
    # `devswarm server` serves it; elsewhere its path stays text (the report line above).
    if summary.get("report") and (url := report_url(Path(summary["report"]), summary["run_id"])):
        md += f"\n\n[HTML report]({url}) (served on this machine by `devswarm server`)"
    create_markdown_artifact(
        key="swarm-summary",
        markdown=f"# Swarm run {summary['run_id']}\n\n{md}\n\n_written {now()}_",
    )
