"""Run records: what agents write as they go, one JSONL file per agent.

Agents run in threads (later in other processes), and DuckDB allows one writing process, so an
agent never touches the store: it appends records to its own JSONL file, flushing every line so a
killed worker loses nothing, and the orchestrating process imports the files (devswarm.store.store).

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
import re
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

log = logging.getLogger(__name__)

# Column types (mapped to DuckDB types in devswarm.store.store):
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
        # Prefect's view of a run, copied from its API by `devswarm history import`. Keyed by
        # Prefect's ids; run_id, agent_id and task_id are ours, so both sides join.
        Table(
            "prefect_flow_runs",
            ("flow_run_id",),
            _cols(
                "flow_run_id run_id name flow_name role agent_id task_id cycle:int"
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


# --- Prefect history: flow and task runs (dicts of Prefect's API objects) -> records
#
# Prefect run names say what runs ("work · <task id>", "plan · cycle 2 · root.api",
# "judge · cycle 2", "swarm · <run id>", "<agent id> · step 3" for a model call); a flow run's
# parameters name the task and cycle exactly, so they are read first and the name is the fallback.

_FLOW_ROLES = {
    "swarm": "swarm",
    "plan": "planner",
    "followup": "planner",
    "work": "worker",
    "judge": "judge",
}
_PLAN_NAME = re.compile(r"^plan · cycle (\d+) · (.+)$")
_JUDGE_NAME = re.compile(r"^judge · cycle (\d+)$")
_STEP_NAME = re.compile(r"^(.+) · step (\d+)$")


def prefect_span_id(uuid: Any) -> str | None:
    """An OpenTelemetry-sized span id (16 hex) from a Prefect run id."""
    return str(uuid).replace("-", "")[:16] if uuid else None


def _seconds(value: Any) -> float | None:
    if value is None:
        return None
    if hasattr(value, "total_seconds"):
        return value.total_seconds()
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _flow_agent(
    flow_name: str, name: str, params: dict[str, Any], run_id: str
) -> tuple[str | None, str | None, int | None]:
    """(agent_id, task_id, cycle) of one of our flow runs, from its parameters or its name."""
    task = params.get("task") if isinstance(params.get("task"), dict) else {}
    spec = task.get("spec") if isinstance(task.get("spec"), dict) else {}
    if flow_name == "work" and task.get("key") and spec.get("id"):
        attempt = params.get("attempt") or 1
        agent = (
            f"worker/{run_id}/c{task.get('cycle')}/{task.get('plan_path')}/{spec['id']}/a{attempt}"
        )
        return agent, task["key"], task.get("cycle")
    if flow_name == "followup" and task.get("planner_agent_id") and spec.get("id"):
        return f"{task['planner_agent_id']}/followup-{spec['id']}", None, task.get("cycle")
    if flow_name == "plan":
        cycle, path = params.get("cycle"), params.get("plan_path")
        if cycle is None and (m := _PLAN_NAME.match(name)):
            cycle, path = int(m[1]), m[2]
        if cycle is not None:
            return f"planner/{run_id}/c{cycle}/{path or 'root'}", None, int(cycle)
    if flow_name == "judge":
        cycle = params.get("cycle")
        if cycle is None and (m := _JUDGE_NAME.match(name)):
            cycle = int(m[1])
        if cycle is not None:
            return f"judge/{run_id}/c{cycle}", None, int(cycle)
    return None, None, None


def flow_run_record(
    flow_run: dict[str, Any], flow_name: str, run_id: str, parent_flow_run_id: Any = None
) -> dict[str, Any]:
    """A ``prefect_flow_runs`` record from a Prefect FlowRun (as a dict) of our run ``run_id``."""
    name = flow_run.get("name") or ""
    params = flow_run.get("parameters") or {}
    agent_id, task_id, cycle = _flow_agent(flow_name, name, params, run_id)
    return {
        "kind": "prefect_flow_runs",
        "flow_run_id": str(flow_run["id"]),
        "run_id": run_id,
        "name": name,
        "flow_name": flow_name,
        "role": _FLOW_ROLES.get(flow_name),
        "agent_id": agent_id,
        "task_id": task_id,
        "cycle": cycle,
        "parent_flow_run_id": str(parent_flow_run_id) if parent_flow_run_id else None,
        "parent_task_run_id": _str(flow_run.get("parent_task_run_id")),
        "state_type": _state(flow_run.get("state_type")),
        "state_name": flow_run.get("state_name"),
        "run_count": flow_run.get("run_count"),
        "started_at": flow_run.get("start_time"),
        "ended_at": flow_run.get("end_time"),
        "total_run_time_s": _seconds(flow_run.get("total_run_time")),
        "created_at": flow_run.get("created"),
        "deployment_id": _str(flow_run.get("deployment_id")),
        "work_pool_name": flow_run.get("work_pool_name"),
        "tags": json.dumps(list(flow_run.get("tags") or [])),
        "span_id": prefect_span_id(flow_run["id"]),
        "parent_span_id": prefect_span_id(parent_flow_run_id),
        RECORDED_AT: now(),
    }


def task_run_record(
    task_run: dict[str, Any], run_id: str, subflow_run_id: Any = None
) -> dict[str, Any]:
    """A ``prefect_task_runs`` record from a Prefect TaskRun (as a dict) of our run ``run_id``.

    A model call's task run is named "<agent id> · step N", which gives agent_id and step; other
    task runs get their agent when imported (devswarm.store.store: a subflow's stand-in the subflow's,
    any other its flow run's).
    """
    name = task_run.get("name") or ""
    agent_id, step = None, None
    if m := _STEP_NAME.match(name):
        agent_id, step = m[1], int(m[2])
        task_name = "model-call"
    elif subflow_run_id:  # the stand-in a parent flow run holds for a subflow run
        task_name = "subflow"
    else:
        task_name = name.split(" · ")[0]
    run_count = task_run.get("run_count") or 0
    policy = task_run.get("empirical_policy") or {}
    max_retries = policy.get("retries", policy.get("max_retries"))
    return {
        "kind": "prefect_task_runs",
        "task_run_id": str(task_run["id"]),
        "flow_run_id": _str(task_run.get("flow_run_id")),
        "run_id": run_id,
        "name": name,
        "task_name": task_name,
        "agent_id": agent_id,
        "step": step,
        "subflow_run_id": _str(subflow_run_id),
        "state_type": _state(task_run.get("state_type")),
        "state_name": task_run.get("state_name"),
        "run_count": run_count,
        "max_retries": max_retries,
        "retries": max(run_count - 1, 0),
        # Prefect marks a result served from its cache as a Completed state named "Cached".
        "cache_hit": task_run.get("state_name") == "Cached",
        "cache_key": task_run.get("cache_key"),
        "cache_expiration": task_run.get("cache_expiration"),
        "started_at": task_run.get("start_time"),
        "ended_at": task_run.get("end_time"),
        "total_run_time_s": _seconds(task_run.get("total_run_time")),
        "created_at": task_run.get("created"),
        "tags": json.dumps(list(task_run.get("tags") or [])),
        "span_id": prefect_span_id(task_run["id"]),
        "parent_span_id": prefect_span_id(task_run.get("flow_run_id")),
        RECORDED_AT: now(),
    }


def _str(value: Any) -> str | None:
    return str(value) if value else None


def _state(value: Any) -> str | None:
    # A StateType enum or its text ("COMPLETED").
    return getattr(value, "value", value) if value is not None else None


def current_flow_run_id() -> str | None:
    """The Prefect flow run this thread runs in, or None (outside Prefect, or Prefect unloaded).

    Reads Prefect's runtime module only if the process already imported it, so plain-Python
    callers never pay for (or depend on) importing Prefect.
    """
    module = sys.modules.get("prefect.runtime.flow_run")
    try:
        value = module.id if module is not None else None
    except Exception:  # no flow run context in this thread
        return None
    return str(value) if value else None
