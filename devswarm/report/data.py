"""What the report shows about a run, read from the store's views."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel

from devswarm.errors import UserError


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
            "model_calls": one("SELECT count(*) FROM model_calls WHERE run_id = ?"),
            "input_tokens": one(
                "SELECT coalesce(sum(input_tokens), 0) FROM model_calls WHERE run_id = ?"
            ),
            "output_tokens": one(
                "SELECT coalesce(sum(output_tokens), 0) FROM model_calls WHERE run_id = ?"
            ),
            "cost_usd": one("SELECT coalesce(sum(cost_usd), 0) FROM model_calls WHERE run_id = ?"),
            "tool_calls": one("SELECT count(*) FROM tool_calls WHERE run_id = ?"),
            "conflicts": one(
                "SELECT count(*) FROM landings WHERE run_id = ? AND status = 'conflict'"
            ),
            "resolved": one("SELECT count(*) FROM landings WHERE run_id = ? AND resolved"),
        }
    finally:
        store.close()


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
    tips: list[dict[str, Any]] = []  # each tip a landing made: seconds, verified, is_revert
    tip_health: dict[str, Any] = {}  # tip_health (empty without a verifier)


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
            store, "SELECT * FROM task_outcomes WHERE run_id = ? ORDER BY cycle, task_key", p
        ),
        landings=_rows(
            store,
            "SELECT l.task_key, l.status, l.conflict_files, l.ended_at,"
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
        tips=_rows(
            store,
            "SELECT date_diff('microsecond', r.started_at, l.ended_at) / 1e6 AS seconds,"
            " l.verified, starts_with(coalesce(l.agent_id, ''), 'verifier/') AS is_revert"
            " FROM landings l JOIN runs r USING (run_id)"
            " WHERE l.run_id = ? AND l.status = 'landed' AND l.ended_at IS NOT NULL"
            " AND l.new_tip IS DISTINCT FROM l.old_tip ORDER BY l.ended_at",
            p,
        ),
        tip_health=next(iter(_rows(store, "SELECT * FROM tip_health WHERE run_id = ?", p)), {}),
    )
