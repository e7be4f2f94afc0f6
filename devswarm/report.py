"""The end-of-run summary printed by `devswarm run` and `devswarm demo`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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
    from devswarm.store import open_readonly

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
    lines.append("")
    lines.append("Try:")
    for title, sql in EXAMPLE_QUERIES:
        lines.append(f"  # {title}")
        lines.append(f'  devswarm sql "{sql}" --db {db}')
    return lines
