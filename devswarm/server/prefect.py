"""Prefect's server process with devswarm's service settings, its health, and what a Prefect
backend can hold (the database behind an API, the worker cap).

This module imports nothing from Prefect: it drives a process and HTTP.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime

from devswarm.errors import UserError
from devswarm.procs import command_line, kill_group, pid_alive
from devswarm.server.folder import (
    ServerPaths,
    ServerState,
    log_tail,
    read_state,
    server_dir,
    server_env,
)
from devswarm.server.postgres import database_url

# The temporary (SQLite) server holds few concurrent subflows; see DESIGN.md's measurements.
SQLITE_WORKER_CAP = 4
# Requests to our own loopback server must not go through an HTTP(S)_PROXY from the environment.
LOOPBACK = urllib.request.build_opener(urllib.request.ProxyHandler({}))

# Prefect server settings for a swarm's load (every model call is a task run; bench/scale.py):
_SERVICE_SETTINGS = {
    # Prefect's recorder and persister write each event with its own INSERT by default (batch
    # size 1). Batched, 200 agents × 10 calls cost the server 73 s of CPU instead of 123 s; the UI
    # sees them ≤ 1 s later.
    "TASK_RUN_RECORDER_BATCH_SIZE": "200",
    "TASK_RUN_RECORDER_FLUSH_INTERVAL": "1",
    "EVENT_PERSISTER_BATCH_SIZE": "200",
    "EVENT_PERSISTER_FLUSH_INTERVAL": "1",
    # Every 20 s by default, the cancellation cleanup reads each running subflow, its parent task
    # run and its parent flow run (three reads and a queued job per worker subflow): ~10 % of the
    # server's CPU with 200 workers. Each minute instead: a subflow orphaned by a cancelled swarm
    # shows Cancelled ≤ 60 s later (the swarm drains its own workers on cancel right away).
    "CANCELLATION_CLEANUP_LOOP_SECONDS": "60",
}


def start_prefect(paths: ServerPaths, port: int, auth: str, timeout: float) -> ServerState:
    """Start `prefect server start` on 127.0.0.1:port in its own session; return once healthy."""
    paths.prefect_home.mkdir(mode=0o700, exist_ok=True)
    url = f"http://127.0.0.1:{port}"
    env = {
        **server_env(),
        "PREFECT_HOME": str(paths.prefect_home),
        "PREFECT_API_DATABASE_CONNECTION_URL": database_url(paths),
        "PREFECT_SERVER_API_AUTH_STRING": auth,
        "PREFECT_SERVER_API_HOST": "127.0.0.1",
        "PREFECT_SERVER_API_PORT": str(port),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        **{f"PREFECT_SERVER_SERVICES_{k}": v for k, v in _SERVICE_SETTINGS.items()},
        "PREFECT_API_URL": f"{url}/api",
        "PREFECT_API_AUTH_STRING": auth,
    }
    fd = os.open(paths.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "start"]
            + ["--host", "127.0.0.1", "--port", str(port)],
            cwd=paths.root,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=fd,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # survives this process; stop signals its whole group
        )
    finally:
        os.close(fd)
    deadline = time.monotonic() + max(timeout, 5.0)
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise UserError(
                f"the Prefect server exited ({proc.returncode}): {log_tail(paths.log)}; "
                f"log {paths.log}"
            )
        if healthy(url, timeout=1.0):
            break
        time.sleep(0.2)
    else:
        kill_group(proc.pid, 10)
        raise UserError(
            f"the Prefect server did not answer within {timeout:.0f} s; log {paths.log}"
        )
    return ServerState(
        pid=proc.pid,
        url=url,
        api_url=f"{url}/api",
        port=port,
        socket_dir=str(paths.pgrun),
        started_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )


def stop_prefect(state: ServerState | None, timeout: float = 30.0) -> bool:
    """SIGTERM the server's session (uvicorn and anything it started), SIGKILL if it lingers;
    False if it was not running."""
    if state is None or not is_prefect_server(state.pid):
        return False
    kill_group(state.pid, timeout)
    return True


def is_prefect_server(pid: int) -> bool:
    """Whether pid is a live Prefect server process (after a reboot the pid may be another's)."""
    if not pid_alive(pid):
        return False
    args = command_line(pid)
    return args is None or (b"prefect" in args and b"server" in args)  # no /proc: trust the pid


def healthy(url: str, timeout: float = 2.0) -> bool:
    """True when the Prefect API at `url` (with or without /api) answers its health check."""
    base = url.rstrip("/").removesuffix("/api")
    try:
        with LOOPBACK.open(f"{base}/api/health", timeout=timeout) as resp:
            return resp.status == 200
    except (OSError, urllib.error.URLError):
        return False


def database_backend(api_url: str, auth_string: str | None = None, timeout: float = 5.0) -> str:
    """ "postgresql", "sqlite" or "unknown": what backs the Prefect server at `api_url`.

    A `devswarm server` is known from its state file. Any other server is asked for its settings
    (GET /admin/settings): Prefect obfuscates the connection URL there, so only a server
    configured with PREFECT_SERVER_DATABASE_DRIVER/HOST shows what it uses; a plain
    `prefect server start` (SQLite) and a URL-configured PostgreSQL both read "unknown".
    $DEVSWARM_PREFECT_DATABASE=postgresql|sqlite says it outright.
    """
    if declared := os.environ.get("DEVSWARM_PREFECT_DATABASE", "").strip().lower():
        return declared
    api = api_url.rstrip("/")
    state = read_state(server_dir())
    if state is not None and state.api_url.rstrip("/") == api:
        return state.database
    request = urllib.request.Request(f"{api}/admin/settings")
    if auth_string:
        token = base64.b64encode(auth_string.encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with LOOPBACK.open(request, timeout=timeout) as resp:
            settings = json.load(resp)
    except (OSError, urllib.error.URLError, ValueError):
        return "unknown"
    database = (settings.get("server") or {}).get("database") or {}
    driver = str(database.get("driver") or "")
    if "postgres" in driver or database.get("host"):
        return "postgresql"  # only PostgreSQL is configured by host
    if "sqlite" in driver:
        return "sqlite"
    return "unknown"


def worker_cap(api_url: str | None, auth_string: str | None) -> tuple[int | None, str]:
    """How many workers a Prefect backend holds at once: (None, "") means no cap.

    Prefect's temporary server (no PREFECT_API_URL) and SQLite-backed servers are capped;
    PostgreSQL runs the requested number. A server we cannot tell is capped too: the likeliest
    one is a plain `prefect server start`, which uses SQLite.
    """
    if not api_url:
        return SQLITE_WORKER_CAP, "Prefect's temporary server (SQLite)"
    backend = database_backend(api_url, auth_string)
    if backend == "sqlite":
        return SQLITE_WORKER_CAP, f"the Prefect server at {api_url} (SQLite)"
    if backend != "postgresql":
        return SQLITE_WORKER_CAP, (
            f"the Prefect server at {api_url} (database unknown; if it is PostgreSQL, "
            "set DEVSWARM_PREFECT_DATABASE=postgresql)"
        )
    return None, ""
