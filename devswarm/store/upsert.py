"""Records into tables: an idempotent upsert on each table's primary key.

Re-importing a file (or a longer one after a resume) never duplicates a row. How a row is merged:

- within one batch, records for the same key are merged in order: a later record overwrites the
  fields it names (an explicit null included) and keeps the others;
- against the stored row, the fields a record names overwrite it if the record is at least as
  new (``recorded_at``) as the stored row; an older record only fills fields that are still
  NULL. So importing several files that touch one row gives the same result in any order.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Iterable
from typing import Any

import duckdb

from devswarm.store.coerce import COERCERS, KEY_TYPES, Coercion
from devswarm.store.schema import (
    RECORDED_AT,
    SQL_TYPES,
    TABLES,
    Table,
    columns,
    renamed_fields,
    table_for,
)

log = logging.getLogger(__name__)

# Batches up to this size go in as one VALUES statement; larger ones through a temporary JSON
# file and read_json (row-by-row executemany costs ~2 ms a row in DuckDB).
_VALUES_MAX_ROWS = 100

Rows = dict[str, dict[tuple, dict]]  # table name -> key -> the merged record


RENAMED = {name: renamed_fields(table) for name, table in TABLES.items()}


def merge_by_key(records: Iterable[dict], coercion: Coercion, *, source: str) -> Rows:
    """Group records by table and key, later records overwriting the fields they name.

    Records of unknown kinds are dropped (logged at debug level), records without their key
    skipped (logged as a warning); unknown fields stay until the rows are written.
    """
    merged: Rows = {}
    unknown = keyless = 0
    for record in records:
        table = table_for(record.get("kind"))  # type: ignore[arg-type]
        if table is None:
            unknown += 1
            continue
        for old, new in RENAMED[table.name].items():
            if old in record and new not in record:  # written by an older devswarm
                record = dict(record)
                record[new] = record.pop(old)
        key = tuple(record.get(c) for c in table.key)
        if not all(type(v) is t for v, t in zip(key, KEY_TYPES[table.name], strict=True)):
            convert = COERCERS[table.name]
            key = tuple(coercion.value(convert[c], v) for c, v in zip(table.key, key, strict=True))
            if any(part is None for part in key):
                keyless += 1
                continue
        merged.setdefault(table.name, {}).setdefault(key, {}).update(record)
    if unknown:
        log.debug("%s: ignored %d records of unknown kinds", source, unknown)
    if keyless:
        log.warning("%s: skipped %d records without their key", source, keyless)
    return merged


def upsert_sql(table: Table, cols: list[str], source: str) -> str:
    """INSERT the rows of ``source`` (a relation with ``cols``) into ``table``, merged by key."""
    all_types = columns(table)
    select = ", ".join(f"TRY_CAST({c} AS {SQL_TYPES[all_types[c]]}) AS {c}" for c in cols)
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


def write_rows(
    con: duckdb.DuckDBPyConnection, table: Table, rows: Iterable[dict], coercion: Coercion
) -> int:
    """Upsert merged records into ``table`` (inside the caller's transaction); returns the count."""
    convert, kinds = COERCERS[table.name], columns(table)
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
        values = [coercion.column(kinds[c], convert[c], [r[c] for r in group]) for c in cols]
        count += len(group)
        if len(group) <= _VALUES_MAX_ROWS:
            _upsert_values(con, table, cols, values)
        else:
            _upsert_file(con, table, cols, values)
    return count


def _upsert_values(
    con: duckdb.DuckDBPyConnection, table: Table, cols: list[str], values: list[list[Any]]
) -> None:
    placeholders = "(" + ", ".join("?" * len(cols)) + ")"
    source = f"(VALUES {', '.join([placeholders] * len(values[0]))}) AS v({', '.join(cols)})"
    params = [v for row in zip(*values, strict=True) for v in row]
    con.execute(upsert_sql(table, cols, source), params)


def _upsert_file(
    con: duckdb.DuckDBPyConnection, table: Table, cols: list[str], values: list[list[Any]]
) -> None:
    types = columns(table)
    # Timestamps are read as text and TRY_CAST in SQL (see Coercion.column).
    spec = ", ".join(
        f"'{c}': '{'VARCHAR' if types[c] == 'timestamp' else SQL_TYPES[types[c]]}'" for c in cols
    )
    rows = [dict(zip(cols, row, strict=True)) for row in zip(*values, strict=True)]
    fd, tmp = tempfile.mkstemp(prefix=f"devswarm-{table.name}-", suffix=".json")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(json.dumps(rows))  # one call into the C encoder (json.dump isn't C)
        source = f"read_json(?, format = 'array', columns = {{{spec}}})"
        con.execute(upsert_sql(table, cols, source), [tmp])
    finally:
        os.unlink(tmp)
