"""The run store: DuckDB tables of runs, cycles, agents, tasks, model calls, tool calls, landings.

DuckDB allows one writing process, so the orchestrating process owns the file and imports the
agents' JSONL record files (devswarm.records) into it. Import is an idempotent upsert on each
table's primary key, so re-importing a file (or a longer one after a resume) never duplicates a
row. How a row is merged:

- within a file, lines for the same key are merged in order: a later line overwrites the
  fields it names (an explicit null included) and keeps the others;
- against the stored row, the fields a record names overwrite it if the record is at least as
  new (``recorded_at``) as the stored row; an older record only fills fields that are still
  NULL. So importing several files that touch one row gives the same result in any order.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb

from devswarm.errors import UserError
from devswarm.records import (
    RECORDED_AT,
    TABLES,
    TEXT_LIMITS,
    Table,
    read_records,
    table_for,
    truncate_utf8,
)
from devswarm.records import now as _now

log = logging.getLogger(__name__)

SCHEMA_VERSION = 2

# Bookkeeping of the warehouse (not a record kind): which run files were merged, in what state.
_MERGED_STORES_DDL = (
    "CREATE TABLE IF NOT EXISTS merged_stores (source VARCHAR PRIMARY KEY, fingerprint VARCHAR,"
    " run_ids VARCHAR, row_count BIGINT, merged_at TIMESTAMP)"
)

# version -> statements that take a store from version-1 to version. A new store is created at
# SCHEMA_VERSION directly from TABLES, so TABLES must always describe the latest shape; the
# statements here are frozen text (TABLES may change again later).
MIGRATIONS: dict[int, tuple[str, ...]] = {
    2: (
        "CREATE TABLE IF NOT EXISTS prefect_flow_runs (flow_run_id VARCHAR, run_id VARCHAR,"
        " name VARCHAR, flow_name VARCHAR, role VARCHAR, agent_id VARCHAR, task_id VARCHAR,"
        " cycle INTEGER, parent_flow_run_id VARCHAR, parent_task_run_id VARCHAR,"
        " state_type VARCHAR, state_name VARCHAR, run_count INTEGER, started_at TIMESTAMP,"
        " ended_at TIMESTAMP, total_run_time_s DOUBLE, created_at TIMESTAMP,"
        " deployment_id VARCHAR, work_pool_name VARCHAR, tags VARCHAR, span_id VARCHAR,"
        " parent_span_id VARCHAR, recorded_at TIMESTAMP, PRIMARY KEY (flow_run_id))",
        "CREATE TABLE IF NOT EXISTS prefect_task_runs (task_run_id VARCHAR,"
        " flow_run_id VARCHAR, run_id VARCHAR, name VARCHAR, task_name VARCHAR,"
        " agent_id VARCHAR, step INTEGER, subflow_run_id VARCHAR, state_type VARCHAR,"
        " state_name VARCHAR, run_count INTEGER, max_retries INTEGER, retries INTEGER,"
        " cache_hit BOOLEAN, cache_key VARCHAR, cache_expiration TIMESTAMP,"
        " started_at TIMESTAMP, ended_at TIMESTAMP, total_run_time_s DOUBLE,"
        " created_at TIMESTAMP, tags VARCHAR, span_id VARCHAR, parent_span_id VARCHAR,"
        " recorded_at TIMESTAMP, PRIMARY KEY (task_run_id))",
        _MERGED_STORES_DDL,
    ),
}

_SQL_TYPES = {
    "text": "VARCHAR",
    "json": "VARCHAR",
    "int": "INTEGER",
    "bigint": "BIGINT",
    "double": "DOUBLE",
    "bool": "BOOLEAN",
    "timestamp": "TIMESTAMP",
}

# Batches up to this size go in as one VALUES statement; larger ones through a temporary JSON
# file and read_json (row-by-row executemany costs ~2 ms a row in DuckDB).
_VALUES_MAX_ROWS = 100


# --- value coercion: records come from many writers; a bad value becomes NULL, not a failed import


def _text(v: Any) -> str:
    if isinstance(v, str):
        return v
    if isinstance(v, dict | list | tuple):
        return json.dumps(v, default=str)
    return str(v)


def _json(v: Any) -> str:
    return v if isinstance(v, str) else json.dumps(v, default=str)


def _integer(bits: int) -> Callable[[Any], int]:
    bound = 2 ** (bits - 1)

    def convert(v: Any) -> int:
        if isinstance(v, float):
            if not v.is_integer():
                raise ValueError(v)
            v = int(v)
        elif not isinstance(v, int):  # bool is an int: True -> 1
            v = int(str(v).strip())
        if not -bound <= v < bound:
            raise ValueError(v)
        return int(v)

    return convert


def _double(v: Any) -> float:
    f = float(v)
    if not math.isfinite(f):  # JSON has no NaN/inf
        raise ValueError(v)
    return f


_TRUTHS = {"true": True, "false": False, "1": True, "0": False, "yes": True, "no": False}


def _bool(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    if isinstance(v, int) and v in (0, 1):
        return bool(v)
    if isinstance(v, str) and v.strip().lower() in _TRUTHS:
        return _TRUTHS[v.strip().lower()]
    raise ValueError(v)


def _timestamp(v: Any) -> str:
    """A UTC timestamp as DuckDB TIMESTAMP text; naive inputs are taken to be UTC already."""
    if isinstance(v, str):
        t = datetime.fromisoformat(v.strip())
    elif isinstance(v, datetime):
        # A subclass (Prefect's pendulum DateTime) goes through text: its replace() differs.
        t = v if type(v) is datetime else datetime.fromisoformat(v.isoformat())
    elif isinstance(v, int | float) and not isinstance(v, bool):
        t = datetime.fromtimestamp(v, UTC)
    else:
        raise ValueError(v)
    if t.tzinfo is not None:
        t = t.astimezone(UTC).replace(tzinfo=None)
    return t.isoformat(sep=" ", timespec="microseconds")


_COERCE: dict[str, Callable[[Any], Any]] = {
    "text": _text,
    "json": _json,
    "int": _integer(32),
    "bigint": _integer(64),
    "double": _double,
    "bool": _bool,
    "timestamp": _timestamp,
}


_INT_BOUNDS = {"int": 2**31, "bigint": 2**63}


def _columns(table: Table) -> dict[str, str]:
    """All columns of a table, the record-time column included."""
    return {**table.columns, RECORDED_AT: "timestamp"}


def _coercers(table: Table) -> dict[str, Callable[[Any], Any]]:
    out = {name: _COERCE[kind] for name, kind in _columns(table).items()}
    for (tname, col), limit in TEXT_LIMITS.items():
        if tname == table.name:
            out[col] = lambda v, _limit=limit: truncate_utf8(_text(v), _limit)
    return out


_COERCERS = {name: _coercers(table) for name, table in TABLES.items()}
# Python types of key values that need no coercion.
_KEY_TYPES = {
    name: tuple(int if table.columns[c] in _INT_BOUNDS else str for c in table.key)
    for name, table in TABLES.items()
}


class _Coercion:
    """Coerce record values to column types, counting (not raising on) bad values.

    Most values already have the right type; the fast paths keep a 50k-line import in Python
    from being dominated by per-value function calls.
    """

    def __init__(self) -> None:
        self.bad = 0

    def value(self, convert: Callable[[Any], Any], v: Any) -> Any:
        if v is None:
            return None
        try:
            return convert(v)
        except (TypeError, ValueError, OverflowError):
            self.bad += 1
            return None

    def column(self, kind: str, convert: Callable[[Any], Any], values: list) -> list:
        slow = self.value
        if kind in ("text", "json") and convert in (_text, _json):  # not a length-limited one
            return [v if v is None or type(v) is str else slow(convert, v) for v in values]
        if kind in _INT_BOUNDS:
            b = _INT_BOUNDS[kind]
            return [
                v if v is None or (type(v) is int and -b <= v < b) else slow(convert, v)
                for v in values
            ]
        if kind == "double":
            fin = math.isfinite
            return [
                v if v is None or (type(v) is float and fin(v)) else slow(convert, v)
                for v in values
            ]
        if kind == "bool":
            return [v if v is None or type(v) is bool else slow(convert, v) for v in values]
        if kind == "timestamp":
            # now()'s own UTC "...Z" text goes to DuckDB as is (TRY_CAST there); anything else
            # (offsets, datetimes, epochs) is normalised to UTC here.
            return [
                v if v is None or (type(v) is str and v[-1:] == "Z") else slow(convert, v)
                for v in values
            ]
        return [slow(convert, v) for v in values]


# --- SQL


def _create_table_sql(table: Table) -> str:
    cols = [f"{name} {_SQL_TYPES[kind]}" for name, kind in _columns(table).items()]
    cols.append(f"PRIMARY KEY ({', '.join(table.key)})")
    return f"CREATE TABLE IF NOT EXISTS {table.name} ({', '.join(cols)})"


def _upsert_sql(table: Table, cols: list[str], source: str) -> str:
    """INSERT the rows of ``source`` (a relation with ``cols``) into ``table``, merged by key."""
    all_types = _columns(table)
    select = ", ".join(f"TRY_CAST({c} AS {_SQL_TYPES[all_types[c]]}) AS {c}" for c in cols)
    sql = f"INSERT INTO {table.name} ({', '.join(cols)}) SELECT {select} FROM {source}"
    data_cols = [c for c in cols if c not in table.key and c != RECORDED_AT]
    if not data_cols and RECORDED_AT not in cols:
        return sql + f" ON CONFLICT ({', '.join(table.key)}) DO NOTHING"
    t, new = table.name, "excluded"
    # NULL times compare as "newer": records without times fall back to plain last-wins.
    newer = f"coalesce({new}.{RECORDED_AT} >= {t}.{RECORDED_AT}, true)"
    sets = [
        f"{c} = CASE WHEN {newer} THEN {new}.{c} ELSE coalesce({t}.{c}, {new}.{c}) END"
        for c in data_cols
    ]
    if RECORDED_AT in cols:
        sets.append(f"{RECORDED_AT} = greatest({t}.{RECORDED_AT}, {new}.{RECORDED_AT})")
    return sql + f" ON CONFLICT ({', '.join(table.key)}) DO UPDATE SET {', '.join(sets)}"


_VIEWS = {
    "agent_metrics": """
