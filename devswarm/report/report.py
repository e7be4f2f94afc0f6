"""What a run did, for people: the end-of-run summary, `devswarm report` and its HTML file.

The HTML report is one self-contained file (inline CSS and SVG charts drawn here, no script, no
font or image from the network), so it opens offline and can be attached to a ticket as is.
"""

from __future__ import annotations

import html
import math
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from devswarm.errors import UserError

EXAMPLE_QUERIES = [
    (
        "tokens and cost per agent",
        "SELECT agent_id, role, calls, input_tokens, output_tokens, round(cost_usd, 4) AS cost_usd FROM agent_metrics ORDER BY cost_usd DESC",
    ),
    ("task outcomes", "SELECT task_id, status, attempts, commit_sha FROM tasks ORDER BY task_id"),
    (
        "landings and conflicts",
        "SELECT task_id, status, cas_retries, conflict_files, resolved FROM landings ORDER BY started_at",
    ),
]


def run_numbers(db: Path, run_id: str) -> dict[str, Any]:
    """Key numbers of one run, read from the store."""
    from devswarm.store.warehouse import open_readonly

    store = open_readonly(db)
    try:

        def one(sql: str) -> Any:
            return store.query(sql, [run_id])[1][0][0]

        return {
            "tasks": one("SELECT count(*) FROM tasks WHERE run_id = ?"),
            "landed": one("SELECT count(*) FROM tasks WHERE run_id = ? AND status = 'landed'"),
            "model_calls": one("SELECT count(*) FROM llm_calls WHERE run_id = ?"),
            "input_tokens": one(
                "SELECT coalesce(sum(input_tokens), 0) FROM llm_calls WHERE run_id = ?"
            ),
            "output_tokens": one(
                "SELECT coalesce(sum(output_tokens), 0) FROM llm_calls WHERE run_id = ?"
            ),
            "cost_usd": one("SELECT coalesce(sum(cost_usd), 0) FROM llm_calls WHERE run_id = ?"),
            "tool_calls": one("SELECT count(*) FROM tool_calls WHERE run_id = ?"),
            "conflicts": one(
                "SELECT count(*) FROM landings WHERE run_id = ? AND status = 'conflict'"
            ),
            "resolved": one("SELECT count(*) FROM landings WHERE run_id = ? AND resolved"),
        }
    finally:
        store.close()


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
        + (f" in {summary['repo']}" if summary.get("repo") else ""),
        f"  DuckDB         {db}",
    ]
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


# --- the run report: data


class RunReport(BaseModel):
    """Everything the report shows about one run, read from the store's views."""

    run: dict[str, Any]  # run_summary
    roles: list[dict[str, Any]]  # role_metrics
    agents: list[dict[str, Any]]  # agent_metrics
    tasks: list[dict[str, Any]]  # task_outcomes
    landings: list[dict[str, Any]]  # landings, with seconds since the run started
    hot_files: list[dict[str, Any]]
    latency: list[dict[str, Any]]  # model_latency
    tool_errors: list[dict[str, Any]]
    prefect: dict[str, Any]  # counts from the imported Prefect history (zeros if none)


def _rows(store: Any, sql: str, params: list[Any]) -> list[dict[str, Any]]:
    cols, rows = store.query(sql, params)
    return [dict(zip(cols, row, strict=True)) for row in rows]


def latest_run(store: Any) -> str:
    """The id of the run that started last; UserError if the store has none."""
    rows = store.query(
        "SELECT run_id FROM runs ORDER BY started_at DESC NULLS LAST, recorded_at DESC LIMIT 1"
    )[1]
    if not rows:
        raise UserError("the store has no runs yet")
    return rows[0][0]


