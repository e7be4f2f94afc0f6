"""`devswarm server`: a real Prefect server on an embedded PostgreSQL, and the worker cap."""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from devswarm import server
from devswarm.errors import UserError
from devswarm.procs import pid_alive, wait_dead

ROOT = Path(__file__).resolve().parents[1]
DEVSWARM = [sys.executable, "-m", "devswarm.cli"]


def cli(*args: str, env: dict | None = None, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*DEVSWARM, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
    )


class _Settings(BaseHTTPRequestHandler):
    """A stand-in Prefect API that answers GET /api/admin/settings with a given database block."""

    database: dict = {}

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        body = json.dumps({"server": {"database": self.database}}).encode()
        self.send_response(200 if self.path == "/api/admin/settings" else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def settings_api():
    """Serve a database settings block on 127.0.0.1; yields a function(database) -> API URL."""
    servers = []

    def serve(database: dict) -> str:
        handler = type("Handler", (_Settings,), {"database": database})
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        servers.append(httpd)
        return f"http://127.0.0.1:{httpd.server_address[1]}/api"

    yield serve
    for httpd in servers:
        httpd.shutdown()
        httpd.server_close()


def test_worker_cap_follows_the_database_behind_the_api(
    settings_api, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setenv("DEVSWARM_HOME", str(tmp_path))
    monkeypatch.delenv("DEVSWARM_PREFECT_DATABASE", raising=False)
    # No PREFECT_API_URL: Prefect's temporary SQLite server.
    assert server.worker_cap(None, None)[0] == 4
    assert server.worker_cap(settings_api({"driver": "sqlite+aiosqlite"}), None)[0] == 4
    postgres = settings_api({"connection_url": "**********", "host": "db.internal"})
    assert server.worker_cap(postgres, None) == (None, "")
    # Prefect obfuscates connection URLs: a plain `prefect server start` looks like this.
    unknown = settings_api({"connection_url": "**********", "driver": None})
    cap, why = server.worker_cap(unknown, None)
    assert cap == 4 and "DEVSWARM_PREFECT_DATABASE" in why
    monkeypatch.setenv("DEVSWARM_PREFECT_DATABASE", "postgresql")
    assert server.worker_cap(unknown, None)[0] is None
    monkeypatch.delenv("DEVSWARM_PREFECT_DATABASE")
    # devswarm's own server is known from its state file, without asking the API.
    (tmp_path / "server").mkdir()
    state = server.ServerState(
        pid=1, url="http://127.0.0.1:1", api_url="http://127.0.0.1:1/api", port=1,
        socket_dir="/x", started_at="now",
    )  # fmt: skip
    (tmp_path / "server" / "server.json").write_text(state.model_dump_json())
    assert server.worker_cap("http://127.0.0.1:1/api/", None)[0] is None
    # Nothing answers: capped, never a crash.
    assert server.worker_cap("http://127.0.0.1:9/api", None)[0] == 4


@pytest.mark.skipif(os.geteuid() != 0, reason="the refusal is about running as root")
def test_refuses_a_server_folder_under_roots_home(tmp_path: Path) -> None:
    home = Path(os.path.expanduser("~root"))
    with pytest.raises(UserError, match="under root's home"):
        server.check_location(home / ".local" / "share" / "devswarm" / "server")
    target = home / "devswarm-test-never-created" / "server"
    done = cli("server", "start", "--dir", str(target), "--port", "1")
    assert done.returncode == 2
    assert (
        done.stderr.strip().startswith("devswarm: server folder")
        and "\n" not in done.stderr.strip()
    )
    assert "Traceback" not in done.stderr
    assert not target.parent.exists()


def test_server_folder_default_is_outside_roots_home(monkeypatch) -> None:
    monkeypatch.delenv("DEVSWARM_HOME", raising=False)
    folder = server.server_dir()
    if os.geteuid() == 0:
        assert folder == Path("/var/lib/devswarm/server")
    server.check_location(folder)  # never refused by default


def test_status_and_stop_of_a_folder_that_never_ran(tmp_path: Path) -> None:
    assert server.status(tmp_path / "server") is None
    assert server.stop(tmp_path / "server") is False
    done = cli("server", "status", "--dir", str(tmp_path / "server"))
    assert done.returncode == 1 and done.stdout.startswith("down")


@contextmanager
def fresh_server_folder() -> Iterator[Path]:
    """A server folder directly under /tmp, stopped and removed afterwards.

    Not under pytest's tmp_path: as root, PostgreSQL runs as another user who must traverse
    every parent folder, and each new pytest session resets /tmp/pytest-of-<user> to 0700.
    """
    base = Path(tempfile.mkdtemp(prefix="devswarm-test-", dir="/tmp"))
    try:
        yield base / "server"
    finally:
        server.stop(base / "server")
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.slow
def test_server_start_status_stop_and_50_concurrent_subflows(monkeypatch) -> None:
    with fresh_server_folder() as root:
        _start_status_subflows_stop(root, monkeypatch)


def _start_status_subflows_stop(root: Path, monkeypatch) -> None:
    env = {"DEVSWARM_HOME": str(root.parent)}
    port = _free_port()

    started = cli("server", "start", "--port", str(port), env=env)
    assert started.returncode == 0, started.stderr
    api_url = f"http://127.0.0.1:{port}/api"
    assert f"export PREFECT_API_URL={api_url}" in started.stdout, started.stdout
    assert f'PREFECT_API_AUTH_STRING="$(cat {root}/auth)"' in started.stdout
    state = server.read_state(root)
    assert state is not None and state.database == "postgresql"
    print(f"\ncold start: {state.start_seconds} s")

    # Secrets and the database socket are the user's alone.
    assert stat.S_IMODE((root / "auth").stat().st_mode) == 0o600
    assert stat.S_IMODE((root / "pgrun").stat().st_mode) == 0o700
    assert (root / "pgrun" / ".s.PGSQL.5432").is_socket()
    auth = (root / "auth").read_text().strip()
    assert auth.startswith("admin:") and len(auth) > 30
    assert _get(f"{api_url}/flows/filter", None, method="POST") == 401
    assert _get(f"{api_url}/admin/version", auth) == 200
    assert _get(f"http://127.0.0.1:{port}/", None) == 200  # the UI
    _reports_are_served(root, started.stdout, env)

    # Another process sees it up, and devswarm run would not cap the workers.
    status = cli("server", "status", env=env)
    assert status.stdout.startswith(f"up: http://127.0.0.1:{port}"), status.stdout + status.stderr
    monkeypatch.setenv("DEVSWARM_HOME", env["DEVSWARM_HOME"])
    monkeypatch.delenv("DEVSWARM_PREFECT_DATABASE", raising=False)
    assert server.worker_cap(api_url, None) == (None, "")

    client_env = {"PREFECT_API_URL": api_url, "PREFECT_API_AUTH_STRING": auth}
    bench = subprocess.run(
        [sys.executable, "bench/server.py", "--subflows-only", "--subflows", "50"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, **env, **client_env},
        timeout=240,
    )
    print(bench.stdout.strip())
    assert bench.returncode == 0, bench.stdout + bench.stderr[-2000:]
    assert bench.stdout.startswith("50/50 concurrent no-op subflows completed")

    # Task-run events are written in batches (devswarm/server/prefect.py), and still all of
    # them, soon.
    environ = Path(f"/proc/{state.pid}/environ").read_bytes().split(b"\0")
    assert b"PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_BATCH_SIZE=200" in environ
    assert b"PREFECT_SERVER_SERVICES_CANCELLATION_CLEANUP_LOOP_SECONDS=60" in environ
    recorded = subprocess.run(
        [sys.executable, "-c", _TASK_RUNS_RECORDED],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, **env, **client_env, "PREFECT_LOGGING_LEVEL": "WARNING"},
        timeout=120,
    )
    assert recorded.stdout.startswith("recorded 7 of 7"), recorded.stdout + recorded.stderr[-2000:]

    postmaster = int((root / "pgdata" / "postmaster.pid").read_text().split()[0])
    reports_pid = server.read_state(root).report_server_pid
    stopped = cli("server", "stop", env=env)
    assert stopped.stdout.startswith("stopped"), stopped.stdout + stopped.stderr
    assert not pid_alive(state.pid) and not pid_alive(postmaster)
    assert not pid_alive(reports_pid)
    assert _get(f"{api_url}/health", None) is None
    down = cli("server", "status", env=env)
    assert down.returncode == 1 and down.stdout.startswith("down"), down.stdout + down.stderr

    # Warm start from the same folder keeps the data and the auth string.
    again = cli("server", "start", "--port", str(port), env=env)
    assert again.returncode == 0, again.stderr
    print(f"warm start: {server.read_state(root).start_seconds} s")
    assert (root / "auth").read_text().strip() == auth
    assert _get(f"{api_url}/admin/version", auth) == 200
    assert cli("server", "stop", env=env).returncode == 0


def _reports_are_served(root: Path, start_output: str, env: dict) -> None:
    """The report server runs beside the Prefect server: a run's report is served at the URL
    the run gets; status shows where; a start restarts a report server that died."""
    state = server.read_state(root)
    assert state is not None and state.reports_url is not None
    assert state.report_server_port != state.port
    assert f"Run reports at {state.reports_url}<token>" in start_output, start_output
    report = root.parent / "runs" / "r1" / "report.html"
    report.parent.mkdir(parents=True)
    report.write_text("<p>the report</p>")
    url = server.report_url(report, "r1", root=root)
    assert url is not None and _get(url, None) == 200
    assert _get(url[:-1] + ("x" if url[-1] != "x" else "y"), None) == 404
    status = cli("server", "status", env=env)
    assert f"reports: {state.reports_url}<token>" in status.stdout, status.stdout + status.stderr
    os.kill(state.report_server_pid, signal.SIGKILL)
    assert wait_dead(state.report_server_pid, 10)
    assert server.report_url(report, "r1", root=root) is None  # the caller shows the path
    again = cli("server", "start", "--port", str(state.port), env=env)
    assert again.returncode == 0, again.stderr
    restarted = server.read_state(root)
    assert restarted.pid == state.pid and restarted.report_server_pid != state.report_server_pid
    assert _get(url, None) == 200  # registrations outlive the report server


_TASK_RUNS_RECORDED = """
import time
from prefect import flow, task
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

@task
def t(i: int) -> int:
    return i

@flow
def f() -> list[int]:
    return [t(i) for i in range(7)]

fid = f(return_state=True).state_details.flow_run_id
t0, runs = time.monotonic(), []
with get_client(sync_client=True) as client:
    while time.monotonic() - t0 < 15:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[fid])))
        if len(runs) == 7 and all(r.state and r.state.is_completed() for r in runs):
            break
        time.sleep(0.2)
done = sum(1 for r in runs if r.state and r.state.is_completed())
print(f"recorded {done} of 7 in {time.monotonic() - t0:.1f} s")
"""


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, auth: str | None, method: str = "GET") -> int | None:
    request = urllib.request.Request(url, method=method, data=b"{}" if method == "POST" else None)
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=15) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None
