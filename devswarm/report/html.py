"""The run report as one self-contained HTML page.

Inline CSS and SVG charts drawn here, no script, no font or image from the network, so it opens
offline and can be attached to a ticket as is.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from devswarm.report.data import RunReport, load_report
from devswarm.report.formats import money, percent, seconds, short_agent, thousands
from devswarm.report.svg import (
    COLORS,
    STATUS_COLORS,
    escape,
    hbar_chart,
    timeline_chart,
    tip_chart,
)

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px auto;max-width:1100px;
color:#222;padding:0 16px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px}
.muted{color:#777;fill:#777}.cards{display:flex;flex-wrap:wrap;gap:10px;margin:14px 0}
.card{border:1px solid #ddd;border-radius:6px;padding:8px 12px;min-width:120px}
.card b{display:block;font-size:18px}.grid2{display:grid;grid-template-columns:1fr 1fr;gap:18px}
figure.chart{margin:0;border:1px solid #e3e3e3;border-radius:6px;padding:8px}
figcaption{font-weight:600;margin-bottom:4px}svg text{font-size:12px;fill:#333}
svg text.small{font-size:11px}svg .axis{stroke:#999}svg .grid{stroke:#eee}
table{border-collapse:collapse;width:100%;font-size:13px}
th,td{border-bottom:1px solid #eee;padding:4px 6px;text-align:left;vertical-align:top}
td.n{text-align:right;font-variant-numeric:tabular-nums}.note{color:#777;font-size:12px}
@media (max-width:800px){.grid2{grid-template-columns:1fr}}
"""


