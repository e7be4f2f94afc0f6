"""The store's migrations: one ordered list, replayed for every store, each step keeping rows."""

from __future__ import annotations

from datetime import datetime
from importlib.resources import files
from pathlib import Path

import duckdb
import pytest

from devswarm.errors import UserError
from devswarm.store import migrations
from devswarm.store.migrations import MIGRATIONS, SCHEMA_VERSION, Migration
from devswarm.store.schema import RENAMED_COLUMNS, RENAMED_TABLES, SQL_TYPES, TABLES, columns
from devswarm.store.store import Store
from devswarm.store.upgrade import upgrade
from devswarm.store.views import BUILDING_BLOCKS, VIEWS
from devswarm.store.warehouse import open_readonly

# A value of each DuckDB type, to fill every column of a row.
SAMPLE = {
    "VARCHAR": "x",
    "INTEGER": 7,
    "BIGINT": 2**40,
    "DOUBLE": 1.5,
    "BOOLEAN": True,
    "TIMESTAMP": datetime(2026, 1, 1, 10, 0, 0),
}


def build(path: Path, version: int) -> Path:
    """A store file at ``version``, made by the migrations up to it (frozen text)."""
    con = duckdb.connect(str(path))
    try:
        upgrade(con, path, to=version)
    finally:
        con.close()
    return path


def shape(path: Path) -> dict[str, list[tuple[str, str]]]:
    """Base tables -> (column, type) in order, plus their primary keys."""
    con = duckdb.connect(str(path), read_only=True)
    try:
        out: dict[str, list[tuple[str, str]]] = {}
        for table, column, kind in con.execute(
            "SELECT table_name, column_name, data_type FROM duckdb_columns()"
            " WHERE database_name = current_database() AND NOT internal"
            " AND table_name IN (SELECT table_name FROM duckdb_tables())"
            " ORDER BY table_name, column_index"
        ).fetchall():
            out.setdefault(table, []).append((column, kind))
        for table, key in con.execute(
            "SELECT table_name, constraint_column_names FROM duckdb_constraints()"
            " WHERE constraint_type = 'PRIMARY KEY'"
        ).fetchall():
            out.setdefault(table, []).append(("PRIMARY KEY", ", ".join(key)))
        return out
    finally:
        con.close()


def test_versions_are_consecutive_and_names_unique() -> None:
    assert [m.version for m in MIGRATIONS] == list(range(1, len(MIGRATIONS) + 1))
    names = [m.name for m in MIGRATIONS]
    assert all(names) and len(set(names)) == len(names)
    assert all(m.statements for m in MIGRATIONS)
    assert MIGRATIONS[-1].version == SCHEMA_VERSION


def test_tables_describe_the_shape_the_migrations_make(tmp_path: Path) -> None:
    Store(tmp_path / "new.duckdb").close()
    made = shape(tmp_path / "new.duckdb")
    for table in TABLES.values():
        expected = [(c, SQL_TYPES[kind]) for c, kind in columns(table).items()]
        assert made.pop(table.name) == [*expected, ("PRIMARY KEY", ", ".join(table.key))]
    assert sorted(made) == ["merged_stores", "schema_version"]  # bookkeeping, not record kinds