def load_report(store: Any, run_id: str | None = None) -> RunReport:
    """Read one run's report from an open store (the latest run if ``run_id`` is None)."""
    run_id = run_id or latest_run(store)
    run = _rows(store, "SELECT * FROM run_summary WHERE run_id = ?", [run_id])
    if not run:
        raise UserError(f"no run {run_id!r} in the store (see: devswarm sql 'SELECT * FROM runs')")
    p = [run_id]
    return RunReport(
        run=run[0],
        roles=_rows(store, "SELECT * FROM role_metrics WHERE run_id = ? ORDER BY role", p),
        agents=_rows(
            store,
            "SELECT * FROM agent_metrics WHERE run_id = ?"
            " ORDER BY cost_usd DESC NULLS LAST, agent_id",
            p,
        ),
        tasks=_rows(
            store, "SELECT * FROM task_outcomes WHERE run_id = ? ORDER BY cycle, task_id", p
        ),
        landings=_rows(
            store,
            "SELECT l.task_id, l.status, l.conflict_files, l.ended_at,"
            " date_diff('microsecond', r.started_at, l.ended_at) / 1e6 AS seconds"
            " FROM landings l JOIN runs r USING (run_id)"
            " WHERE l.run_id = ? AND l.ended_at IS NOT NULL ORDER BY l.ended_at",
            p,
        ),
        hot_files=_rows(
            store,
            "SELECT * FROM hot_files WHERE run_id = ?"
            " ORDER BY conflicts DESC, planned_tasks DESC, file LIMIT 20",
            p,
        ),
        latency=_rows(
            store, "SELECT * FROM model_latency WHERE run_id = ? ORDER BY request_model", p
        ),
        tool_errors=_rows(
            store, "SELECT * FROM tool_errors WHERE run_id = ? ORDER BY errors DESC, tool_name", p
        ),
        prefect=_rows(
            store,
            "SELECT (SELECT count(*) FROM prefect_flow_runs WHERE run_id = $1) AS flow_runs,"
            " count(*) AS task_runs,"
            " coalesce(sum(retries), 0)::BIGINT AS retries,"
            " count(*) FILTER (WHERE cache_hit) AS cache_hits,"
            " count(*) FILTER (WHERE state_type NOT IN ('COMPLETED')) AS not_completed"
            " FROM prefect_task_runs WHERE run_id = $1",
            p,
        )[0],
    )


def short_agent(agent_id: str, run_id: str) -> str:
    """An agent id without its run id: ``worker/<run>/c1/root/x/a1`` -> ``worker c1/root/x/a1``."""
    return agent_id.replace(f"/{run_id}/", " ", 1)


def _money(v: Any) -> str:
    return f"${v or 0:.4f}"


def _int(v: Any) -> str:
    return f"{int(v or 0):,}"


def _pct(v: Any) -> str:
    return "" if v is None else f"{100 * v:.0f}%"


def _secs(v: Any) -> str:
    return "" if v is None else f"{v:.1f} s"


# --- the run report: terminal


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
        f"run {rid}: {r['status']} after {r['cycles'] or 0} cycle(s), {_secs(r['wall_seconds']) or '?'}"
        f" on {r['branch']}",
        f"  tasks      {r['tasks_landed']} landed of {r['tasks']} ({r['tasks_failed']} failed);"
        f" cost per landed task {_money(r['cost_per_landed_task']) if r['cost_per_landed_task'] is not None else 'n/a'}",
        f"  model      {r['llm_calls']} calls ({r['failed_calls']} failed),"
        f" {_int(r['input_tokens'])} tokens in / {_int(r['output_tokens'])} out, {_money(r['cost_usd'])}",
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
                _int(x["total_tokens"]),
                _pct(x["token_share"]),
                _money(x["cost_usd"]),
                _pct(x["cost_share"]),
            ]
            for x in report.roles
        ],
    )
    lines += ["", "tasks"]
    lines += (
        _table(
            ["task", "status", "attempts", "to land", "conflicts", "cost"],
            [
                [
                    t["task_id"],
                    t["status"] or "",
                    str(t["attempts"] or 0),
                    _secs(t["seconds_to_land"]),
                    str(t["conflicts"]),
                    _money(t["cost_usd"]),
                ]
                for t in report.tasks
            ],
        )
        if report.tasks
        else ["  (none)"]
    )
    lines += ["", "hot files"]
    lines += [
        f"  {f['file']}: {f['conflicts']} conflict(s), planned by {f['planned_tasks']} task(s)"
        for f in report.hot_files
    ] or ["  (none)"]
    lines += ["", "model latency (answered calls)"]
    lines += (
        _table(
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
        )
        if report.latency
        else ["  (no calls)"]
    )
    lines += ["", "tool errors"]
    lines += [
        f"  {e['tool_name']} {e['error_type']}: {e['errors']} of {e['tool_calls']} calls"
        for e in report.tool_errors
    ] or ["  (none)"]
    return lines


# --- the run report: HTML with inline SVG charts

_COLORS = ["#3b6ea5", "#e07b39", "#5a9e6f", "#b5534f", "#8a6bb1", "#c9a227", "#4aa3a3", "#777777"]
_STATUS_COLORS = {
    "landed": "#5a9e6f",
    "failed": "#b5534f",
    "abandoned": "#e07b39",
    "conflict": "#e07b39",
    "skipped": "#999999",
}
_W, _LABEL_W, _VALUE_W, _ROW_H = 760, 250, 90, 22


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _nice_max(v: float) -> float:
    if v <= 0:
        return 1.0
    exp = 10 ** math.floor(math.log10(v))
    for m in (1, 2, 2.5, 5, 10):
        if v <= m * exp:
            return m * exp
    return 10 * exp