SELECT a.agent_id, a.run_id, a.cycle, a.role, a.task_id, a.request_model, a.status, a.steps,
    coalesce(l.calls, 0) AS calls,
    coalesce(l.failed_calls, 0) AS failed_calls,
    coalesce(l.input_tokens, 0) AS input_tokens,
    coalesce(l.output_tokens, 0) AS output_tokens,
    coalesce(l.cache_read_input_tokens, 0) AS cache_read_input_tokens,
    l.cost_usd,
    coalesce(tc.tool_calls, 0) AS tool_calls,
    coalesce(tc.tool_errors, 0) AS tool_errors,
    coalesce(tk.tasks_landed, 0) AS tasks_landed,
    coalesce(tk.tasks_failed, 0) AS tasks_failed,
    coalesce(ld.conflicts, 0) AS conflicts,
    date_diff('microsecond', a.started_at, a.ended_at) / 1e6 AS wall_seconds
FROM agents a
-- each side is aggregated per agent first, so the joins cannot multiply rows
LEFT JOIN (
    SELECT agent_id, count(*) AS calls, count(error_type) AS failed_calls,
        sum(input_tokens)::BIGINT AS input_tokens, sum(output_tokens)::BIGINT AS output_tokens,
        sum(cache_read_input_tokens)::BIGINT AS cache_read_input_tokens, sum(cost_usd) AS cost_usd
    FROM llm_calls GROUP BY agent_id
) l USING (agent_id)
LEFT JOIN (
    SELECT agent_id, count(*) AS tool_calls, count(error_type) AS tool_errors
    FROM tool_calls GROUP BY agent_id
) tc USING (agent_id)
LEFT JOIN (
    SELECT worker_agent_id AS agent_id,
        count(*) FILTER (WHERE status = 'landed') AS tasks_landed,
        count(*) FILTER (WHERE status IN ('failed', 'abandoned')) AS tasks_failed
    FROM tasks GROUP BY worker_agent_id
) tk USING (agent_id)
LEFT JOIN (
    SELECT agent_id, count(*) FILTER (WHERE status = 'conflict') AS conflicts
    FROM landings GROUP BY agent_id
) ld USING (agent_id)
""",
    "run_summary": """