@pytest.mark.parametrize("migration", MIGRATIONS[1:], ids=lambda m: f"{m.version}-{m.name}")
def test_each_migration_keeps_the_rows_of_the_version_before(
    tmp_path: Path, migration: Migration
) -> None:
    db = build(tmp_path / "old.duckdb", migration.version - 1)
    before = shape(db)
    con = duckdb.connect(str(db))
    rows = {}
    for table, cols in before.items():
        if table == "schema_version":
            continue
        row = {c: SAMPLE[kind] for c, kind in cols if c != "PRIMARY KEY"}
        con.execute(f"INSERT INTO {table} VALUES ({', '.join('?' * len(row))})", list(row.values()))
        rows[table] = row
    upgrade(con, db, to=migration.version)
    now_named = {t for (t,) in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
    for table, row in rows.items():
        name = table if table in now_named else {o: n for n, o in RENAMED_TABLES.items()}[table]
        cursor = con.execute(f"SELECT * FROM {name}")
        (after,) = cursor.fetchall()
        after = dict(zip([d[0] for d in cursor.description], after, strict=True))
        renamed = {o: n for (t, n), o in RENAMED_COLUMNS.items() if t == name and n in after}
        expected = {renamed.get(c, c): v for c, v in row.items()}
        assert {c: after[c] for c in expected if c in after} == {
            c: v for c, v in expected.items() if c in after
        }
        # A column that is gone was dropped for good: the latest shape lacks it too.
        gone = set(expected) - set(after)
        latest = TABLES.get({o: n for n, o in RENAMED_TABLES.items()}.get(name, name))
        assert not (latest and gone & set(columns(latest))), (name, gone)
    con.close()
    assert shape(db) == shape(build(tmp_path / "new.duckdb", migration.version))
    with Store(db) as store:  # and on to the latest version
        versions = store.query("SELECT version, name FROM schema_version ORDER BY version")[1]
        assert versions == [(m.version, m.name) for m in MIGRATIONS]


def test_a_store_another_build_migrated_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "runs.duckdb"
    with Store(db) as store:
        store.add("runs", run_id="r1")
    con = duckdb.connect(str(db))
    con.execute("UPDATE schema_version SET name = 'landings.verified' WHERE version = 2")
    con.close()
    for opening in (
        lambda: Store(db),
        lambda: Store(db, read_only=True),
        lambda: open_readonly(db),
    ):
        with pytest.raises(UserError, match="migration 2 'landings.verified' where this devswarm"):
            opening()
    with Store(tmp_path / "warehouse.duckdb") as warehouse, pytest.raises(UserError, match="build"):
        warehouse.import_store(db)


def test_a_failing_migration_leaves_the_store_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "runs.duckdb"
    with Store(db) as store:
        store.add("runs", run_id="r1", status="done")
    bad = Migration(
        SCHEMA_VERSION + 1,
        "half done",
        ("ALTER TABLE runs ADD COLUMN note VARCHAR", "ALTER TABLE nowhere ADD COLUMN x INTEGER"),
    )
    monkeypatch.setattr(migrations, "MIGRATIONS", (*MIGRATIONS, bad))
    with pytest.raises(UserError, match="cannot open the store"):
        Store(db)
    monkeypatch.undo()
    with Store(db) as store:
        assert store.query("SELECT * FROM runs")[0] == list(columns(TABLES["runs"]))
        assert store.query("SELECT run_id, status FROM runs")[1] == [("r1", "done")]
        assert store.query("SELECT max(version) FROM schema_version")[1] == [(SCHEMA_VERSION,)]


def test_a_store_from_before_migration_names_gets_them(tmp_path: Path) -> None:
    db = tmp_path / "runs.duckdb"
    Store(db).close()
    con = duckdb.connect(str(db))
    con.execute("ALTER TABLE schema_version DROP COLUMN name")
    con.close()
    with Store(db, read_only=True) as reader:  # read as it is
        assert reader.query("SELECT count(*) FROM role_metrics")[1] == [(0,)]
    with Store(db) as store:
        rows = store.query("SELECT version, name FROM schema_version ORDER BY version")[1]
        assert rows == [(m.version, m.name) for m in MIGRATIONS]


def test_every_view_is_a_sql_file_of_its_name() -> None:
    folder = files("devswarm.store.views")
    shipped = {p.name.removesuffix(".sql") for p in folder.iterdir() if p.name.endswith(".sql")}
    assert shipped == {*BUILDING_BLOCKS, *VIEWS}


def _old_run_file(path: Path) -> Path:
    """A run's own file written by a devswarm of schema version 2 (old names)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    build(path, 2)
    con = duckdb.connect(str(path))
    con.execute("INSERT INTO runs (run_id, run_name, status) VALUES ('old', 'old', 'done')")
    con.execute("INSERT INTO tasks (run_id, task_id, status) VALUES ('old', 'c1.root.a', 'landed')")
    con.execute(
        "INSERT INTO llm_calls (call_id, run_id, agent_id, input_tokens) VALUES ('c1', 'old', 'w', 5)"
    )
    con.close()
    return path


def test_an_older_run_file_merges_and_reads_under_the_new_names(tmp_path: Path) -> None:
    run_file = _old_run_file(tmp_path / "runs" / "old" / "run.duckdb")
    warehouse = tmp_path / "devswarm.duckdb"
    # Read while unmerged (a live run file beside the warehouse), then merged into it.
    with open_readonly(warehouse) as reader:
        assert reader.query("SELECT task_key, status FROM tasks")[1] == [("c1.root.a", "landed")]
        assert reader.query("SELECT sum(input_tokens) FROM model_calls")[1] == [(5,)]
    with Store(warehouse) as store:
        store.import_store(run_file)
        assert store.query("SELECT task_key FROM tasks")[1] == [("c1.root.a",)]
        assert store.query("SELECT agent_id, input_tokens FROM model_calls")[1] == [("w", 5)]


def test_records_an_older_devswarm_wrote_import_under_the_new_names(tmp_path: Path) -> None:
    with Store(tmp_path / "s.duckdb") as store:
        store.add_many(
            [
                {"kind": "llm_call", "call_id": "c1", "run_id": "r", "input_tokens": 3},
                {"kind": "tasks", "run_id": "r", "task_id": "c1.root.a", "status": "landed"},
                {"kind": "landing", "landing_id": "l1", "task_id": "c1.root.a"},
            ]
        )
        assert store.query("SELECT call_id, input_tokens FROM model_calls")[1] == [("c1", 3)]
        assert store.query("SELECT task_key, status FROM tasks")[1] == [("c1.root.a", "landed")]
        assert store.query("SELECT task_key FROM landings")[1] == [("c1.root.a",)]
