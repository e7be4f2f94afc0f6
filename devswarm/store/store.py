"""The run store: DuckDB tables of runs, cycles, agents, tasks, model calls, tool calls, landings.

DuckDB allows one writing process, so the orchestrating process owns the file and imports the
agents' JSONL record files (devswarm.records) into it: an idempotent upsert on each table's
primary key (devswarm.store.upsert says how rows merge). Other store files (a finished run's)
merge in by the same rule. Reading the warehouse together with runs still writing is
devswarm.store.warehouse's job.
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb

from devswarm.errors import UserError
from devswarm.history import LINK_STATEMENTS
from devswarm.records import RECORDED_AT, now, read_records
from devswarm.store import upgrade
from devswarm.store.attach import attached_version, fingerprint, sql_literal
from devswarm.store.coerce import Coercion
from devswarm.store.failures import busy_error, is_busy, is_lock_error, one_line
from devswarm.store.schema import (
    RENAMED_COLUMNS,
    TABLES,
    columns,
    source_select,
    source_table,
    table_for,
)
from devswarm.store.upgrade import attached_columns
from devswarm.store.upsert import merge_by_key, upsert_sql, write_rows
from devswarm.store.views import VIEWS

log = logging.getLogger(__name__)


class Store:
    """A DuckDB run store. Not for sharing across processes; safe to share across threads."""

    def __init__(self, path: Path, *, read_only: bool = False) -> None:
        """Open (creating and migrating if writable) the store at ``path``.

        Raises UserError if the file is missing (read-only), held by another process, not a
        devswarm store, or written by a newer or a different build of devswarm.
        """
        self.path = Path(path)
        self.read_only = read_only
        self._cleanups: list[Path] = []  # snapshot folders to delete on close (from_connection)
        self._lock = threading.RLock()
        if read_only and not self.path.exists():
            raise UserError(f"no store at {self.path}")
        if not read_only:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._con = duckdb.connect(str(self.path), read_only=read_only)
        except duckdb.Error as exc:
            if is_lock_error(exc):
                raise busy_error(self.path) from exc
            raise UserError(f"cannot open the store {self.path}: {one_line(exc)}") from exc
        try:
            if read_only:
                upgrade.adapt_readonly(self._con, self.path)
            else:
                upgrade.upgrade(self._con, self.path)
        except duckdb.Error as exc:  # e.g. a damaged file
            self._con.close()
            raise UserError(f"cannot open the store {self.path}: {one_line(exc)}") from exc
        except BaseException:
            self._con.close()
            raise

    @classmethod
    def from_connection(
        cls, con: duckdb.DuckDBPyConnection, path: Path, cleanups: list[Path]
    ) -> Store:
        """A read-only Store over a connection already set up for reading (an in-memory catalog
        of views: see devswarm.store.warehouse.open_readonly); closing it deletes ``cleanups``."""
        store = cls.__new__(cls)
        store.path, store.read_only = Path(path), True
        store._cleanups, store._lock, store._con = cleanups, threading.RLock(), con
        return store

    @contextmanager
    def _transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        with self._lock:
            self._con.execute("BEGIN")
            try:
                yield self._con
                self._con.execute("COMMIT")
            except BaseException:
                self._con.execute("ROLLBACK")
                raise

    def _check_writable(self) -> None:
        if self.read_only:
            raise UserError(f"the store {self.path} is open read-only")

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
        fields.setdefault(RECORDED_AT, now())
        self._upsert_records([{"kind": kind, **fields}], source="add()")

    def add_many(self, records: Iterable[dict], *, source: str = "add_many()") -> int:
        """Upsert records (dicts with ``kind`` and columns) in one transaction; returns the count."""
        return self._upsert_records(records, source=source)

    def _upsert_records(self, records: Iterable[dict], *, source: str) -> int:
        self._check_writable()
        coercion = Coercion()
        merged = merge_by_key(records, coercion, source=source)
        total = 0
        with self._transaction() as con:
            for name, rows in merged.items():
                total += write_rows(con, TABLES[name], rows.values(), coercion)
        if coercion.bad:
            log.warning("%s: %d values of the wrong type were stored as NULL", source, coercion.bad)
        return total

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
        with self._lock:
            try:
                self._con.execute(f"ATTACH {sql_literal(path)} AS other (READ_ONLY)")
            except duckdb.Error as exc:
                if is_lock_error(exc):
                    raise busy_error(path) from exc
                raise UserError(f"cannot read the store {path}: {one_line(exc)}") from exc
            try:
                if attached_version(self._con, "other", path) is None:
                    raise UserError(f"{path} is not a devswarm store")
                present = attached_columns(self._con, "other")
                with self._transaction() as con:
                    total = _merge_attached(con, "other", present)
                    if record:
                        _record_merge(con, "other", "runs" in present, path, mark, total)
            finally:
                self._con.execute("DETACH other")
        return total

    def merge_run_files(self, paths: Iterable[Path]) -> list[Path]:
        """Merge the run files that changed since their last merge; returns those merged.

        A file another process is writing at this moment is skipped (it stays readable as a
        live run file; the next merge takes it).
        """
        merged = self.merged_fingerprints()
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

    def merged_fingerprints(self) -> dict[str, str]:
        """Each merged run file (resolved path) -> its fingerprint when it was merged."""
        with self._lock:
            return dict(
                self._con.execute("SELECT source, fingerprint FROM merged_stores").fetchall()
            )

    def link_history(self, run_id: str) -> None:
        """Join imported Prefect runs of a run to our agents where Prefect's side lacks it.

        Precedence: an agent row that recorded its flow run id (exact); then, for a work flow
        run, the worker of the task its name gives ("work: <task key>", or an older devswarm's "work · <task id>") that started while it
        ran. A task run without an agent gets its subflow's (a stand-in for a subflow run) or
        else its flow run's (a landing).
        """
        self._check_writable()
        with self._transaction() as con:
            for sql in LINK_STATEMENTS:
                con.execute(sql, {"run": run_id})

    # --- reading

    def query(self, sql: str, params: Any = None) -> tuple[list[str], list[tuple]]:
        """Run SQL; returns (column names, rows). A SQL error becomes a one-line UserError."""
        with self._lock:
            try:
                cursor = self._con.execute(sql, params)
                names = [d[0] for d in cursor.description] if cursor.description else []
                return names, cursor.fetchall()
            except duckdb.Error as exc:
                raise UserError(one_line(exc)) from exc

    def export_parquet(self, folder: Path) -> dict[str, int]:
        """Write every table and view to ``folder/<name>.parquet``; returns rows per file."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        counts: dict[str, int] = {}
        with self._lock:
            for name in [*TABLES, *VIEWS]:
                target = folder / f"{name}.parquet"
                try:
                    self._con.execute(
                        f"COPY (SELECT * FROM {name}) TO {sql_literal(target)} (FORMAT parquet)"
                    )
                    counts[name] = self._con.execute(
                        f"SELECT count(*) FROM read_parquet({sql_literal(target)})"
                    ).fetchall()[0][0]
                except duckdb.Error as exc:
                    raise UserError(f"cannot write {target}: {one_line(exc)}") from exc
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


@contextmanager
def open_writer(path: Path, *, timeout: float = 30.0) -> Iterator[Store]:
    """The store at ``path`` open for writing (closed on exit), waiting up to ``timeout``
    seconds while another process holds the file: DuckDB allows one writing process, and
    readers and other runs hold a store for moments at a time.

    Raises the "being written by another process" UserError if the file stays held.
    """
    deadline, delay = time.monotonic() + timeout, 0.05
    while True:
        try:
            store = Store(path)
            break
        except UserError as exc:
            if not is_busy(exc) or time.monotonic() + delay > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 1.0)
    with store:
        yield store


