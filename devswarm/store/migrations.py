"""The shape of a store file across devswarm releases: create, migrate, or read an old one.

A writable open brings the file to SCHEMA_VERSION in one transaction; a read-only open leaves the
file as it is and lays this release's views (and empty stand-ins for tables it lacks) over it.
"""

from __future__ import annotations

from pathlib import Path

import duckdb

from devswarm.errors import UserError
from devswarm.records import now
from devswarm.store.schema import SQL_TYPES, TABLES, Table, columns, empty_select
from devswarm.store.views import create_views

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


def _create_table_sql(table: Table) -> str:
    cols = [f"{name} {SQL_TYPES[kind]}" for name, kind in columns(table).items()]
    cols.append(f"PRIMARY KEY ({', '.join(table.key)})")
    return f"CREATE TABLE IF NOT EXISTS {table.name} ({', '.join(cols)})"


def check_version(version: int, path: Path) -> None:
    """Raise UserError if a store at ``version`` was written by a newer devswarm."""
    if version > SCHEMA_VERSION:
        raise UserError(
            f"the store {path} has schema version {version}; this devswarm knows up to"
            f" {SCHEMA_VERSION} (upgrade devswarm)"
        )


def _has_version_table(con: duckdb.DuckDBPyConnection) -> bool:
    return bool(
        con.execute(
            "SELECT count(*) FROM information_schema.tables"
            " WHERE table_schema = 'main' AND table_name = 'schema_version'"
        ).fetchall()[0][0]
    )


def _version(con: duckdb.DuckDBPyConnection) -> int:
    return con.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchall()[0][0]


def _stamp(con: duckdb.DuckDBPyConnection, version: int) -> None:
    con.execute(
        "INSERT INTO schema_version VALUES (?, CAST(? AS TIMESTAMP))", [version, now().rstrip("Z")]
    )


def migrate(con: duckdb.DuckDBPyConnection, path: Path) -> None:
    """Create or migrate the store on ``con`` (writable) to SCHEMA_VERSION, in one transaction,
    and create this release's views."""
    has_version = _has_version_table(con)
    con.execute("BEGIN")
    try:
        if not has_version:
            # A new store is created at the latest shape; migrations are for old files.
            con.execute(
                "CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at TIMESTAMP)"
            )
            for table in TABLES.values():
                con.execute(_create_table_sql(table))
            con.execute(_MERGED_STORES_DDL)
            _stamp(con, SCHEMA_VERSION)
        else:
            current = _version(con)
            check_version(current, path)
            for version in range(current + 1, SCHEMA_VERSION + 1):
                for statement in MIGRATIONS.get(version, ()):
                    con.execute(statement)
                _stamp(con, version)
        # Views hold no data: recreate them on every open so a new release's views apply.
        create_views(con)
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise


def adapt_readonly(con: duckdb.DuckDBPyConnection, path: Path) -> None:
    """Make a store opened read-only readable by this release without changing it.

    The file may be older than this devswarm: this release's views (and empty stand-ins for
    tables it lacks) go in the connection's temporary catalog, which DuckDB searches before the
    file's own.
    """
    if not _has_version_table(con):
        raise UserError(f"{path} is not a devswarm store")
    check_version(_version(con), path)
    present = {
        name
        for (name,) in con.execute(
            "SELECT table_name FROM information_schema.tables"
            " WHERE table_schema = 'main' AND table_catalog = current_database()"
        ).fetchall()
    }
    for table in TABLES.values():
        if table.name not in present:
            con.execute(f"CREATE TEMP VIEW {table.name} AS {empty_select(table)}")
    create_views(con, temp=True)
