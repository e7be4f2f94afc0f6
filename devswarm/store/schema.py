"""What the store holds: one table per record kind, its primary key and its typed columns.

Agents write records of these kinds (devswarm.records); the store keeps them in DuckDB tables of
the same names. Column names follow the OpenTelemetry GenAI conventions flattened to snake_case.
TABLES describes the latest shape; the migrations (devswarm.store.migrations) build it, and a
test checks that the two agree.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Table:
    """One record kind: its DuckDB table, primary key and typed columns."""

    name: str
    key: tuple[str, ...]
    columns: dict[str, str]  # column name -> type tag (a key of SQL_TYPES), in table order


# Type tags -> DuckDB types. json is JSON text (non-strings are serialised); timestamps are UTC.
SQL_TYPES = {
    "text": "VARCHAR",
    "json": "VARCHAR",
    "int": "INTEGER",
    "bigint": "BIGINT",
    "double": "DOUBLE",
    "bool": "BOOLEAN",
    "timestamp": "TIMESTAMP",
}


def _cols(spec: str) -> dict[str, str]:
    """Parse 'name:type name:type ...' (a bare name is text)."""
    out: dict[str, str] = {}
    for item in spec.split():
        name, _, kind = item.partition(":")
        out[name] = kind or "text"
    return out


_SPAN = " span_id parent_span_id"
# Columns added by a migration come after recorded_at (ALTER TABLE appends), so a table that
# has them names recorded_at before them.
_LATER_COLUMNS = " recorded_at:timestamp"

TABLES: dict[str, Table] = {
    t.name: t
    for t in (
        Table(
            "runs",
            ("run_id",),
            _cols(
                "run_id goal repo_path branch base_commit tip_commit status"
                " started_at:timestamp ended_at:timestamp cycles:int flow_run_id config:json"
                + _LATER_COLUMNS
                + " sandbox:bool"
            ),
        ),
        Table(
            "cycles",
            ("run_id", "cycle"),
            _cols(
                "run_id cycle:int started_at:timestamp ended_at:timestamp tip_before tip_after"
                " decision reasons:json score:double label check_passed:bool" + _SPAN
            ),
        ),
        Table(
            "agents",
            ("agent_id",),
            _cols(
                "agent_id run_id cycle:int role plan_path task_key parent_agent_id request_model"
                " status steps:int started_at:timestamp ended_at:timestamp handoff flow_run_id"
                + _SPAN
            ),
        ),
        Table(
            "tasks",
            ("run_id", "task_key"),
            _cols(
                "run_id task_key cycle:int planner_agent_id worker_agent_id title description"
                " acceptance files:json check_command depends_on:json status reason attempts:int"
                " base_commit commit_sha started_at:timestamp ended_at:timestamp"
            ),
        ),
        Table(
            "model_calls",
            ("call_id",),
            _cols(
                "call_id run_id agent_id step:int attempt:int operation_name provider_name"
                " request_model response_model response_id input_tokens:bigint"
                " output_tokens:bigint cache_read_input_tokens:bigint cost_usd:double"
                " finish_reasons:json error_type http_status:int started_at:timestamp"
                " ended_at:timestamp duration_ms:double cache_key"
                + _SPAN
                + _LATER_COLUMNS
                + " usage_estimated:bool"
            ),
        ),
        Table(
            "tool_calls",
            ("agent_id", "step", "tool_call_id"),
            _cols(
                "run_id agent_id step:int tool_call_id tool_name arguments output_excerpt"
                " error_type duration_ms:double started_at:timestamp" + _SPAN
            ),
        ),
        Table(
            "landings",
            ("landing_id",),
            _cols(
                "landing_id run_id cycle:int task_key agent_id branch commit_sha old_tip new_tip"
                " status cas_retries:int conflict_files:json resolved:bool started_at:timestamp"
                " ended_at:timestamp duration_ms:double"
                + _SPAN
                + _LATER_COLUMNS
                + " published:bool publish_error verified"  # verified: green | red | culprit | reverted
            ),
        ),
        # The verifier's checks of the tip: one row per verified tip (devswarm.verify).
        Table(
            "verifications",
            ("verification_id",),
            _cols(
                "verification_id run_id commit_sha verdict started_at:timestamp"
                " ended_at:timestamp duration_ms:double batch_size:int bisect_steps:int"
                " culprit_sha culprit_task_key culprit_landing_id confirmed:bool flake:bool"
                " action action_commit output_excerpt"
            ),
        ),
        # Prefect's view of a run, copied from its API by `devswarm history import`. Keyed by
        # Prefect's ids; run_id, agent_id and task_key are ours, so both sides join.
        Table(
            "prefect_flow_runs",
            ("flow_run_id",),
            _cols(
                "flow_run_id run_id name flow_name role agent_id task_key cycle:int"
                " parent_flow_run_id parent_task_run_id state_type state_name run_count:int"
                " started_at:timestamp ended_at:timestamp total_run_time_s:double"
                " created_at:timestamp deployment_id work_pool_name tags:json" + _SPAN
            ),
        ),
        Table(
            "prefect_task_runs",
            ("task_run_id",),
            _cols(
                "task_run_id flow_run_id run_id name task_name agent_id step:int subflow_run_id"
                " state_type state_name run_count:int max_retries:int retries:int cache_hit:bool"
                " cache_key cache_expiration:timestamp started_at:timestamp ended_at:timestamp"
                " total_run_time_s:double created_at:timestamp tags:json" + _SPAN
            ),
        ),
    )
}

# Every table also has this column: when the line was written (newest wins on import).
RECORDED_AT = "recorded_at"

# Names an older devswarm used ("one name per concept", migration 3). Records and files written
# by it are read under the new names: a record kind or table, and a column of a table.
RENAMED_TABLES = {"model_calls": "llm_calls"}
RENAMED_COLUMNS = {
    (table, "task_key"): "task_id" for table in ("agents", "tasks", "landings", "prefect_flow_runs")
}

# Singular spellings are accepted too ("model_call" -> "model_calls"); the table name is
# canonical. Old names of renamed tables stay known.
_ALIASES = {name.removesuffix("s"): name for name in TABLES} | {name: name for name in TABLES}
_ALIASES |= {o.removesuffix("s"): n for n, o in RENAMED_TABLES.items()}
_ALIASES |= {o: n for n, o in RENAMED_TABLES.items()}

# Bytes kept of long text columns, so one chatty tool cannot bloat every record file.
TEXT_LIMITS: dict[tuple[str, str], int] = {
    ("tool_calls", "arguments"): 4096,
    ("tool_calls", "output_excerpt"): 2048,
    ("verifications", "output_excerpt"): 4096,
}


def table_for(kind: str) -> Table | None:
    """The table a record kind goes to (plural table name or singular), or None if unknown."""
    name = _ALIASES.get(kind)
    return TABLES[name] if name else None


def renamed_fields(table: Table) -> dict[str, str]:
    """Old field name -> new, for records of this table written by an older devswarm."""
    return {old: new for (t, new), old in RENAMED_COLUMNS.items() if t == table.name}


def source_table(table: Table, present: dict[str, set[str]]) -> str | None:
    """The name under which a file (its tables: `present`) holds `table`: its own, or the
    older name; None if it has neither."""
    for name in (table.name, RENAMED_TABLES.get(table.name)):
        if name and name in present:
            return name
    return None


def source_select(table: Table, have: set[str], source: str) -> str:
    """SELECT every column of `table` from `source`, a file's table whose columns are `have`:
    each by its name, or its older name, or NULL if the file predates it."""
    items = []
    for c, kind in columns(table).items():
        old = RENAMED_COLUMNS.get((table.name, c))
        if c in have:
            items.append(c)
        elif old and old in have:
            items.append(f"{old} AS {c}")
        else:
            items.append(f"CAST(NULL AS {SQL_TYPES[kind]}) AS {c}")
    return f"SELECT {', '.join(items)} FROM {source}"


def columns(table: Table) -> dict[str, str]:
    """All columns of a table (name -> type tag), the record-time column included."""
    return {**table.columns, RECORDED_AT: "timestamp"}


def empty_select(table: Table) -> str:
    """A query with the table's columns and no rows (a stand-in for a table a file lacks)."""
    cols = ", ".join(f"CAST(NULL AS {SQL_TYPES[k]}) AS {c}" for c, k in columns(table).items())
    return f"SELECT {cols} WHERE false"