SELECT r.run_id, r.run_name, r.goal, r.branch, r.status, r.started_at, r.ended_at,
    date_diff('microsecond', r.started_at, r.ended_at) / 1e6 AS wall_seconds,
    r.cycles,
    coalesce(a.agents, 0) AS agents,
    coalesce(tk.tasks, 0) AS tasks,
    coalesce(tk.tasks_landed, 0) AS tasks_landed,
    coalesce(tk.tasks_failed, 0) AS tasks_failed,
    coalesce(l.llm_calls, 0) AS llm_calls,
    coalesce(l.failed_calls, 0) AS failed_calls,
    coalesce(l.input_tokens, 0) AS input_tokens,
    coalesce(l.output_tokens, 0) AS output_tokens,
    coalesce(l.cache_read_input_tokens, 0) AS cache_read_input_tokens,
    l.cost_usd,
    coalesce(tc.tool_calls, 0) AS tool_calls,
    coalesce(ld.landings, 0) AS landings,
    coalesce(ld.conflicts, 0) AS conflicts,
    l.cost_usd / nullif(tk.tasks_landed, 0) AS cost_per_landed_task
FROM runs r
LEFT JOIN (SELECT run_id, count(*) AS agents FROM agents GROUP BY run_id) a USING (run_id)
LEFT JOIN (
    SELECT run_id, count(*) AS tasks,
        count(*) FILTER (WHERE status = 'landed') AS tasks_landed,
        count(*) FILTER (WHERE status IN ('failed', 'abandoned')) AS tasks_failed
    FROM tasks GROUP BY run_id
) tk USING (run_id)
LEFT JOIN (
    SELECT run_id, count(*) AS llm_calls, count(error_type) AS failed_calls,
        sum(input_tokens)::BIGINT AS input_tokens, sum(output_tokens)::BIGINT AS output_tokens,
        sum(cache_read_input_tokens)::BIGINT AS cache_read_input_tokens, sum(cost_usd) AS cost_usd
    FROM llm_calls GROUP BY run_id
) l USING (run_id)
LEFT JOIN (SELECT run_id, count(*) AS tool_calls FROM tool_calls GROUP BY run_id) tc USING (run_id)
LEFT JOIN (
    SELECT run_id, count(*) FILTER (WHERE status = 'landed') AS landings,
        count(*) FILTER (WHERE status = 'conflict') AS conflicts
    FROM landings GROUP BY run_id
) ld USING (run_id)
""",
    # Per role (planner, worker, judge) of each run: every model call counts, even one whose
    # agent row is missing (its role is then the first part of its agent id).
    "role_metrics": """
SELECT *,
    total_tokens / nullif(sum(total_tokens) OVER (PARTITION BY run_id), 0) AS token_share,
    cost_usd / nullif(sum(cost_usd) OVER (PARTITION BY run_id), 0) AS cost_share
FROM (
    SELECT coalesce(a.run_id, l.run_id) AS run_id,
        coalesce(a.role, split_part(l.agent_id, '/', 1)) AS role,
        count(DISTINCT coalesce(a.agent_id, l.agent_id)) AS agents,
        coalesce(sum(l.calls), 0)::BIGINT AS calls,
        coalesce(sum(l.failed_calls), 0)::BIGINT AS failed_calls,
        coalesce(sum(l.input_tokens), 0)::BIGINT AS input_tokens,
        coalesce(sum(l.output_tokens), 0)::BIGINT AS output_tokens,
        coalesce(sum(l.cache_read_input_tokens), 0)::BIGINT AS cache_read_input_tokens,
        (coalesce(sum(l.input_tokens), 0) + coalesce(sum(l.output_tokens), 0))::BIGINT
            AS total_tokens,
        coalesce(sum(l.cost_usd), 0) AS cost_usd,
        coalesce(sum(a.steps), 0)::BIGINT AS steps
    FROM agents a
    FULL OUTER JOIN (
        SELECT agent_id, any_value(run_id) AS run_id, count(*) AS calls,
            count(error_type) AS failed_calls, sum(input_tokens) AS input_tokens,
            sum(output_tokens) AS output_tokens,
            sum(cache_read_input_tokens) AS cache_read_input_tokens, sum(cost_usd) AS cost_usd
        FROM llm_calls GROUP BY agent_id
    ) l ON a.agent_id = l.agent_id
    GROUP BY ALL
)
""",
    # One row per task: outcome, attempts, time to land, and what its workers cost.
    "task_outcomes": """
SELECT t.run_id, t.task_id, t.cycle, t.title, t.status, t.attempts, t.reason, t.commit_sha,
    t.worker_agent_id, p.ended_at AS planned_at, t.started_at, t.ended_at, ld.landed_at,
    date_diff('microsecond', p.ended_at, t.started_at) / 1e6 AS queued_seconds,
    date_diff('microsecond', t.started_at, t.ended_at) / 1e6 AS wall_seconds,
    date_diff('microsecond', t.started_at, ld.landed_at) / 1e6 AS seconds_to_land,
    coalesce(ld.landing_attempts, 0) AS landing_attempts,
    coalesce(ld.conflicts, 0) AS conflicts,
    coalesce(c.workers, 0) AS workers,
    coalesce(c.calls, 0) AS calls,
    coalesce(c.input_tokens, 0) AS input_tokens,
    coalesce(c.output_tokens, 0) AS output_tokens,
    coalesce(c.cost_usd, 0) AS cost_usd,
    CASE WHEN t.status = 'landed' THEN coalesce(c.cost_usd, 0) END AS landed_cost_usd
FROM tasks t
LEFT JOIN agents p ON p.agent_id = t.planner_agent_id
LEFT JOIN (
    SELECT run_id, task_id, max(ended_at) FILTER (WHERE status = 'landed') AS landed_at,
        count(*) AS landing_attempts, count(*) FILTER (WHERE status = 'conflict') AS conflicts
    FROM landings GROUP BY run_id, task_id
) ld ON ld.run_id = t.run_id AND ld.task_id = t.task_id
LEFT JOIN (
    SELECT a.run_id, a.task_id, count(DISTINCT a.agent_id) AS workers,
        count(l.agent_id) AS calls, sum(l.input_tokens)::BIGINT AS input_tokens,
        sum(l.output_tokens)::BIGINT AS output_tokens, sum(l.cost_usd) AS cost_usd
    FROM agents a LEFT JOIN llm_calls l ON l.agent_id = a.agent_id
    WHERE a.role = 'worker' AND a.task_id IS NOT NULL
    GROUP BY a.run_id, a.task_id
) c ON c.run_id = t.run_id AND c.task_id = t.task_id
""",
    # Landings per minute of each run, minutes without one included (from the run's start).
    "landing_timeline": """
