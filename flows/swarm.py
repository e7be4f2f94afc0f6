"""The swarm flow: cycles of plan → work → judge until the judge says done/stop or max_cycles.

swarm ── plan (root) ── sub-plans (concurrent, recursive)
      ── work × N (concurrent, bounded, results streamed as they finish)
      ── judge
"""

from __future__ import annotations

import os
from typing import Any

from prefect import flow, get_run_logger
from prefect.runtime import flow_run
from pydantic import SecretStr

from devswarm.config import SwarmConfig
from devswarm.schemas import PlannedTask, Verdict, WorkerReport
from devswarm.swarm import Run
from flows._pool import map_concurrently
from flows.judge import judge
from flows.plan import plan
from flows.work import work


@flow(name="swarm", flow_run_name="swarm · {config.run_name}", persist_result=False)
def swarm(config: SwarmConfig) -> dict[str, Any]:
    """Run the whole swarm for one goal on one repository; return the run's summary."""
    logger = get_run_logger()
    if not config.api_key.get_secret_value():
        # Never a flow parameter (Prefect stores those): from the environment or a provider block.
        config = config.model_copy(
            update={"api_key": SecretStr(os.environ.get("OPENAI_API_KEY", ""))}
        )
    run = Run(config)
    status, cycle, verdict = "running", 0, None
    run.record_run(status, 0, flow_run.id)
    for model in run.unpriced:
        logger.warning(
            "no known price for model %s: dollar caps count it at the fallback price", model
        )
    previous: str | None = None
    try:
        for cycle in range(1, config.max_cycles + 1):
            if run.should_stop():
                break
            tasks = plan(run.run_id, cycle, "root", config.goal, [], 0, previous)
            logger.info("cycle %d: %d tasks planned", cycle, len(tasks))
            reports = run_workers(run, tasks)
            verdict = judge(run.run_id, cycle, reports)
            run.log.write(
                "cycle",
                run_id=run.run_id,
                cycle=cycle,
                decision=verdict.decision,
                reasons=verdict.reasons,
                score=verdict.score,
                label=verdict.decision,
                check_passed=run.check_at(run.workspace.tip()).passed if config.check else None,
                tip_after=run.workspace.tip(),
                ended_at=_now(),
            )
            run.import_records()
            logger.info(
                "cycle %d: judge says %s (%s)", cycle, verdict.decision, verdict.reasons[:200]
            )
            if verdict.decision != "continue":
                break
            previous = _summary(verdict, reports)
        status = _final_status(run, verdict)
    except BaseException:
        status = "crashed"
        raise
    finally:
        run.record_run(status, cycle, flow_run.id)
        run.workspace.prune()
        run.import_records()
        run.close()
    summary = {
        "run_id": run.run_id,
        "status": status,
        "cycles": cycle,
        "branch": run.branch,
        "tip": run.workspace.tip(),
        "db": str(config.db_path),
        "verdict": verdict.model_dump() if verdict else None,
    }
    _summary_artifact(summary)
    return summary


def run_workers(run: Run, tasks: list[PlannedTask]) -> list[WorkerReport]:
    """One work subflow per task, bounded, each report recorded as soon as it arrives."""
    reports: list[WorkerReport] = []
    for task, fut in map_concurrently(lambda t: work(run.run_id, t), tasks, run.config.max_workers):
        try:
            report = fut.result()
        except Exception as exc:  # a crashed subflow (not a failed task) is reported, not fatal
            report = WorkerReport(
                task_key=task.key, agent_id="", status="crashed", reason=str(exc)[:500]
            )
        reports.append(report)
        run.import_records(
            [p for p in [run.dir / "records" / "swarm.jsonl"] if p.exists()] + _agent_files(report)
        )
    return reports


def _agent_files(report: WorkerReport):
    from pathlib import Path

    return [Path(report.records)] if report.records else []


def _summary(verdict: Verdict, reports: list[WorkerReport]) -> str:
    lines = [f"Judge: {verdict.decision} — {verdict.reasons}"]
    for r in reports:
        lines.append(f"- {r.task_key}: {r.status}" + (f" — {r.handoff[:400]}" if r.handoff else ""))
    return "\n".join(lines)


def _final_status(run: Run, verdict: Verdict | None) -> str:
    if run.ledger.exhausted in {"tokens", "cost", "wall_time"}:
        return "budget_exhausted"
    if run.stop_reason:
        return "stopped"
    if verdict is None:
        return "stopped"
    return {"done": "done", "stop": "stopped"}.get(verdict.decision, "max_cycles")


def _now() -> str:
    from devswarm.records import now

    return now()


def _summary_artifact(summary: dict[str, Any]) -> None:
    from prefect.artifacts import create_markdown_artifact

    md = "\n".join(f"- **{k}**: `{v}`" for k, v in summary.items() if k != "verdict")
    create_markdown_artifact(
        key="swarm-summary", markdown=f"# Swarm run {summary['run_id']}\n\n{md}"
    )
