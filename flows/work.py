"""The work flow: one worker on one task — worktree → agent → checks → commit → land → report."""

from __future__ import annotations

from prefect import flow

from devswarm.run.run import get_run, work_task
from devswarm.schemas import PlannedTask, WorkerReport
from tasks.landing import land
from tasks.model import prefect_calls
from tasks.subflows import STARTS


@flow(
    name="work",
    flow_run_name="work · {task.spec.id}",
    persist_result=False,
    # Called in-process with typed objects: Prefect would build a pydantic model of the
    # signature for every call to check them (2 % of the swarm process's CPU at 100 agents).
    validate_parameters=False,
)
def work(run_id: str, task: PlannedTask, attempt: int = 1) -> WorkerReport:
    """Run one worker to the end and return its report (never raises for the task's own failure)."""
    STARTS.started()  # the next queued subflow may start (flows/_pool.py StartGate)
    run = get_run(run_id)
    report = work_task(run, prefect_calls, task, attempt=attempt, land=lambda ws, wt: land(ws, wt))
    _artifact(report, task)
    return report


def _artifact(report: WorkerReport, task: PlannedTask) -> None:
    from prefect.artifacts import create_markdown_artifact

    lines = [
        f"# {task.spec.title}",
        f"- task: `{task.key}`",
        f"- status: **{report.status}**" + (f" — {report.reason}" if report.reason else ""),
        f"- landed commit: `{report.commit}`" if report.commit else "- landed commit: none",
        f"- conflicts resolved: {report.conflicts}",
        f"- tokens: {report.input_tokens:,} in, {report.output_tokens:,} out; cost ${report.cost_usd:.4f}",
        "",
        "## Diff",
        f"```\n{report.diff_stat or '(no changes)'}\n```",
        "",
        "## Handoff",
        report.handoff or "(none)",
    ]
    create_markdown_artifact(
        key=f"work-{task.spec.id}"[:60],
        markdown="\n".join(lines),
        description=f"Worker report for {task.key}",
    )