WITH counts AS (
    SELECT run_id, date_trunc('minute', ended_at) AS minute,
        count(*) FILTER (WHERE status = 'landed') AS landings,
        count(*) FILTER (WHERE status = 'conflict') AS conflicts,
        count(*) FILTER (WHERE status NOT IN ('landed', 'conflict')) AS other
    FROM landings WHERE ended_at IS NOT NULL GROUP BY ALL
), bounds AS (
    SELECT c.run_id, date_trunc('minute', least(min(c.minute), min(r.started_at))) AS lo,
        max(c.minute) AS hi
    FROM counts c LEFT JOIN runs r USING (run_id) GROUP BY c.run_id
), minutes AS (
    SELECT run_id, unnest(generate_series(lo, hi, INTERVAL 1 MINUTE)) AS minute FROM bounds
)
SELECT m.run_id, m.minute,
    coalesce(c.landings, 0) AS landings,
    coalesce(c.conflicts, 0) AS conflicts,
    coalesce(c.other, 0) AS other,
    sum(coalesce(c.landings, 0)) OVER (PARTITION BY m.run_id ORDER BY m.minute)::BIGINT
        AS landed_total
FROM minutes m LEFT JOIN counts c USING (run_id, minute)
""",
    # Files that fought: conflicts per file, and how many tasks planned to change it.
    "hot_files": """
WITH conflicted AS (
    SELECT run_id, task_id, ended_at, resolved,
        unnest(from_json(conflict_files, '["VARCHAR"]')) AS file
    FROM landings
    WHERE status = 'conflict' AND json_valid(conflict_files)
        AND json_type(conflict_files) = 'ARRAY'
), planned AS (
    SELECT run_id, unnest(from_json(files, '["VARCHAR"]')) AS file, task_id
    FROM tasks WHERE json_valid(files) AND json_type(files) = 'ARRAY'
), per_file AS (
    SELECT run_id, file, count(*) AS conflicts, count(DISTINCT task_id) AS conflicted_tasks,
        min(ended_at) AS first_conflict_at, max(ended_at) AS last_conflict_at
    FROM conflicted GROUP BY run_id, file
), plans AS (
    SELECT run_id, file, count(DISTINCT task_id) AS planned_tasks FROM planned GROUP BY ALL
)
SELECT coalesce(f.run_id, p.run_id) AS run_id, coalesce(f.file, p.file) AS file,
    coalesce(f.conflicts, 0) AS conflicts,
    coalesce(f.conflicted_tasks, 0) AS conflicted_tasks,
    coalesce(p.planned_tasks, 0) AS planned_tasks,
    f.first_conflict_at, f.last_conflict_at
FROM per_file f FULL OUTER JOIN plans p ON p.run_id = f.run_id AND p.file = f.file
WHERE coalesce(f.conflicts, 0) > 0 OR p.planned_tasks > 1
""",
    "tool_errors": """
SELECT e.run_id, e.tool_name, e.error_type, count(*) AS errors,
    count(DISTINCT e.agent_id) AS agents,
    any_value(c.calls) AS tool_calls,
    count(*) / any_value(c.calls) AS error_rate,
    min(e.started_at) AS first_at,
    arg_min(e.output_excerpt, e.started_at) AS example
FROM tool_calls e
JOIN (
    SELECT run_id, tool_name, count(*) AS calls FROM tool_calls GROUP BY ALL
) c ON c.run_id IS NOT DISTINCT FROM e.run_id AND c.tool_name IS NOT DISTINCT FROM e.tool_name
WHERE e.error_type IS NOT NULL
GROUP BY e.run_id, e.tool_name, e.error_type
""",
    # Latency of answered calls per model (failed attempts are counted, not timed: a 429 is fast).
    "model_latency": """
SELECT run_id, request_model, count(*) AS calls,
    count(*) FILTER (WHERE error_type IS NULL) AS ok_calls,
    count(error_type) AS failed_calls,
    count(*) FILTER (WHERE attempt > 1) AS retries,
    quantile_cont(duration_ms, 0.5) FILTER (WHERE error_type IS NULL) AS p50_ms,
    quantile_cont(duration_ms, 0.9) FILTER (WHERE error_type IS NULL) AS p90_ms,
    quantile_cont(duration_ms, 0.99) FILTER (WHERE error_type IS NULL) AS p99_ms,
    max(duration_ms) FILTER (WHERE error_type IS NULL) AS max_ms,
    avg(duration_ms) FILTER (WHERE error_type IS NULL) AS mean_ms,
    sum(output_tokens) FILTER (WHERE error_type IS NULL)
        / nullif(sum(duration_ms) FILTER (WHERE error_type IS NULL) / 1000, 0)
        AS output_tokens_per_second
FROM llm_calls GROUP BY run_id, request_model
""",
}


def _is_lock_error(exc: BaseException) -> bool:
    # Another process holds the file (IOException "Could not set lock ... Conflicting lock"), or
    # this process has it open with another configuration (ConnectionException).
    text = str(exc)
    return (
        "Could not set lock" in text
        or "Conflicting lock" in text
        or "different configuration" in text
    )


def is_busy(exc: BaseException | None) -> bool:
    """True if ``exc`` says another process holds a store file (worth retrying shortly)."""
    while exc is not None:
        if _is_lock_error(exc):
            return True
        exc = exc.__cause__  # a UserError raised from DuckDB's lock error
    return False


def _one_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _sql_text(value: object) -> str:
    """A SQL string literal (paths go into ATTACH/COPY, which take no parameters)."""
    return "'" + str(value).replace("'", "''") + "'"


def _busy(path: Path) -> UserError:
    return UserError(
        f"the store {path} is being written by another process; try again when the run ends"
    )


def _empty_select(table: Table) -> str:
    """A query with the table's columns and no rows (a table an older file lacks)."""
    cols = ", ".join(f"CAST(NULL AS {_SQL_TYPES[k]}) AS {c}" for c, k in _columns(table).items())
    return f"SELECT {cols} WHERE false"


