"""Charts as inline SVG: horizontal bars, the landings timeline and the tip's health (no
script, no network)."""

from __future__ import annotations

import html
import math
from typing import Any

from devswarm.report.formats import thousands

COLORS = ["#3b6ea5", "#e07b39", "#5a9e6f", "#b5534f", "#8a6bb1", "#c9a227", "#4aa3a3", "#777777"]
STATUS_COLORS = {
    "landed": "#5a9e6f",
    "failed": "#b5534f",
    "abandoned": "#e07b39",
    "conflict": "#e07b39",
    "skipped": "#999999",
}
_W, _LABEL_W, _VALUE_W, _ROW_H = 760, 250, 90, 22


def escape(text: Any) -> str:
    """Text made safe inside HTML/SVG elements and attribute values."""
    return html.escape(str(text), quote=True)


def _figure(chart_id: str, title: str, body: str, height: int, note: str = "") -> str:
    return (
        f'<figure class="chart" id="{chart_id}"><figcaption>{escape(title)}</figcaption>'
        f'<svg viewBox="0 0 {_W} {height}" width="100%" role="img" aria-label="{escape(title)}">'
        f"{body}</svg>{f'<p class=note>{escape(note)}</p>' if note else ''}</figure>"
    )


def _empty(chart_id: str, title: str, text: str) -> str:
    body = f'<text x="{_W / 2}" y="30" text-anchor="middle" class="muted">{escape(text)}</text>'
    return _figure(chart_id, title, body, 50)


def _legend(names: list[str], y: int) -> str:
    out, x = [], _LABEL_W
    for i, name in enumerate(names):
        out.append(
            f'<rect x="{x}" y="{y - 9}" width="10" height="10" fill="{COLORS[i % len(COLORS)]}"/>'
            f'<text x="{x + 14}" y="{y}">{escape(name)}</text>'
        )
        x += 24 + 7 * len(name)
    return "".join(out)


def hbar_chart(
    chart_id: str,
    title: str,
    labels: list[str],
    series: list[tuple[str, list[float]]],
    *,
    fmt: Any = thousands,
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
            f"<title>{escape(label)}</title>{escape(shown)}</text>"
        )
        x = float(_LABEL_W)
        for k, (name, values) in enumerate(series):
            v = values[i] or 0
            w = area * v / peak
            color = (colors or COLORS)[(i if colors else k) % len(colors or COLORS)]
            if stacked:
                bar_y, bar_h = y + 3, row_h - 6
                bx = x
                x += w
            else:
                bar_h = (row_h - 6) / n
                bar_y, bx = y + 3 + k * bar_h, _LABEL_W
            parts.append(
                f'<rect x="{bx:.1f}" y="{bar_y:.1f}" width="{max(w, 0.5):.1f}" height="{bar_h:.1f}"'
                f' fill="{color}"><title>{escape(label)} · {escape(name)}: {escape(fmt(v))}</title></rect>'
            )
            if not stacked:
                parts.append(
                    f'<text x="{bx + w + 4:.1f}" y="{bar_y + bar_h - 1:.1f}" class="small">'
                    f"{escape(fmt(v))}</text>"
                )
        if stacked:
            parts.append(
                f'<text x="{x + 4:.1f}" y="{y + row_h / 2 + 4}">{escape(fmt(totals[i]))}</text>'
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
        f'<polyline points="{" ".join(points)}" fill="none" stroke="{COLORS[0]}" stroke-width="2"/>'
    )
    for i, t in enumerate(sorted(landed), 1):
        parts.append(
            f'<circle cx="{px(t):.1f}" cy="{py(i):.1f}" r="3" fill="{COLORS[0]}">'
            f"<title>landing {i} at {t:.1f} s</title></circle>"
        )
    for t in conflicts:
        parts.append(
            f'<line x1="{px(t):.1f}" y1="{top + ph - 8}" x2="{px(t):.1f}" y2="{top + ph + 2}"'
            f' stroke="{STATUS_COLORS["failed"]}" stroke-width="3"><title>conflict at {t:.1f} s</title></line>'
        )
    parts.append(
        f'<text x="{left + pw}" y="12" text-anchor="end" class="small">'
        f"{len(landed)} landed, {len(conflicts)} conflict(s) · time since the run started</text>"
    )
    return _figure(chart_id, title, "".join(parts), height)


TIP_COLORS = {"green": "#5a9e6f", "red": "#b5534f", None: "#cccccc"}


def tip_chart(
    chart_id: str, title: str, tips: list[tuple[float, str | None, bool]], end: float, note: str
) -> str:
    """The branch tip over the run: a band green where the check passed on the tip, red where
    it failed, grey where nobody checked; a tick per landing, a dark one per revert.
    `tips`: (seconds since the start, "green" | "red" | None, is a revert), in time order."""
    if not tips:
        return _empty(chart_id, title, "no landings")
    left, right, top, band, height = 50, 20, 22, 28, 86
    span = max([end, *(t for t, _, _ in tips), 1e-9])
    pw = _W - left - right

    def px(t: float) -> float:
        return left + pw * min(t, span) / span

    parts = [f'<rect x="{left}" y="{top}" width="{pw}" height="{band}" fill="#eeeeee"/>']
    for i, (t, state, _revert) in enumerate(tips):
        until = tips[i + 1][0] if i + 1 < len(tips) else span
        parts.append(
            f'<rect x="{px(t):.1f}" y="{top}" width="{max(px(until) - px(t), 0.5):.1f}"'
            f' height="{band}" fill="{TIP_COLORS.get(state, TIP_COLORS[None])}">'
            f"<title>{escape(state or 'not checked')} from {t:.1f} s</title></rect>"
        )
    for t, _state, revert in tips:
        color = "#222222" if revert else "#ffffff"
        parts.append(
            f'<line x1="{px(t):.1f}" y1="{top + band}" x2="{px(t):.1f}" y2="{top + band + 8}"'
            f' stroke="{color if revert else "#999999"}" stroke-width="{2 if revert else 1}"/>'
        )
    parts.append(
        f'<text x="{left}" y="{top + band + 24}" class="small">0 s</text>'
        f'<text x="{left + pw}" y="{top + band + 24}" text-anchor="end" class="small">'
        f"{span:.0f} s</text>"
        f'<text x="{left + pw}" y="14" text-anchor="end" class="small">{escape(note)}</text>'
    )
    return _figure(chart_id, title, "".join(parts), height)
