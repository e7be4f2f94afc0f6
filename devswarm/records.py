"""Run records: what agents write as they go, one JSONL file per agent.

Agents run in threads of the orchestrating process or in worker processes of their own
(--executor deployment), and DuckDB allows one writing process, so an agent never touches the
store: it appends records to its own JSONL file, flushing every line so a killed worker loses
nothing, and the orchestrating process imports the files (devswarm.store.store.Store.import_jsonl).

Every record names its kind (= the DuckDB table) and that table's columns
(devswarm.store.schema). Each line also carries ``recorded_at`` (when it was written): the store
uses it so that importing files in any order keeps the newest value of a row.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

from devswarm.store.schema import RECORDED_AT, TABLES, TEXT_LIMITS, table_for

__all__ = ["RECORDED_AT", "RecordLog", "now", "read_records", "span_id", "truncate_utf8"]

log = logging.getLogger(__name__)


def truncate_utf8(text: str, limit: int) -> str:
    """Cut ``text`` to at most ``limit`` UTF-8 bytes without splitting a character."""
    if len(text) * 4 <= limit:  # fast path: cannot exceed even if every char took 4 bytes
        return text
    raw = text.encode("utf-8", "surrogatepass")
    if len(raw) <= limit:
        return text
    return raw[:limit].decode("utf-8", "ignore")


def now() -> str:
    """The current time, ISO-8601 UTC with microseconds (``2026-05-09T07:35:25.123456Z``)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def span_id(*parts: str) -> str:
    """A deterministic 16-hex id (OpenTelemetry span id size) from ``parts``.

    The same parts always give the same id, so a resumed run re-derives the ids it had.
    """
    joined = "\x1f".join(str(p) for p in parts)  # unit separator: ("a b", "c") != ("a", "b c")
    return hashlib.sha256(joined.encode("utf-8", "surrogatepass")).hexdigest()[:16]


class RecordLog:
    """Thread-safe JSONL appender; one file per agent.

    Each ``write`` is one ``write(2)`` of a whole line followed by a flush (and an fsync if asked),
    so a killed process leaves at most one torn last line, which ``read_records`` skips.
    """

    def __init__(self, path: Path, *, fsync: bool = False) -> None:
        self.path = Path(path)
        self.fsync = fsync
        self._lock = threading.Lock()
        self._file: BinaryIO | None = None

    def _open(self) -> BinaryIO:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        f = self.path.open("ab")
        # A previous process killed mid-line left a torn fragment without "\n": end it, or our
        # first line would be glued to it and lost too.
        if f.tell() > 0:
            with self.path.open("rb") as r:
                r.seek(-1, os.SEEK_END)
                if r.read(1) != b"\n":
                    f.write(b"\n")
        return f

    def write(self, kind: str, **fields: Any) -> None:
        """Append one record: ``{"kind": kind, "recorded_at": now(), **fields}``.

        ``kind`` is a table name or its singular, written as given; an unknown kind raises
        ValueError, since it is a programming error that would otherwise vanish silently at
        import. Values that JSON can't encode are written with ``str``.
        """
        table = table_for(kind)
        if table is None:
            raise ValueError(f"unknown record kind {kind!r}; expected one of {sorted(TABLES)}")
        for (tname, col), limit in TEXT_LIMITS.items():
            if tname == table.name and isinstance(fields.get(col), str):
                fields[col] = truncate_utf8(fields[col], limit)
        record = {"kind": kind, RECORDED_AT: now(), **fields}
        line = (json.dumps(record, default=str) + "\n").encode()
        with self._lock:
            if self._file is None:
                self._file = self._open()
            self._file.write(line)
            self._file.flush()
            if self.fsync:
                os.fsync(self._file.fileno())

    def close(self) -> None:
        """Close the file (a later ``write`` reopens it)."""
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None

    def __enter__(self) -> RecordLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_records(path: Path) -> Iterator[dict]:
    """Yield the records of a JSONL file in order.

    A torn last line (the writer was killed mid-line, or is writing it right now) is skipped
    quietly; a bad line elsewhere (a torn line that a resumed writer closed) is skipped with a
    warning. Lines that are not JSON objects are skipped too.
    """
    with Path(path).open("rb") as f:
        for number, line in enumerate(f, 1):
            complete = line.endswith(b"\n")
            line = line.strip()
            if not line:
                continue
            try:
                record = json.loads(line)
            except ValueError:
                if complete:
                    log.warning("%s:%d: skipping a line that is not JSON", path, number)
                continue
            if isinstance(record, dict):
                yield record
