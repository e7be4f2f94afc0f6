"""The warehouse and the runs' own files.

DuckDB allows one writing process per file. A run writes only its own file,
runs/<run id>/run.duckdb beside the warehouse, opening it briefly per import; when the run
ends, its file is merged into the warehouse (idempotently, retrying while someone else holds
the warehouse). Readers attach the warehouse and every run file not merged in its current
state, so they see finished runs and running ones as far as they got, and no reader can make
a run lose a record.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import duckdb

from devswarm.errors import UserError
from devswarm.store.attach import attach, attached_version, fingerprint
from devswarm.store.failures import is_busy
from devswarm.store.schema import TABLES, Table, empty_select, source_select, source_table
from devswarm.store.store import Store, open_writer
from devswarm.store.upgrade import attached_columns
from devswarm.store.views import create_views

log = logging.getLogger(__name__)


def run_store_path(warehouse: Path, run_id: str) -> Path:
    """The file a run writes: ``runs/<run id>/run.duckdb`` beside the warehouse."""
    return Path(warehouse).parent / "runs" / run_id / "run.duckdb"


def run_store_files(warehouse: Path) -> list[Path]:
    """Every run file beside the warehouse."""
    return sorted(Path(warehouse).parent.glob("runs/*/run.duckdb"))


def publish_run(warehouse: Path, run_file: Path, *, timeout: float = 30.0) -> bool:
    """Merge a run's file (and any other run file left unmerged) into the warehouse.

    Retries while another process holds the warehouse, up to ``timeout`` seconds; returns
    False if it could not (the run stays readable from its own file; a later merge takes it).
    """
    run_file = Path(run_file)
    try:
        with open_writer(warehouse, timeout=timeout) as store:
            store.merge_run_files(run_store_files(warehouse) or [run_file])
            if not run_file.exists():
                return True
            merged = store.merged_fingerprints().get(str(run_file.resolve()))
            return merged == fingerprint(run_file)
    except UserError as exc:
        if not is_busy(exc):
            raise
        log.warning("%s; the run stays in %s until the next merge", exc, run_file)
        return False


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
            shown, folder = attach(con, path, "warehouse", attempts)
            cleanups += [folder] if folder else []
            tables = attached_columns(con, "warehouse")
            if not tables:  # being created this moment (a copy without its first commit)
                con.execute("DETACH warehouse")
            elif attached_version(con, "warehouse", path) is None:
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
                _, folder = attach(con, run_file, alias, attempts, copy_first=True)
            except UserError as exc:
                if exc.__cause__ is None:  # busy: the caller may try again
                    raise
                log.warning("skipping %s", exc)  # a damaged file must not hide the others
                continue
            cleanups += [folder] if folder else []
            if not attached_columns(con, alias):  # being created: nothing in it yet
                con.execute(f"DETACH {alias}")
                continue
            if attached_version(con, alias, run_file) is None:
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
    return Store.from_connection(con, shown, cleanups)


def _union_views(con: duckdb.DuckDBPyConnection, warehouse: str | None, live: list[str]) -> None:
    """Each table as a view: the warehouse's rows of runs not in a live file, plus the live
    files' rows; then this release's views on top."""
    present: dict[str, dict[str, set[str]]] = {
        alias: attached_columns(con, alias)
        for alias in [*([warehouse] if warehouse else []), *live]
    }

    def select(alias: str, table: Table) -> str | None:
        name = source_table(table, present[alias])
        if name is None:
            return None
        return source_select(table, present[alias][name], f"{alias}.main.{name}")

    for table in TABLES.values():
        live_parts = [(a, q) for a in live if (q := select(a, table))]
        parts = [q for _, q in live_parts]
        if warehouse and (q := select(warehouse, table)):
            if live_parts:
                # A live file holds all of its run's rows so far: they replace the warehouse's.
                newer = " UNION ALL ".join(
                    f"SELECT run_id FROM ({q}) WHERE run_id IS NOT NULL" for _, q in live_parts
                )
                q += f" WHERE run_id IS NULL OR run_id NOT IN ({newer})"
            parts.insert(0, q)
        sql = " UNION ALL ".join(parts) if parts else empty_select(table)
        con.execute(f"CREATE VIEW {table.name} AS {sql}")
    source = warehouse or (live[0] if live else None)
    if source:
        con.execute(f"CREATE VIEW schema_version AS SELECT * FROM {source}.main.schema_version")
    create_views(con)
