"""Reading other store files from one connection: attach them read-only (or a consistent copy,
when a writer holds them), read their schema version and columns, and tell when they changed."""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import time
from pathlib import Path

import duckdb

from devswarm.errors import UserError
from devswarm.store import upgrade
from devswarm.store.failures import busy_error, is_lock_error, one_line


def sql_literal(value: object) -> str:
    """A SQL string literal (paths go into ATTACH/COPY, which take no parameters)."""
    return "'" + str(value).replace("'", "''") + "'"


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


def _attach_copy(
    con: duckdb.DuckDBPyConnection, path: Path, alias: str, attempts: int, pause: float
) -> tuple[Path, Path] | None:
    """Attach a consistent copy of ``path``: (the copy, its folder), or None if every copy was
    torn (the writer changed the file while it was copied)."""
    for attempt in range(attempts):
        folder, copy = _snapshot(path)
        if copy is not None:
            try:
                con.execute(f"ATTACH {sql_literal(copy)} AS {alias} (READ_ONLY)")
                return copy, folder
            except duckdb.Error:
                pass  # torn after all: try again
        shutil.rmtree(folder, ignore_errors=True)
        time.sleep(pause * (attempt + 1))
    return None


def attach(
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
    if copy_first and (attached := _attach_copy(con, path, alias, attempts, 0.01)):
        return attached
    try:
        con.execute(f"ATTACH {sql_literal(path)} AS {alias} (READ_ONLY)")
        return path, None
    except duckdb.Error as exc:
        if not is_lock_error(exc):
            raise UserError(f"cannot read the store {path}: {one_line(exc)}") from exc
    if attached := _attach_copy(con, path, alias, attempts, 0.05):
        return attached
    raise busy_error(path)


def attached_version(con: duckdb.DuckDBPyConnection, alias: str, path: Path) -> int | None:
    """The schema version of an attached file (None if it is not a devswarm store).

    Raises UserError if a newer or a different build of devswarm wrote it.
    """
    applied = upgrade.read_applied(con, alias)
    return upgrade.check_applied(applied, path) if applied else None