class Store:
    """A DuckDB run store. Not for sharing across processes; safe to share across threads."""

    def __init__(
        self, path: Path, *, read_only: bool = False, _cleanup: Path | None = None
    ) -> None:
        """Open (creating and migrating if writable) the store at ``path``.

        Raises UserError if the file is missing (read-only), held by another process, not a
        devswarm store, or written by a newer devswarm.
        """
        self.path = Path(path)
        self.read_only = read_only
        self._cleanups = [_cleanup] if _cleanup else []  # snapshot folders to delete on close
        self._lock = threading.RLock()
        if read_only and not self.path.exists():
            raise UserError(f"no store at {self.path}")
        if not read_only:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._con = duckdb.connect(str(self.path), read_only=read_only)
        except duckdb.Error as exc:
            if _is_lock_error(exc):
                raise _busy(self.path) from exc
            raise UserError(f"cannot open the store {self.path}: {_one_line(exc)}") from exc
        try:
            self._check_or_migrate()
        except duckdb.Error as exc:  # e.g. a damaged file
            self._con.close()
            raise UserError(f"cannot open the store {self.path}: {_one_line(exc)}") from exc
        except BaseException:
            self._con.close()
            raise

    @classmethod
    def _over(cls, con: duckdb.DuckDBPyConnection, path: Path, cleanups: list[Path]) -> Store:
        """A read-only Store over an in-memory catalog of views (see open_readonly)."""
        store = cls.__new__(cls)
        store.path, store.read_only = Path(path), True
        store._cleanups, store._lock, store._con = cleanups, threading.RLock(), con
        return store

    # --- schema

    def _check_or_migrate(self) -> None:
        has_version = self._con.execute(
            "SELECT count(*) FROM information_schema.tables"
            " WHERE table_schema = 'main' AND table_name = 'schema_version'"
        ).fetchall()[0][0]
        if self.read_only:
            if not has_version:
                raise UserError(f"{self.path} is not a devswarm store")
            self._version_ok(self._version())
            self._temp_views()
            return
        self._con.execute("BEGIN")
        try:
            if not has_version:
                # A new store is created at the latest shape; migrations are for old files.
                self._con.execute(
                    "CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at TIMESTAMP)"
                )
                for table in TABLES.values():
                    self._con.execute(_create_table_sql(table))
                self._con.execute(_MERGED_STORES_DDL)
                self._stamp(SCHEMA_VERSION)
            else:
                current = self._version()
                self._version_ok(current)
                for version in range(current + 1, SCHEMA_VERSION + 1):
                    for statement in MIGRATIONS.get(version, ()):
                        self._con.execute(statement)
                    self._stamp(version)
            # Views hold no data: recreate them on every open so a new release's views apply.
            for name, sql in _VIEWS.items():
                self._con.execute(f"CREATE OR REPLACE VIEW {name} AS {sql}")
            self._con.execute("COMMIT")
        except BaseException:
            self._con.execute("ROLLBACK")
            raise

    def _temp_views(self) -> None:
        """A read-only file may be older than this devswarm: this release's views (and empty
        stand-ins for tables it lacks) go in the connection's temporary catalog, which DuckDB
        searches before the file's own."""
        present = {
            name
            for (name,) in self._con.execute(
                "SELECT table_name FROM information_schema.tables"
                " WHERE table_schema = 'main' AND table_catalog = current_database()"
            ).fetchall()
        }
        for table in TABLES.values():
            if table.name not in present:
                self._con.execute(f"CREATE TEMP VIEW {table.name} AS {_empty_select(table)}")
        for name, sql in _VIEWS.items():
            self._con.execute(f"CREATE OR REPLACE TEMP VIEW {name} AS {sql}")

    def _version(self) -> int:
        row = self._con.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchall()
        return row[0][0]

    def _version_ok(self, version: int) -> None:
        if version > SCHEMA_VERSION:
            raise UserError(
                f"the store {self.path} has schema version {version}; this devswarm knows up to"
                f" {SCHEMA_VERSION} (upgrade devswarm)"
            )

    def _stamp(self, version: int) -> None:
        self._con.execute(
            "INSERT INTO schema_version VALUES (?, CAST(? AS TIMESTAMP))",
            [version, _now().rstrip("Z")],
        )

    # --- writing

    def import_jsonl(self, path: Path) -> int:
        """Upsert the records of one JSONL file; returns the number of rows upserted.

        Idempotent: importing a file again (or a longer version of it) changes only what the new
        lines change. A missing file imports nothing (the agent never wrote a record). Records of
        unknown kinds and unknown fields are ignored; records without their key are skipped.
        """
        path = Path(path)
        if not path.exists():
            return 0
        return self._upsert_records(read_records(path), source=str(path))

    def add(self, kind: str, **fields: Any) -> None:
        """Upsert one record directly (``recorded_at`` defaults to now)."""
        if table_for(kind) is None:
            raise ValueError(f"unknown record kind {kind!r}; expected one of {sorted(TABLES)}")
        fields.setdefault(RECORDED_AT, _now())
        self._upsert_records([{"kind": kind, **fields}], source="add()")

    def add_many(self, records: Iterable[dict], *, source: str = "add_many()") -> int:
        """Upsert records (dicts with ``kind`` and columns) in one transaction; returns the count."""
        return self._upsert_records(records, source=source)

    def _upsert_records(self, records: Iterable[dict], *, source: str) -> int:
        self._check_writable()
        merged: dict[str, dict[tuple, dict]] = {}
        coercion = _Coercion()
        unknown = keyless = 0
        for record in records:
            table = table_for(record.get("kind"))  # type: ignore[arg-type]
            if table is None:
                unknown += 1
                continue
            key = tuple(record.get(c) for c in table.key)
            if not all(type(v) is t for v, t in zip(key, _KEY_TYPES[table.name], strict=True)):
                convert = _COERCERS[table.name]
                key = tuple(
                    coercion.value(convert[c], v) for c, v in zip(table.key, key, strict=True)
                )
                if any(part is None for part in key):
                    keyless += 1
                    continue
            # Later lines overwrite the fields they name; unknown fields are dropped later.
            merged.setdefault(table.name, {}).setdefault(key, {}).update(record)

        if unknown:
            log.debug("%s: ignored %d records of unknown kinds", source, unknown)
        if keyless:
            log.warning("%s: skipped %d records without their key", source, keyless)

        total = 0
        with self._lock:
            self._con.execute("BEGIN")
            try:
                for name, rows in merged.items():
                    total += self._upsert_rows(TABLES[name], rows.values(), coercion)
                self._con.execute("COMMIT")
            except BaseException:
                self._con.execute("ROLLBACK")
                raise
        if coercion.bad:
            log.warning("%s: %d values of the wrong type were stored as NULL", source, coercion.bad)
        return total

    def _upsert_rows(self, table: Table, rows: Iterable[dict], coercion: _Coercion) -> int:
        convert, kinds = _COERCERS[table.name], _columns(table)
        # Rows naming different fields become separate statements, so a record never sets a
        # field it did not name (a partial status update keeps the row's other fields). Rows
        # from one writer share their field order, so the dict's own key order groups them.
        groups: dict[tuple[str, ...], list[dict]] = {}
        for row in rows:
            groups.setdefault(tuple(row), []).append(row)
        count = 0
        for fields, group in groups.items():
            named = set(fields)
            cols = [c for c in kinds if c in named]  # table order, known columns only
            columns = [coercion.column(kinds[c], convert[c], [r[c] for r in group]) for c in cols]
            count += len(group)
            if len(group) <= _VALUES_MAX_ROWS:
                self._upsert_values(table, cols, columns)
            else:
                self._upsert_file(table, cols, columns)
        return count

    def _upsert_values(self, table: Table, cols: list[str], columns: list[list[Any]]) -> None:
        placeholders = "(" + ", ".join("?" * len(cols)) + ")"
        source = f"(VALUES {', '.join([placeholders] * len(columns[0]))}) AS v({', '.join(cols)})"
        params = [v for values in zip(*columns, strict=True) for v in values]
        self._con.execute(_upsert_sql(table, cols, source), params)

    def _upsert_file(self, table: Table, cols: list[str], columns: list[list[Any]]) -> None:
        types = _columns(table)
        # Timestamps are read as text and TRY_CAST in SQL (see _Coercion.column).
        spec = ", ".join(
            f"'{c}': '{'VARCHAR' if types[c] == 'timestamp' else _SQL_TYPES[types[c]]}'"
            for c in cols
        )
        rows = [dict(zip(cols, values, strict=True)) for values in zip(*columns, strict=True)]
        fd, tmp = tempfile.mkstemp(prefix=f"devswarm-{table.name}-", suffix=".json")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(json.dumps(rows))  # one call into the C encoder (json.dump isn't C)
            source = f"read_json(?, format = 'array', columns = {{{spec}}})"
            self._con.execute(_upsert_sql(table, cols, source), [tmp])
        finally:
            os.unlink(tmp)

    def import_store(self, path: Path, *, record: bool = False) -> int:
        """Merge every row of another store file (e.g. a finished run's) into this one.

        Uses the same merge rule as import_jsonl, so merging twice changes nothing. A file of an
        older schema version merges the tables and columns it has. With ``record``, the file's
        fingerprint is kept in ``merged_stores`` (same transaction), so readers know they need
        not attach it until it changes. Returns the number of rows read from the other store.
        """
        self._check_writable()
        path = Path(path)
        # Taken before reading: a write after it changes the file's fingerprint, so the file
        # then counts as not merged rather than as merged with rows missing.
        mark = fingerprint(path) if record else None
        total = 0
        with self._lock:
            try:
                self._con.execute(f"ATTACH {_sql_text(path)} AS other (READ_ONLY)")
            except duckdb.Error as exc:
                if _is_lock_error(exc):
                    raise _busy(path) from exc
                raise UserError(f"cannot read the store {path}: {_one_line(exc)}") from exc
            try:
                version = _attached_version(self._con, "other", path)
                if version is None:
                    raise UserError(f"{path} is not a devswarm store")
                present = _attached_columns(self._con, "other")
                self._con.execute("BEGIN")
                try:
                    for table in TABLES.values():
                        have = present.get(table.name)
                        if not have:
                            continue
                        cols = [c for c in _columns(table) if c in have]
                        source = f"other.main.{table.name}"
                        total += self._con.execute(f"SELECT count(*) FROM {source}").fetchall()[0][
                            0
                        ]
                        self._con.execute(_upsert_sql(table, cols, source))
                    if record:
                        run_ids = (
                            [
                                r
                                for (r,) in self._con.execute(
                                    "SELECT DISTINCT run_id FROM other.main.runs ORDER BY 1"
                                ).fetchall()
                            ]
                            if "runs" in present
                            else []
                        )
                        self._con.execute(
                            "INSERT OR REPLACE INTO merged_stores VALUES"
                            " (?, ?, ?, ?, CAST(? AS TIMESTAMP))",
                            [
                                str(path.resolve()),
                                mark,
                                json.dumps(run_ids),
                                total,
                                _now().rstrip("Z"),
                            ],
                        )
                    self._con.execute("COMMIT")
                except BaseException:
                    self._con.execute("ROLLBACK")
                    raise
            finally:
                self._con.execute("DETACH other")
        return total

    def merge_run_files(self, paths: Iterable[Path]) -> list[Path]:
        """Merge the run files that changed since their last merge; returns those merged.

        A file another process is writing at this moment is skipped (it stays readable as a
        live run file; the next merge takes it).
        """
        merged = self._merged_fingerprints()
        done: list[Path] = []
        for path in paths:
            path = Path(path)
            if merged.get(str(path.resolve())) == fingerprint(path):
                continue
            try:
                self.import_store(path, record=True)
            except UserError as exc:
                log.info("not merged now: %s", exc)
                continue
            done.append(path)
        return done

    def _merged_fingerprints(self) -> dict[str, str]:
        with self._lock:
            return dict(
                self._con.execute("SELECT source, fingerprint FROM merged_stores").fetchall()
            )

    def link_history(self, run_id: str) -> None:
        """Join imported Prefect runs of a run to our agents where Prefect's side lacks it.

        Precedence: an agent row that recorded its flow run id (exact); then, for a work flow
        run, the worker of the task its name gives ("work · <task id>") that started while it
        ran. A task run without an agent gets its subflow's (a stand-in for a subflow run) or
        else its flow run's (a landing).
        """
        self._check_writable()
        statements = [
            """
UPDATE prefect_flow_runs p SET agent_id = m.agent_id, task_id = coalesce(m.task_id, p.task_id),
    cycle = coalesce(m.cycle, p.cycle)
FROM (
    SELECT flow_run_id, any_value(agent_id) AS agent_id, any_value(task_id) AS task_id,
        any_value(cycle) AS cycle
    FROM agents WHERE run_id = $run AND flow_run_id IS NOT NULL GROUP BY flow_run_id
) m
WHERE p.flow_run_id = m.flow_run_id AND p.run_id = $run
""",
            """
UPDATE prefect_flow_runs p SET agent_id = a.agent_id, task_id = a.task_id, cycle = a.cycle
FROM (
    SELECT p2.flow_run_id,
        arg_min(a.agent_id, abs(epoch(a.started_at) - epoch(p2.started_at))) AS agent_id
    FROM prefect_flow_runs p2
    JOIN agents a ON a.run_id = p2.run_id AND a.role = 'worker'
        AND (a.task_id = regexp_replace(p2.name, '^work · ', '')
            OR a.task_id LIKE '%.' || regexp_replace(p2.name, '^work · ', ''))
        AND a.started_at BETWEEN p2.started_at - INTERVAL 5 SECOND
            AND coalesce(p2.ended_at, p2.started_at + INTERVAL 1 DAY)
    WHERE p2.run_id = $run AND p2.agent_id IS NULL AND p2.flow_name = 'work'
    GROUP BY p2.flow_run_id
) m
JOIN agents a ON a.agent_id = m.agent_id
WHERE p.flow_run_id = m.flow_run_id
""",
            """
UPDATE prefect_task_runs t SET agent_id = coalesce(
    (SELECT s.agent_id FROM prefect_flow_runs s WHERE s.flow_run_id = t.subflow_run_id),
    (SELECT f.agent_id FROM prefect_flow_runs f WHERE f.flow_run_id = t.flow_run_id))
WHERE t.run_id = $run AND t.agent_id IS NULL
""",
        ]
        with self._lock:
            self._con.execute("BEGIN")
            try:
                for sql in statements:
                    self._con.execute(sql, {"run": run_id})
                self._con.execute("COMMIT")
            except BaseException:
                self._con.execute("ROLLBACK")
                raise

    def _check_writable(self) -> None:
        if self.read_only:
            raise UserError(f"the store {self.path} is open read-only")

    # --- reading

    def query(self, sql: str, params: Any = None) -> tuple[list[str], list[tuple]]:
        """Run SQL; returns (column names, rows). A SQL error becomes a one-line UserError."""
        with self._lock:
            try:
                cursor = self._con.execute(sql, params)
                columns = [d[0] for d in cursor.description] if cursor.description else []
                return columns, cursor.fetchall()
            except duckdb.Error as exc:
                raise UserError(_one_line(exc)) from exc

    def export_parquet(self, folder: Path) -> dict[str, int]:
        """Write every table and view to ``folder/<name>.parquet``; returns rows per file."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        counts: dict[str, int] = {}
        with self._lock:
            for name in [*TABLES, *_VIEWS]:
                target = folder / f"{name}.parquet"
                try:
                    self._con.execute(
                        f"COPY (SELECT * FROM {name}) TO {_sql_text(target)} (FORMAT parquet)"
                    )
                    counts[name] = self._con.execute(
                        f"SELECT count(*) FROM read_parquet({_sql_text(target)})"
                    ).fetchall()[0][0]
                except duckdb.Error as exc:
                    raise UserError(f"cannot write {target}: {_one_line(exc)}") from exc
        return counts

    def close(self) -> None:
        """Close the connection (and delete the snapshot copies, if this reads any)."""
        with self._lock:
            self._con.close()
            for folder in self._cleanups:
                shutil.rmtree(folder, ignore_errors=True)
            self._cleanups = []

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _attached_version(con: duckdb.DuckDBPyConnection, alias: str, path: Path) -> int | None:
    """The schema version of an attached file (None if it is not a devswarm store)."""
    try:
        version = con.execute(f"SELECT max(version) FROM {alias}.main.schema_version").fetchall()
    except duckdb.Error:
        return None
    version = version[0][0]
    if version is not None and version > SCHEMA_VERSION:
        raise UserError(
            f"the store {path} has schema version {version}; this devswarm knows up to"
            f" {SCHEMA_VERSION} (upgrade devswarm)"
        )
    return version


def _attached_columns(con: duckdb.DuckDBPyConnection, alias: str) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for table, column in con.execute(
        "SELECT table_name, column_name FROM duckdb_columns()"
        " WHERE database_name = ? AND schema_name = 'main'",
        [alias],
    ).fetchall():
        out.setdefault(table, set()).add(column)
    return out


# --- the warehouse and the runs' own files
#
# DuckDB allows one writing process per file. A run writes only its own file,
# runs/<run id>/run.duckdb beside the warehouse, opening it briefly per import; when the run
# ends, its file is merged into the warehouse (idempotently, retrying while someone else holds
# the warehouse). Readers attach the warehouse and every run file not merged in its current
# state, so they see finished runs and running ones as far as they got, and no reader can make
# a run lose a record.


def run_store_path(warehouse: Path, run_id: str) -> Path:
    """The file a run writes: ``runs/<run id>/run.duckdb`` beside the warehouse."""
    return Path(warehouse).parent / "runs" / run_id / "run.duckdb"


def run_store_files(warehouse: Path) -> list[Path]:
    """Every run file beside the warehouse."""
    return sorted(Path(warehouse).parent.glob("runs/*/run.duckdb"))


def fingerprint(path: Path) -> str | None:
    """Changes whenever the file's content may have: size, mtime, DuckDB's headers, its WAL."""
    path = Path(path)
    try:
        st = path.stat()
        with path.open("rb") as f:
            head = f.read(3 * 4096)  # the file header and both database headers (checkpoints)
    except FileNotFoundError:
        return None
    wal = _file_state(path.with_name(path.name + ".wal"))
    digest = hashlib.sha256(f"{st.st_size}:{st.st_mtime_ns}:{wal}:".encode() + head)
    return digest.hexdigest()[:32]


def publish_run(warehouse: Path, run_file: Path, *, timeout: float = 30.0) -> bool:
    """Merge a run's file (and any other run file left unmerged) into the warehouse.

    Retries while another process holds the warehouse, up to ``timeout`` seconds; returns
    False if it could not (the run stays readable from its own file; a later merge takes it).
    """
    run_file = Path(run_file)
    deadline = time.monotonic() + timeout
    delay = 0.05
    while True:
        try:
            with Store(warehouse) as store:
                store.merge_run_files(run_store_files(warehouse) or [run_file])
                if not run_file.exists():
                    return True
                return store._merged_fingerprints().get(str(run_file.resolve())) == fingerprint(
                    run_file
                )
        except UserError as exc:
            if not is_busy(exc):
                raise
            if time.monotonic() + delay > deadline:
                log.warning("%s; the run stays in %s until the next merge", exc, run_file)
                return False
            time.sleep(delay)
            delay = min(delay * 2, 1.0)


def _file_state(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_size, st.st_mtime_ns


def _snapshot(path: Path) -> tuple[Path, Path | None]:
    """Copy a file and its WAL to a new folder; (folder, copy) or (folder, None) if torn."""
    wal = path.with_name(path.name + ".wal")
    folder = Path(tempfile.mkdtemp(prefix="devswarm-store-"))
    copy = folder / path.name
    before = (_file_state(path), _file_state(wal))
    try:
        shutil.copyfile(path, copy)
        if before[1] is not None:
            shutil.copyfile(wal, copy.with_name(copy.name + ".wal"))
    except FileNotFoundError:
        pass  # the WAL was checkpointed away mid-copy: the state check below says retry
    if (_file_state(path), _file_state(wal)) != before:
        return folder, None
    return folder, copy


def _attach(
    con: duckdb.DuckDBPyConnection,
    path: Path,
    alias: str,
    attempts: int,
    *,
    copy_first: bool = False,
) -> tuple[Path, Path | None]:
    """Attach a store read-only; if a writer holds it, attach a consistent copy instead.

    ``copy_first`` reads a copy even if the file is free, so this reader holds no lock a
    writer could wait for (for a running run's small file). Returns (the file attached, the
    snapshot folder to delete later or None).
    """
    if copy_first:
        for attempt in range(attempts):
            folder, copy = _snapshot(path)
            if copy is not None:
                try:
                    con.execute(f"ATTACH {_sql_text(copy)} AS {alias} (READ_ONLY)")
                    return copy, folder
                except duckdb.Error:
                    pass  # torn after all
            shutil.rmtree(folder, ignore_errors=True)
            time.sleep(0.01 * (attempt + 1))
    try:
        con.execute(f"ATTACH {_sql_text(path)} AS {alias} (READ_ONLY)")
        return path, None
    except duckdb.Error as exc:
        if not _is_lock_error(exc):
            raise UserError(f"cannot read the store {path}: {_one_line(exc)}") from exc
    for attempt in range(attempts):
        folder, copy = _snapshot(path)
        if copy is not None:
            try:
                con.execute(f"ATTACH {_sql_text(copy)} AS {alias} (READ_ONLY)")
                return copy, folder
            except duckdb.Error:
                pass  # a torn copy after all: try again
        shutil.rmtree(folder, ignore_errors=True)
        time.sleep(0.05 * (attempt + 1))
    raise _busy(path)


def open_readonly(path: Path, *, attempts: int = 5) -> Store:
    """Open the warehouse at ``path`` for reading, with the runs not yet merged into it.

    Works while runs are writing: a file held by a writer is read from a consistent copy
    (retrying if the writer changes it mid-copy). The result has every table and view, made of
    the warehouse's rows and, for each run file beside it that changed since its last merge,
    that file's rows of its runs instead. Raises UserError (one line) if nothing can be read.
    """
    path = Path(path)
    run_files = run_store_files(path)
    if not path.exists() and not run_files:
        raise UserError(f"no store at {path}; run a swarm first or pass --db")
    con = duckdb.connect()  # in memory: only views over the attached files live here
    cleanups: list[Path] = []
    shown = path
    try:
        merged: dict[str, str] = {}
        warehouse = None
        if path.exists():
            shown, folder = _attach(con, path, "warehouse", attempts)
            cleanups += [folder] if folder else []
            tables = _attached_columns(con, "warehouse")
            if not tables:  # being created this moment (a copy without its first commit)
                con.execute("DETACH warehouse")
            elif _attached_version(con, "warehouse", path) is None:
                raise UserError(f"{path} is not a devswarm store")
            else:
                warehouse = "warehouse"
            if warehouse and "merged_stores" in tables:
                merged = dict(
                    con.execute(
                        "SELECT source, fingerprint FROM warehouse.main.merged_stores"
                    ).fetchall()
                )
        live: list[str] = []
        for i, run_file in enumerate(run_files):
            if merged.get(str(run_file.resolve())) == fingerprint(run_file):
                continue  # its rows are in the warehouse as they are in the file
            alias = f"run_{i}"
            try:
                # A run's own file is read from a copy: a reader never makes a run wait.
                _, folder = _attach(con, run_file, alias, attempts, copy_first=True)
            except UserError as exc:
                if exc.__cause__ is None:  # busy: the caller may try again
                    raise
                log.warning("skipping %s", exc)  # a damaged file must not hide the others
                continue
            cleanups += [folder] if folder else []
            if not _attached_columns(con, alias):  # being created: nothing in it yet
                con.execute(f"DETACH {alias}")
                continue
            if _attached_version(con, alias, run_file) is None:
                log.warning("skipping %s: not a devswarm store", run_file)
                con.execute(f"DETACH {alias}")
                continue
            live.append(alias)
        _union_views(con, warehouse, live)
    except BaseException:
        con.close()
        for folder in cleanups:
            shutil.rmtree(folder, ignore_errors=True)
        raise
    return Store._over(con, shown, cleanups)


def _union_views(con: duckdb.DuckDBPyConnection, warehouse: str | None, live: list[str]) -> None:
    """Each table as a view: the warehouse's rows of runs not in a live file, plus the live
    files' rows; then this release's views on top."""
    columns: dict[str, dict[str, set[str]]] = {
        alias: _attached_columns(con, alias)
        for alias in [*([warehouse] if warehouse else []), *live]
    }

    def select(alias: str, table: Table) -> str | None:
        have = columns[alias].get(table.name)
        if have is None:
            return None
        items = [
            c if c in have else f"CAST(NULL AS {_SQL_TYPES[kind]}) AS {c}"
            for c, kind in _columns(table).items()
        ]
        return f"SELECT {', '.join(items)} FROM {alias}.main.{table.name}"

    for table in TABLES.values():
        live_parts = [(a, q) for a in live if (q := select(a, table))]
        parts = [q for _, q in live_parts]
        if warehouse and (q := select(warehouse, table)):
            if live_parts:
                # A live file holds all of its run's rows so far: they replace the warehouse's.
                newer = " UNION ALL ".join(
                    f"SELECT run_id FROM {a}.main.{table.name} WHERE run_id IS NOT NULL"
                    for a, _ in live_parts
                )
                q += f" WHERE run_id IS NULL OR run_id NOT IN ({newer})"
            parts.insert(0, q)
        sql = " UNION ALL ".join(parts) if parts else _empty_select(table)
        con.execute(f"CREATE VIEW {table.name} AS {sql}")
    source = warehouse or (live[0] if live else None)
    if source:
        con.execute(f"CREATE VIEW schema_version AS SELECT * FROM {source}.main.schema_version")
    for name, sql in _VIEWS.items():
        con.execute(f"CREATE VIEW {name} AS {sql}")
