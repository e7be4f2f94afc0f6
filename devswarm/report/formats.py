"""How the report writes money, counts, shares, durations and agent ids (terminal and HTML)."""

from __future__ import annotations

from typing import Any


def short_agent(agent_id: str, run_id: str) -> str:
    """An agent id without its run id: ``worker/<run>/c1/root/x/a1`` -> ``worker c1/root/x/a1``."""
    return agent_id.replace(f"/{run_id}/", " ", 1)


def money(v: Any) -> str:
    """Dollars with four decimals; None as $0.0000."""
    return f"${v or 0:.4f}"


def thousands(v: Any) -> str:
    """A whole number with thousands separators; None as 0."""
    return f"{int(v or 0):,}"


def percent(v: Any) -> str:
    """A share (0..1) as a whole percentage; None as empty."""
    return "" if v is None else f"{100 * v:.0f}%"


def seconds(v: Any) -> str:
    """Seconds with one decimal; None as empty."""
    return "" if v is None else f"{v:.1f} s"