def _html_table(header: list[str], rows: list[list[Any]], numeric: set[int] = frozenset()) -> str:
    if not rows:
        return '<p class="muted">(none)</p>'
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="n">{escape(c)}</td>' if i in numeric else f"<td>{escape(c)}</td>"
            for i, c in enumerate(r)
        )
        + "</tr>"
        for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_html(report: RunReport) -> str:
    """The report as one self-contained HTML page (no network reference of any kind)."""
    r, rid = report.run, report.run["run_id"]
    agents = [short_agent(a["agent_id"], rid) for a in report.agents]
    status_counts: dict[str, int] = {}
    for t in report.tasks:
        status_counts[t["status"] or "?"] = status_counts.get(t["status"] or "?", 0) + 1
    statuses = sorted(status_counts, key=lambda s: (-status_counts[s], s))
    landed = [
        x["seconds"]
        for x in report.landings
        if x["status"] == "landed" and x["seconds"] is not None
    ]
    conflicts = [
        x["seconds"]
        for x in report.landings
        if x["status"] == "conflict" and x["seconds"] is not None
    ]
    cards = [
        ("status", r["status"]),
        ("tasks landed", f"{r['tasks_landed']} of {r['tasks']}"),
        ("cost", money(r["cost_usd"])),
        (
            "per landed task",
            money(r["cost_per_landed_task"]) if r["cost_per_landed_task"] is not None else "n/a",
        ),
        ("tokens in / out", f"{thousands(r['input_tokens'])} / {thousands(r['output_tokens'])}"),
        ("model calls", f"{r['model_calls']} ({r['failed_calls']} failed)"),
        ("tool calls", str(r["tool_calls"])),
        ("conflicts", str(r["conflicts"])),
        ("wall time", seconds(r["wall_seconds"]) or "?"),
    ]
    if report.prefect["task_runs"]:
        pf = report.prefect
        cards.append(
            (
                "Prefect",
                f"{pf['flow_runs']} flows, {pf['task_runs']} tasks, {pf['retries']} retries, {pf['cache_hits']} cached",
            )
        )
    charts = {
        "landings": timeline_chart(
            "chart-landings", "Landings over time", landed, conflicts, r["wall_seconds"] or 0.0
        ),
        "tip": tip_chart(
            "chart-tip",
            "The branch tip: green, red, not checked (ticks: landings; dark: the verifier's reverts)",
            [(x["seconds"], _tip_state(x["verified"]), x["is_revert"]) for x in report.tips],
            r["wall_seconds"] or 0.0,
            _tip_note(report.tip_health),
        ),
        "tokens-role": hbar_chart(
            "chart-tokens-role",
            "Tokens by role",
            [x["role"] for x in report.roles],
            [
                ("input", [x["input_tokens"] for x in report.roles]),
                ("output", [x["output_tokens"] for x in report.roles]),
            ],
        ),
        "cost-role": hbar_chart(
            "chart-cost-role",
            "Cost by role",
            [f"{x['role']} ({percent(x['cost_share'])})" for x in report.roles],
            [("cost", [x["cost_usd"] for x in report.roles])],
            fmt=money,
        ),
        "tokens-agent": hbar_chart(
            "chart-tokens-agent",
            "Tokens by agent",
            agents,
            [
                ("input", [a["input_tokens"] for a in report.agents]),
                ("output", [a["output_tokens"] for a in report.agents]),
            ],
        ),
        "cost-agent": hbar_chart(
            "chart-cost-agent",
            "Cost by agent",
            agents,
            [("cost", [a["cost_usd"] or 0 for a in report.agents])],
            fmt=money,
        ),
        "outcomes": hbar_chart(
            "chart-outcomes",
            "Task outcomes",
            statuses,
            [("tasks", [status_counts[s] for s in statuses])],
            colors=[STATUS_COLORS.get(s, COLORS[7]) for s in statuses],
            empty="no tasks",
        ),
        "hot-files": hbar_chart(
            "chart-hot-files",
            "Hot files (conflicts, and tasks that planned to change the file)",
            [f["file"] for f in report.hot_files],
            [
                ("conflicts", [f["conflicts"] for f in report.hot_files]),
                ("planned by tasks", [f["planned_tasks"] for f in report.hot_files]),
            ],
            stacked=False,
            empty="no file was fought over",
        ),
        "latency": hbar_chart(
            "chart-latency",
            "Model latency of answered calls (ms)",
            [m["request_model"] or "?" for m in report.latency],
            [(q, [m[f"{q}_ms"] or 0 for m in report.latency]) for q in ("p50", "p90", "p99")],
            fmt=lambda v: f"{v:.0f}",
            stacked=False,
            empty="no model calls",
        ),
    }
    tasks = _html_table(
        ["task", "title", "status", "attempts", "to land", "conflicts", "calls", "cost", "reason"],
        [
            [
                t["task_key"],
                t["title"] or "",
                t["status"] or "",
                t["attempts"] or 0,
                seconds(t["seconds_to_land"]),
                t["conflicts"],
                t["calls"],
                money(t["cost_usd"]),
                (t["reason"] or "")[:200],
            ]
            for t in report.tasks
        ],
        numeric={3, 4, 5, 6, 7},
    )
    errors = _html_table(
        ["tool", "error", "errors", "of calls", "agents", "example"],
        [
            [
                e["tool_name"],
                e["error_type"],
                e["errors"],
                e["tool_calls"],
                e["agents"],
                (e["example"] or "")[:160],
            ]
            for e in report.tool_errors
        ],
        numeric={2, 3, 4},
    )
    roles = _html_table(
        [
            "role",
            "agents",
            "calls",
            "input tokens",
            "output tokens",
            "token share",
            "cost",
            "cost share",
        ],
        [
            [
                x["role"],
                x["agents"],
                x["calls"],
                thousands(x["input_tokens"]),
                thousands(x["output_tokens"]),
                percent(x["token_share"]),
                money(x["cost_usd"]),
                percent(x["cost_share"]),
            ]
            for x in report.roles
        ],
        numeric={1, 2, 3, 4, 5, 6, 7},
    )
    started = (
        r["started_at"].isoformat(sep=" ", timespec="seconds")
        if isinstance(r["started_at"], datetime)
        else r["started_at"]
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>devswarm run {escape(rid)}</title><style>{_CSS}</style></head>
<body>
<h1>devswarm run {escape(rid)}</h1>
<div class="muted">branch {escape(r["branch"])} · started {escape(started)} UTC · {escape(r["cycles"] or 0)} cycle(s)</div>
<div class="cards">{"".join(f'<div class="card"><span class="muted">{escape(k)}</span><b>{escape(v)}</b></div>' for k, v in cards)}</div>
<details><summary>Goal</summary><pre>{escape(r["goal"] or "")}</pre></details>
<h2>Progress</h2>
{charts["landings"]}
{charts["tip"]}
<h2>Spend</h2>
<div class="grid2">{charts["tokens-role"]}{charts["cost-role"]}</div>
{roles}
<div class="grid2">{charts["tokens-agent"]}{charts["cost-agent"]}</div>
<h2>Tasks</h2>
<div class="grid2">{charts["outcomes"]}{charts["hot-files"]}</div>
{tasks}
<h2>Model and tools</h2>
{charts["latency"]}
<h3>Tool errors</h3>
{errors}
<p class="note">Made by devswarm from its DuckDB store; every number here is a query away:
devswarm sql "SELECT * FROM role_metrics WHERE run_id = '{escape(rid)}'"</p>
</body></html>
"""


def _tip_state(verified: str | None) -> str | None:
    if verified is None:
        return None
    return "green" if verified == "green" else "red"


def _tip_note(health: dict[str, Any]) -> str:
    if not health or health.get("green_share") is None:
        return "no verifier findings"
    to_green = health.get("mean_seconds_to_green")
    return (
        f"green {percent(health['green_share'])} of the time · {health['breaks']} break(s), "
        f"{health['reverts']} revert(s), {health['flakes']} flake(s)"
        + (f" · green again after {seconds(to_green)} on average" if to_green is not None else "")
    )


def write_html_report(db: Path, run_id: str | None, out: Path) -> Path:
    """Write the HTML report of a run (the latest if None) from the store at ``db``."""
    from devswarm.store.warehouse import open_readonly

    with open_readonly(db) as store:
        report = load_report(store, run_id)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(render_html(report), encoding="utf-8")
    tmp.replace(out)  # a reader never sees half a file
    return out
