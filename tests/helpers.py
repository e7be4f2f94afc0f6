"""Small builders for offline-server scenarios and DuckDB reads, shared by the swarm tests."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

JUDGE_DONE = {
    "match": "judge/*",
    "steps": [{"json": {"decision": "done", "reasons": "ok", "score": 1.0}}],
}


def tc(name: str, **arguments) -> dict:
    """A scripted tool call."""
    return {"name": name, "arguments": arguments}


def plan_reply(*tasks: dict, scopes: list | None = None) -> dict:
    """A scripted planner answer (structured JSON)."""
    return {"json": {"summary": "test plan", "tasks": list(tasks), "scopes": scopes or []}}


def task(
    id: str, files: list[str], check: str | None = None, depends_on: list[str] | None = None
) -> dict:
    return {
        "id": id,
        "title": f"do {id}",
        "description": f"Do {id}.",
        "acceptance": [],
        "files": files,
        "check": check,
        "depends_on": depends_on or [],
    }


def write_and_finish(path: str, content: str, summary: str = "done", **finish) -> list[dict]:
    """A worker script: write one file, then finish."""
    return [
        {"tool_calls": [tc("write_file", path=path, content=content)]},
        {"tool_calls": [tc("finish", summary=summary, **finish)]},
    ]


def rows(db: Path, sql: str, *params) -> list[tuple]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql, list(params)).fetchall()
    finally:
        con.close()


@contextmanager
def serving(handler: type[http.server.BaseHTTPRequestHandler]) -> Iterator[str]:
    """`handler` served on a free loopback port while the block runs: its base URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