def _figure(chart_id: str, title: str, body: str, height: int, note: str = "") -> str:
    return (
        f'<figure class="chart" id="{chart_id}"><figcaption>{_e(title)}</figcaption>'
        f'<svg viewBox="0 0 {_W} {height}" width="100%" role="img" aria-label="{_e(title)}">'
        f"{body}</svg>{f'<p class=note>{_e(note)}</p>' if note else ''}</figure>"
    )


def _empty(chart_id: str, title: str, text: str) -> str:
    body = f'<text x="{_W / 2}" y="30" text-anchor="middle" class="muted">{_e(text)}</text>'
    return _figure(chart_id, title, body, 50)


def _legend(names: list[str], y: int) -> str:
    out, x = [], _LABEL_W
    for i, name in enumerate(names):
        out.append(
            f'<rect x="{x}" y="{y - 9}" width="10" height="10" fill="{_COLORS[i % len(_COLORS)]}"/>'
            f'<text x="{x + 14}" y="{y}">{_e(name)}</text>'
        )
        x += 24 + 7 * len(name)
    return "".join(out)


def hbar_chart(
    chart_id: str,
    title: str,
    labels: list[str],
    series: list[tuple[str, list[float]]],
    *,
    fmt: Any = _int,
    stacked: bool = True,
    colors: list[str] | None = None,
    empty: str = "nothing to show",
) -> str:
    """Horizontal bars, one row per label; several series stack (or sit side by side)."""
    if not labels:
        return _empty(chart_id, title, empty)
    legend = len(series) > 1
    top = 26 if legend else 8
    n = len(series)
    row_h = _ROW_H if stacked else max(_ROW_H, 9 * n + 6)
    height = top + row_h * len(labels) + 8
    totals = [sum(s[1][i] or 0 for s in series) for i in range(len(labels))]
    peak = max(totals if stacked else [v or 0 for _, vals in series for v in vals]) or 1.0
    area = _W - _LABEL_W - _VALUE_W
    parts = [_legend([s[0] for s in series], 14)] if legend else []
    for i, label in enumerate(labels):
        y = top + i * row_h
        shown = label if len(label) <= 36 else "…" + label[-35:]
        parts.append(
            f'<text x="{_LABEL_W - 6}" y="{y + row_h / 2 + 4}" text-anchor="end">'
            f"<title>{_e(label)}</title>{_e(shown)}</text>"
        )
        x = float(_LABEL_W)
        for k, (name, values) in enumerate(series):
            v = values[i] or 0
            w = area * v / peak
            color = (colors or _COLORS)[(i if colors else k) % len(colors or _COLORS)]
            if stacked:
                bar_y, bar_h = y + 3, row_h - 6
                bx = x
                x += w
            else:
                bar_h = (row_h - 6) / n
                bar_y, bx = y + 3 + k * bar_h, _LABEL_W
            parts.append(
                f'<rect x="{bx:.1f}" y="{bar_y:.1f}" width="{max(w, 0.5):.1f}" height="{bar_h:.1f}"'
                f' fill="{color}"><title>{_e(label)} · {_e(name)}: {_e(fmt(v))}</title></rect>'
            )
            if not stacked:
                parts.append(
                    f'<text x="{bx + w + 4:.1f}" y="{bar_y + bar_h - 1:.1f}" class="small">'
                    f"{_e(fmt(v))}</text>"
                )
        if stacked:
            parts.append(
                f'<text x="{x + 4:.1f}" y="{y + row_h / 2 + 4}">{_e(fmt(totals[i]))}</text>'
            )
    return _figure(chart_id, title, "".join(parts), height)


