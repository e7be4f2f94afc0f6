"""Run records: what agents write as they go, one JSONL file per agent.

Agents run in threads (later in other processes), and DuckDB allows one writing process, so an
agent never touches the store: it appends records to its own JSONL file, flushing every line so a
killed worker loses nothing, and the orchestrating process imports the files (devswarm.store).

Every record names its kind (= the DuckDB table) and the columns below. Column names follow the
OpenTelemetry GenAI conventions flattened to snake_case. Each line also carries ``recorded_at``
(when it was written): the store uses it so that importing files in any order keeps the newest
value of a row.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

log = logging.getLogger(__name__)

# Column types (mapped to DuckDB types in devswarm.store):
# text, json (JSON text; non-strings are serialised), int, bigint, double, bool, timestamp (UTC).


@dataclass(frozen=True)
class Table:
    """One record kind: its DuckDB table, primary key and typed columns."""

    name: str
    key: tuple[str, ...]
    columns: dict[str, str]  # column name -> type tag, in table order


def _cols(spec: str) -> dict[str, str]:
    """Parse 'name:type name:type ...' (a bare name is text)."""
    out: dict[str, str] = {}
    for item in spec.split():
        name, _, kind = item.partition(":")
        out[name] = kind or "text"
    return out


_SPAN = " span_id parent_span_id"

TABLES: dict[str, Table] = {
    t.name: t
    for t in (
        Table(
            "runs",
            ("run_id",),
            _cols(
                "run_id run_name goal repo_path branch base_commit tip_commit status"
                " started_at:timestamp ended_at:timestamp cycles:int flow_run_id config:json"
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
                "agent_id run_id cycle:int role plan_path task_id parent_agent_id request_model"
                " status steps:int started_at:timestamp ended_at:timestamp handoff flow_run_id"
                + _SPAN
            ),
        ),
        Table(
            "tasks",
            ("run_id", "task_id"),
            _cols(
                "run_id task_id cycle:int planner_agent_id worker_agent_id title description"
                " acceptance files:json check_command depends_on:json status reason attempts:int"
                " base_commit commit_sha started_at:timestamp ended_at:timestamp"
            ),
        ),
        Table(
            "llm_calls",
            ("call_id",),
            _cols(
                "call_id run_id agent_id step:int attempt:int operation_name provider_name"
                " request_model response_model response_id input_tokens:bigint"
                " output_tokens:bigint cache_read_input_tokens:bigint cost_usd:double"
                " finish_reasons:json error_type http_status:int started_at:timestamp"
                " ended_at:timestamp duration_ms:double cache_key" + _SPAN
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
                "landing_id run_id cycle:int task_id agent_id branch commit_sha old_tip new_tip"
                " status cas_retries:int conflict_files:json resolved:bool started_at:timestamp"
                " ended_at:timestamp duration_ms:double" + _SPAN
            ),
        ),
    )
}

# Every table also has this column: when the line was written (newest wins on import).
RECORDED_AT = "recorded_at"

# Singular spellings are accepted too ("llm_call" -> "llm_calls"); the table name is canonical.
_ALIASES = {name.removesuffix("s"): name for name in TABLES} | {name: name for name in TABLES}

# Bytes kept of long text columns, so one chatty tool cannot bloat every record file.
TEXT_LIMITS: dict[tuple[str, str], int] = {
    ("tool_calls", "arguments"): 4096,
    ("tool_calls", "output_excerpt"): 2048,
}


def table_for(kind: str) -> Table | None:
    """The table a record kind goes to (plural table name or singular), or None if unknown."""
    name = _ALIASES.get(kind)
    return TABLES[name] if name else None


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
