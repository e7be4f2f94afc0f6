"""The report server: a small HTTP server on 127.0.0.1 that serves run reports to a browser
(the Prefect UI's run summary links here; browsers refuse file:// links from a web page).

It runs detached in its own session, started and stopped with the Prefect server, and
serves GET /reports/<token> for registered tokens only (reports.py): any other path, an
unknown token or a report file that is gone is 404, and there is no listing. Tokens are
secrets, so it logs no request.

    python -m devswarm.server.report_http <server folder> <listening socket fd>
"""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import time
import urllib.error
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from devswarm.errors import UserError
from devswarm.procs import command_line, kill_group, pid_alive
from devswarm.server.folder import (
    ServerPaths,
    ServerState,
    log_tail,
    read_state,
    server_env,
    server_paths,
)
from devswarm.server.prefect import LOOPBACK
from devswarm.server.reports import register_report, registered_report

_MODULE = "devswarm.server.report_http"
# Host names a browser on this machine uses for a loopback server (a tunnel may change the
# port); any other Host is a page that rebound its own name to 127.0.0.1.
_LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "[::1]"}


def report_url(report_path: Path, run_id: str, root: Path | None = None) -> str | None:
    """Register a run's report with this machine's report server; the URL it serves it at.

    None when no `devswarm server` with a report server runs from `root` (default: the server
    folder), or its folder is not ours to write: the caller then shows the file path as text.
    """
    paths = server_paths(root)
    state = read_state(paths.root)
    if state is None or not report_server_up(state):
        return None
    try:
        token = register_report(paths.root, report_path, run_id)
    except OSError:
        return None
    return f"{state.reports_url}{token}"


def report_server_up(state: ServerState | None) -> bool:
    """Whether the state names a live report server."""
    pid = state.report_server_pid if state else None
    if pid is None or not pid_alive(pid):
        return False
    args = command_line(pid)
    return args is None or _MODULE.encode() in args  # no /proc: trust the pid


def listen_loopback(port: int | None, preferred: int, avoid: int) -> socket.socket:
    """A socket listening on 127.0.0.1: on `port`, or else on `preferred` if free, or else on
    any free port but `avoid` (the Prefect server's, not bound yet).

    Made before the Prefect server starts, so a taken --report-port fails before anything runs.
    """
    if port is not None and port == avoid:
        raise UserError(f"--report-port {port} is the Prefect server's port; pick another")
    for candidate in [port] if port is not None else [preferred, 0, 0]:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", candidate))
        except OSError:
            sock.close()
            if port is not None:
                raise UserError(
                    f"port {port} on 127.0.0.1 is in use; pick another with --report-port"
                ) from None
            continue
        if sock.getsockname()[1] == avoid:
            sock.close()
            continue
        sock.listen(64)
        return sock
    raise UserError("no free port on 127.0.0.1 for the report server")


def start_report_server(paths: ServerPaths, listener: socket.socket, timeout: float = 30.0) -> int:
    """Serve the folder's registered reports on `listener` from a detached process; its pid."""
    paths.reports.mkdir(mode=0o700, exist_ok=True)
    # The child imports the devswarm this process runs, wherever it came from.
    package_root = str(Path(__file__).resolve().parents[2])
    env = {**server_env()}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    fd = os.open(paths.report_log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", _MODULE, str(paths.root), str(listener.fileno())],
            cwd=paths.root,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=fd,
            stderr=subprocess.STDOUT,
            pass_fds=[listener.fileno()],
            start_new_session=True,  # survives this process; stop signals its whole group
        )
    finally:
        os.close(fd)
    # Connections wait in the listener's backlog until the child serves them: one is answered
    # once the child runs (404: no such token).
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/reports/"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise UserError(
                f"the report server exited ({proc.returncode}): {log_tail(paths.report_log)}"
            )
        try:
            LOOPBACK.open(url, timeout=1.0).close()
        except urllib.error.HTTPError as answer:
            answer.close()
            return proc.pid
        except OSError:
            time.sleep(0.1)
    kill_group(proc.pid, 5)
    raise UserError(f"the report server did not answer within {timeout:.0f} s")


def stop_report_server(state: ServerState | None, timeout: float = 10.0) -> bool:
    """Stop the state's report server; False if it was not running."""
    if state is None or not report_server_up(state):
        return False
    kill_group(state.report_server_pid, timeout)
    return True


class _ReportHandler(BaseHTTPRequestHandler):
    """GET/HEAD /reports/<token>: the registered report, or 404."""

    root: Path  # the server folder, set on a subclass by serve()
    server_version = "devswarm-reports"
    sys_version = ""

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self._answer(send_body=True)

    def do_HEAD(self) -> None:  # noqa: N802
        self._answer(send_body=False)

    def _answer(self, send_body: bool) -> None:
        host = self.headers.get("Host", "").lower()
        host = host.partition("]")[0] + "]" if host.startswith("[") else host.partition(":")[0]
        token = self.path.removeprefix("/reports/") if self.path.startswith("/reports/") else ""
        # The raw path, never percent-decoded, is the token: "%2e%2e" stays harmless text.
        report = registered_report(self.root, token) if host in _LOOPBACK_HOSTS else None
        body = _read_regular_file(report) if report else None
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")  # the URL holds the token
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (http.server's naming)
        pass  # request lines hold tokens


def _read_regular_file(path: Path) -> bytes | None:
    """The file's bytes if it is a regular file (never block on a FIFO or read a device)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return f.read()


def serve(root: Path, listener: socket.socket) -> None:
    """Serve the registered reports of server folder `root` on `listener` until killed."""
    handler = type("Handler", (_ReportHandler,), {"root": root})
    httpd = ThreadingHTTPServer(listener.getsockname(), handler, bind_and_activate=False)
    httpd.socket.close()
    httpd.socket = listener
    httpd.daemon_threads = True
    httpd.serve_forever()


if __name__ == "__main__":
    serve(Path(sys.argv[1]), socket.socket(fileno=int(sys.argv[2])))