def timeline_chart(
    chart_id: str, title: str, landed: list[float], conflicts: list[float], end: float
) -> str:
    """Landings over time: the count landed so far (a step line), conflicts as red marks."""
    if not landed and not conflicts:
        return _empty(chart_id, title, "no landings")
    left, right, top, bottom, height = 50, 20, 26, 34, 250
    latest = max([end, *landed, *conflicts, 1e-9])
    # Gridlines at whole, round seconds (or minutes): at most 6 of them.
    tick = next(
        (t for t in (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600) if latest / t <= 6),
        7200 * math.ceil(latest / 7200 / 6),
    )
    ticks = max(1, math.ceil(latest / tick))
    span = tick * ticks
    step = max(1, math.ceil(len(landed) / 4))  # whole landings per gridline
    peak = 4 * step
    pw, ph = _W - left - right, height - top - bottom

    def px(t: float) -> float:
        return left + pw * t / span

    def py(n: float) -> float:
        return top + ph * (1 - n / peak)

    def label(t: float) -> str:
        return f"{t / 60:g} min" if tick >= 60 else f"{t:g} s"

    parts = [
        f'<line x1="{left}" y1="{top + ph}" x2="{left + pw}" y2="{top + ph}" class="axis"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + ph}" class="axis"/>',
    ]
    for k in range(ticks + 1):
        parts.append(
            f'<text x="{px(k * tick):.1f}" y="{top + ph + 16}" text-anchor="middle" class="small">'
            f"{label(k * tick)}</text>"
        )
    for k in range(5):
        n = step * k
        parts.append(
            f'<text x="{left - 6}" y="{py(n) + 4:.1f}" text-anchor="end" class="small">{n}</text>'
            f'<line x1="{left}" y1="{py(n):.1f}" x2="{left + pw}" y2="{py(n):.1f}" class="grid"/>'
        )
    points, count = [f"{px(0):.1f},{py(0):.1f}"], 0
    for t in sorted(landed):
        points.append(f"{px(t):.1f},{py(count):.1f}")
        count += 1
        points.append(f"{px(t):.1f},{py(count):.1f}")
    points.append(f"{px(max([end, *landed])):.1f},{py(count):.1f}")
    parts.append(
        f'<polyline points="{" ".join(points)}" fill="none" stroke="{_COLORS[0]}" stroke-width="2"/>'
    )
    for i, t in enumerate(sorted(landed), 1):
        parts.append(
            f'<circle cx="{px(t):.1f}" cy="{py(i):.1f}" r="3" fill="{_COLORS[0]}">'
            f"<title>landing {i} at {t:.1f} s</title></circle>"
        )
    for t in conflicts:
        parts.append(
            f'<line x1="{px(t):.1f}" y1="{top + ph - 8}" x2="{px(t):.1f}" y2="{top + ph + 2}"'
            f' stroke="{_STATUS_COLORS["failed"]}" stroke-width="3"><title>conflict at {t:.1f} s</title></line>'
        )
    parts.append(
        f'<text x="{left + pw}" y="12" text-anchor="end" class="small">'
        f"{len(landed)} landed, {len(conflicts)} conflict(s) · time since the run started</text>"
    )
    return _figure(chart_id, title, "".join(parts), height)


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
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="n">{_e(c)}</td>' if i in numeric else f"<td>{_e(c)}</td>"
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
        ("cost", _money(r["cost_usd"])),
        (
            "per landed task",
            _money(r["cost_per_landed_task"]) if r["cost_per_landed_task"] is not None else "n/a",
        ),
        ("tokens in / out", f"{_int(r['input_tokens'])} / {_int(r['output_tokens'])}"),
        ("model calls", f"{r['llm_calls']} ({r['failed_calls']} failed)"),
        ("tool calls", str(r["tool_calls"])),
        ("conflicts", str(r["conflicts"])),
        ("wall time", _secs(r["wall_seconds"]) or "?"),
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
            [f"{x['role']} ({_pct(x['cost_share'])})" for x in report.roles],
            [("cost", [x["cost_usd"] for x in report.roles])],
            fmt=_money,
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
            fmt=_money,
        ),
        "outcomes": hbar_chart(
            "chart-outcomes",
            "Task outcomes",
            statuses,
            [("tasks", [status_counts[s] for s in statuses])],
            colors=[_STATUS_COLORS.get(s, _COLORS[7]) for s in statuses],
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
                t["task_id"],
                t["title"] or "",
                t["status"] or "",
                t["attempts"] or 0,
                _secs(t["seconds_to_land"]),
                t["conflicts"],
                t["calls"],
                _money(t["cost_usd"]),
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
                _int(x["input_tokens"]),
                _int(x["output_tokens"]),
                _pct(x["token_share"]),
                _money(x["cost_usd"]),
                _pct(x["cost_share"]),
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
<title>devswarm run {_e(rid)}</title><style>{_CSS}</style></head>
<body>
<h1>devswarm run {_e(rid)}</h1>
<div class="muted">branch {_e(r["branch"])} · started {_e(started)} UTC · {_e(r["cycles"] or 0)} cycle(s)</div>
<div class="cards">{"".join(f'<div class="card"><span class="muted">{_e(k)}</span><b>{_e(v)}</b></div>' for k, v in cards)}</div>
<details><summary>Goal</summary><pre>{_e(r["goal"] or "")}</pre></details>
<h2>Progress</h2>
{charts["landings"]}
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
devswarm sql "SELECT * FROM role_metrics WHERE run_id = '{_e(rid)}'"</p>
</body></html>
"""


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
