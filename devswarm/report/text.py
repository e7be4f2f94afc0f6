"""The report for the terminal: the end-of-run summary and `devswarm report`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from devswarm.report.data import RunReport, run_numbers
from devswarm.report.formats import money, percent, seconds, thousands

EXAMPLE_QUERIES = [
    (
        "tokens and cost per agent",
        "SELECT agent_id, role, calls, input_tokens, output_tokens, round(cost_usd, 4) AS cost_usd FROM agent_metrics ORDER BY cost_usd DESC",
    ),
    ("task outcomes", "SELECT task_key, status, attempts, commit_sha FROM tasks ORDER BY task_key"),
    (
        "landings and conflicts",
        "SELECT task_key, status, cas_retries, conflict_files, resolved FROM landings ORDER BY started_at",
    ),
]


def summary_lines(summary: dict[str, Any]) -> list[str]:
    """The lines `devswarm run` and `devswarm demo` print when a run ends."""
    db = Path(summary["db"])
    n = run_numbers(db, summary["run_id"])
    lines = [
        f"run {summary['run_id']}: {summary['status']} after {summary['cycles']} cycle(s)",
        f"  tasks landed   {n['landed']} of {n['tasks']}",
        f"  model calls    {n['model_calls']}  ({n['input_tokens']} tokens in, {n['output_tokens']} out, ${n['cost_usd']:.4f})",
        f"  tool calls     {n['tool_calls']}",
        f"  conflicts      {n['conflicts']} ({n['resolved']} resolved and landed)",
        f"  branch         {summary['branch']} at {summary['tip'][:12]}"
        + (f" in {summary['repo']}" if summary.get("repo") else "")
        + (" (landed in the clone, not published)" if summary.get("unpublished") else ""),
        f"  DuckDB         {db}",
    ]
    if summary.get("sandbox"):
        lines.append(f"  sandbox        {summary['sandbox']}")
    if summary.get("reason"):
        lines.append(f"  why            {summary['reason'][:300]}")
    if summary.get("verdict"):
        lines.append(
            f"  judge          {summary['verdict']['decision']}: {summary['verdict']['reasons'][:160]}"
        )
    if summary.get("report"):
        lines.append(f"  report         {summary['report']}")
    lines.append("")
    lines.append("Try:")
    lines.append(
        "  # the run's report: cost, who did what, outcomes, hot files (--html FILE for charts)"
    )
    lines.append(f"  devswarm report --run {summary['run_id']} --db {db}")
    for title, sql in EXAMPLE_QUERIES:
        lines.append(f"  # {title}")
        lines.append(f'  devswarm sql "{sql}" --db {db}')
    return lines


def _table(header: list[str], rows: list[list[str]], indent: str = "  ") -> list[str]:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=True)]
    fmt = [
        f"{indent}" + "  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True))
        for r in [header, *rows]
    ]
    return [line.rstrip() for line in fmt]


def report_lines(report: RunReport) -> list[str]:
    """The terminal form of the report."""
    r, rid = report.run, report.run["run_id"]
    lines = [
        f"run {rid}: {r['status']} after {r['cycles'] or 0} cycle(s), {seconds(r['wall_seconds']) or '?'}"
        f" on {r['branch']}",
        f"  tasks      {r['tasks_landed']} landed of {r['tasks']} ({r['tasks_failed']} failed);"
        f" cost per landed task {money(r['cost_per_landed_task']) if r['cost_per_landed_task'] is not None else 'n/a'}",
        f"  model      {r['model_calls']} calls ({r['failed_calls']} failed),"
        f" {thousands(r['input_tokens'])} tokens in / {thousands(r['output_tokens'])} out, {money(r['cost_usd'])}",
        f"  tools      {r['tool_calls']} calls, {sum(e['errors'] for e in report.tool_errors)} errors",
        f"  landings   {r['landings']}, conflicts {r['conflicts']}",
    ]
    if report.prefect["task_runs"]:
        pf = report.prefect
        lines.append(
            f"  prefect    {pf['flow_runs']} flow runs, {pf['task_runs']} task runs,"
            f" {pf['retries']} retries, {pf['cache_hits']} cache hits"
        )
    lines += ["", "by role"]
    lines += _table(
        ["role", "agents", "calls", "tokens", "share", "cost", "share"],
        [
            [
                x["role"],
                str(x["agents"]),
                str(x["calls"]),
                thousands(x["total_tokens"]),
                percent(x["token_share"]),
                money(x["cost_usd"]),
                percent(x["cost_share"]),
            ]
            for x in report.roles
        ],
    )
    lines += _section(
        "tasks",
        ["task", "status", "attempts", "to land", "conflicts", "cost"],
        [
            [
                t["task_key"],
                t["status"] or "",
                str(t["attempts"] or 0),
                seconds(t["seconds_to_land"]),
                str(t["conflicts"]),
                money(t["cost_usd"]),
            ]
            for t in report.tasks
        ],
    )
    lines += ["", "hot files"]
    lines += [
        f"  {f['file']}: {f['conflicts']} conflict(s), planned by {f['planned_tasks']} task(s)"
        for f in report.hot_files
    ] or ["  (none)"]
    lines += _section(
        "model latency (answered calls)",
        ["model", "calls", "retries", "p50 ms", "p90 ms", "p99 ms"],
        [
            [
                m["request_model"] or "?",
                str(m["calls"]),
                str(m["retries"]),
                *(
                    f"{m[k]:.0f}" if m[k] is not None else ""
                    for k in ("p50_ms", "p90_ms", "p99_ms")
                ),
            ]
            for m in report.latency
        ],
        empty="(no calls)",
    )
    lines += ["", "tool errors"]
    lines += [
        f"  {e['tool_name']} {e['error_type']}: {e['errors']} of {e['tool_calls']} calls"
        for e in report.tool_errors
    ] or ["  (none)"]
    return lines


def _section(
    title: str, header: list[str], rows: list[list[str]], empty: str = "(none)"
) -> list[str]:
    """A blank line, the title, then the rows as a table (or one line saying there are none)."""
    return ["", title, *(_table(header, rows) if rows else [f"  {empty}"])]