def _merge_attached(
    con: duckdb.DuckDBPyConnection, alias: str, present: dict[str, set[str]]
) -> int:
    """Upsert every table an attached store has (``present``: its tables' columns) into this
    one's; returns the rows read."""
    total = 0
    for table in TABLES.values():
        name = source_table(table, present)
        if name is None or not present[name]:
            continue
        have = present[name]
        renamed = {c for c in columns(table) if RENAMED_COLUMNS.get((table.name, c)) in have}
        cols = [c for c in columns(table) if c in have or c in renamed]
        source = f"({source_select(table, have, f'{alias}.main.{name}')})"
        total += con.execute(f"SELECT count(*) FROM {alias}.main.{name}").fetchall()[0][0]
        con.execute(upsert_sql(table, cols, source))
    return total


def _record_merge(
    con: duckdb.DuckDBPyConnection,
    alias: str,
    has_runs: bool,
    path: Path,
    mark: str | None,
    total: int,
) -> None:
    """Note in ``merged_stores`` that the attached file ``path`` was merged in state ``mark``."""
    sql = f"SELECT DISTINCT run_id FROM {alias}.main.runs ORDER BY 1"
    run_ids = [r for (r,) in con.execute(sql).fetchall()] if has_runs else []
    con.execute(
        "INSERT OR REPLACE INTO merged_stores VALUES (?, ?, ?, ?, CAST(? AS TIMESTAMP))",
        [str(path.resolve()), mark, json.dumps(run_ids), total, now().rstrip("Z")],
    )
