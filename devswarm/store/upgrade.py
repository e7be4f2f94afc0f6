"""Bringing a store file to this release's shape, or reading an older one as it is.

Every store is built by replaying the migrations (devswarm.store.migrations) from version 1, a new
one included, rather than created from TABLES at the latest shape. One path for every file means
a new store and a migrated one cannot differ (not even in column order: ALTER TABLE appends a
column where a fresh CREATE would not), every test that opens a store runs every migration, and a
migration is written once instead of twice (as a step and again in the latest-shape DDL).
Replaying costs a few statements on empty tables. TABLES still describes the latest shape for
the code that coerces and unions rows; a test checks it against the replayed shape.

``schema_version`` holds one row per applied migration: its version, when, and its name. The
name tells two builds apart that both made a version N: such a store is refused, not misread.
"""

from __future__ import annotations

from pathlib import Path

import duckdb

from devswarm.errors import UserError
from devswarm.records import now
from devswarm.store import migrations
from devswarm.store.migrations import Migration
from devswarm.store.schema import TABLES, columns, empty_select, source_select, source_table
from devswarm.store.views import create_views

_VERSION_TABLE = (
    "CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at TIMESTAMP, name VARCHAR)"
)


def upgrade(con: duckdb.DuckDBPyConnection, path: Path, *, to: int | None = None) -> None:
    """Bring the store on ``con`` (open for writing) to version ``to`` (default: the latest) in
    one transaction: the pending migrations in order, each stamped with its name, then this
    release's views (views hold no data: recreated on every open, so a new release's apply).

    Raises UserError if the file was written by a newer or a different devswarm.
    """
    latest = migrations.MIGRATIONS[-1]
    target = latest.version if to is None else to
    con.execute("BEGIN")
    try:
        db = _database(con)
        have = _version_columns(con, db)
        if not have:
            con.execute(_VERSION_TABLE)
        elif "name" not in have:  # written before migrations had names
            con.execute("ALTER TABLE schema_version ADD COLUMN name VARCHAR")
            for m in migrations.MIGRATIONS:
                con.execute(
                    "UPDATE schema_version SET name = ? WHERE version = ?", [m.name, m.version]
                )
        current = check_applied(read_applied(con, db) or [], path) or 0
        for m in migrations.MIGRATIONS:
            if current < m.version <= target:
                _apply(con, m)
        if target == latest.version:
            create_views(con)
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise


def _apply(con: duckdb.DuckDBPyConnection, migration: Migration) -> None:
    for statement in migration.statements:
        con.execute(statement)
    con.execute(
        "INSERT INTO schema_version (version, applied_at, name) VALUES (?, CAST(? AS TIMESTAMP), ?)",
        [migration.version, now().rstrip("Z"), migration.name],
    )


def adapt_readonly(con: duckdb.DuckDBPyConnection, path: Path) -> None:
    """Make a store opened read-only readable by this release without changing it.

    The file may be older than this devswarm: this release's views (and empty stand-ins for
    tables it lacks) go in the connection's temporary catalog, which DuckDB searches before the
    file's own.
    """
    applied = read_applied(con, _database(con))
    if applied is None:
        raise UserError(f"{path} is not a devswarm store")
    check_applied(applied, path)
    db = _database(con)
    present = attached_columns(con, db)
    for table in TABLES.values():
        name = source_table(table, present)
        if name is None:
            con.execute(f"CREATE TEMP VIEW {table.name} AS {empty_select(table)}")
        elif name != table.name or present[name] != set(columns(table)):
            # An older shape (a table or a column under its old name, or a column it lacks):
            # this release's shape over the file's table.
            source = source_select(table, present[name], f'"{db}".main.{name}')
            con.execute(f"CREATE TEMP VIEW {table.name} AS {source}")
    create_views(con, temp=True)


def read_applied(con: duckdb.DuckDBPyConnection, db: str) -> list[tuple[int, str | None]] | None:
    """The migrations database ``db`` (a file attached to ``con``, or its own) has had:
    (version, name) in order, the name None in rows from before names; None if it has no
    ``schema_version`` (not a devswarm store)."""
    have = _version_columns(con, db)
    if not have:
        return None
    name = "name" if "name" in have else "NULL"
    return con.execute(
        f'SELECT version, {name} FROM "{db}".main.schema_version ORDER BY version'
    ).fetchall()


def check_applied(applied: list[tuple[int, str | None]], path: Path) -> int | None:
    """The version of a store that has had the migrations ``applied`` (None if none).

    Raises UserError if a newer devswarm wrote it, or one whose migration of the same version
    differs (another build that added its own).
    """
    latest = migrations.MIGRATIONS[-1].version
    version = max((v for v, _ in applied), default=None)
    if version is not None and version > latest:
        raise UserError(
            f"the store {path} has schema version {version}; this devswarm knows up to"
            f" {latest} (upgrade devswarm)"
        )
    known = {m.version: m.name for m in migrations.MIGRATIONS}
    for v, name in applied:
        if name is not None and known.get(v) != name:
            raise UserError(
                f"the store {path} has migration {v} {name!r} where this devswarm has"
                f" {known.get(v)!r}: it was written by another build of devswarm"
            )
    return version


def _database(con: duckdb.DuckDBPyConnection) -> str:
    return con.execute("SELECT current_database()").fetchall()[0][0]


def _version_columns(con: duckdb.DuckDBPyConnection, db: str) -> set[str]:
    return {
        c
        for (c,) in con.execute(
            "SELECT column_name FROM duckdb_columns() WHERE database_name = ?"
            " AND schema_name = 'main' AND table_name = 'schema_version'",
            [db],
        ).fetchall()
    }


def attached_columns(con: duckdb.DuckDBPyConnection, alias: str) -> dict[str, set[str]]:
    """The tables of an attached file and their columns."""
    out: dict[str, set[str]] = {}
    for table, column in con.execute(
        "SELECT table_name, column_name FROM duckdb_columns()"
        " WHERE database_name = ? AND schema_name = 'main'",
        [alias],
    ).fetchall():
        out.setdefault(table, set()).add(column)
    return out
