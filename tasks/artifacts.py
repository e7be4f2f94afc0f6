"""What a run shows in the Prefect UI as artifacts: plans, worker reports, verdicts, summary.

Each kind has a stable key, so the UI keeps a history per kind (a new version per cycle or run),
and a description, which the UI shows beside it. The live progress and board, updated in place
while the run goes, are in tasks/live_artifacts.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect.artifacts import create_markdown_artifact, create_table_artifact

from devswarm.records import now
from devswarm.sandbox.probe import NO_SANDBOX_NOTICE
from devswarm.schemas import CheckResult, Plan, PlannedTask, Verdict, WorkerReport
from devswarm.server import report_url


def plan_artifact(plan_path: str, cycle: int, plan: Plan, tasks: list[PlannedTask]) -> None:
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
        for s in plan.scopes
    ]
    create_table_artifact(
        key=f"plan-{plan_path}".replace(".", "-").replace("_", "-").lower()[:60],
        table=rows or [{"task": "(none)", "title": plan.summary, "files": "", "check": ""}],
        description=f"Plan of {plan_path}, cycle {cycle}: {plan.summary}",
    )


def work_artifact(report: WorkerReport, task: PlannedTask) -> None:
    lines = [
        f"# {task.spec.title}",
        f"- task: `{task.key}`",
        f"- status: **{report.status}**" + (f" — {report.reason}" if report.reason else ""),
        f"- landed commit: `{report.commit}`" if report.commit else "- landed commit: none",
        f"- conflicts resolved: {report.conflicts}",
        f"- tokens: {report.input_tokens:,} in, {report.output_tokens:,} out; "
        f"cost ${report.cost_usd:.4f}",
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


def verdict_artifact(cycle: int, verdict: Verdict, check: CheckResult | None) -> None:
    tip = (
        f"check on tip: {'passes' if check.passed else 'fails'}" if check else "no repository check"
    )
    create_markdown_artifact(
        key="judge-verdict",
        markdown=f"# Cycle {cycle}: {verdict.decision}\n\nscore {verdict.score:.2f}\n\n"
        f"{verdict.reasons}\n\n{tip}",
        description=f"Judge verdict, cycle {cycle}",
    )


def summary_artifact(summary: dict[str, Any]) -> None:
    md = "\n".join(f"- **{k}**: `{v}`" for k, v in summary.items() if k != "verdict")
    if str(summary.get("sandbox", "on")).startswith("off"):
        md = f"> **No sandbox** ({summary['sandbox']}): {NO_SANDBOX_NOTICE}.\n\n{md}"
    if summary.get("verdict"):
        md += f"\n\n## Verdict\n{summary['verdict']['decision']}: {summary['verdict']['reasons']}"
    # A browser opens no file:// link from the UI: link the report only where this machine's
    # `devswarm server` serves it; elsewhere its path stays text (the report line above).
    if summary.get("report") and (url := report_url(Path(summary["report"]), summary["run_id"])):
        md += f"\n\n[HTML report]({url}) (served on this machine by `devswarm server`)"
    create_markdown_artifact(
        key="swarm-summary",
        markdown=f"# Swarm run {summary['run_id']}\n\n{md}\n\n_written {now()}_",
        description=f"Summary of run {summary['run_id']}: {summary['status']}"
        + (f", {summary['tasks_landed']} task(s) landed" if "tasks_landed" in summary else ""),
    )
