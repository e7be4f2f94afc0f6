"""Run reports served on loopback by `devswarm server`'s report server (issue #16: the report
opens from the UI): a registered report is served, nothing else is."""

from __future__ import annotations

import http.client
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from devswarm.procs import pid_alive
from devswarm.server import ServerState, report_url
from devswarm.server.folder import ServerPaths, prepare_root, read_state, write_private
from devswarm.server.report_http import (
    listen_loopback,
    report_server_up,
    start_report_server,
    stop_report_server,
)
from devswarm.server.reports import register_report

REPORT = "<html><body><h1>run r1</h1></body></html>"


@pytest.fixture
def report_server(tmp_path: Path) -> Iterator[ServerState]:
    """A real report server for the server folder tmp_path/server, as `devswarm server start`
    starts it, and the state it leaves in server.json (no Prefect server: not needed here)."""
    paths = ServerPaths(tmp_path / "server")
    prepare_root(paths.root)
    with listen_loopback(None, _free_port(), avoid=0) as listener:
        pid = start_report_server(paths, listener)
        port = listener.getsockname()[1]
    state = ServerState(
        pid=os.getpid(), url="http://127.0.0.1:1", api_url="http://127.0.0.1:1/api", port=1,
        socket_dir=str(paths.pgrun), started_at="now",
        report_server_pid=pid, report_server_port=port,
    )  # fmt: skip
    write_private(paths.state, state.model_dump_json())
    try:
        yield state
    finally:
        stop_report_server(state)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(port: int, path: str, host: str | None = None, method: str = "GET") -> tuple[int, bytes]:
    """One request with exactly this path (no client-side normalisation) and Host header."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.putrequest(method, path, skip_host=True)
        conn.putheader("Host", host or f"127.0.0.1:{port}")
        conn.endheaders()
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def _report(tmp_path: Path, text: str = REPORT) -> Path:
    report = tmp_path / "home" / "runs" / "r1" / "report.html"
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(text)
    return report


def test_a_registered_report_is_served_at_the_url_the_run_gets(
    report_server: ServerState, tmp_path: Path
) -> None:
    report = _report(tmp_path)
    url = report_url(report, "r1", root=tmp_path / "server")
    assert url is not None and url.startswith(f"{report_server.reports_url}")
    path = url.removeprefix(f"http://127.0.0.1:{report_server.report_server_port}")
    assert _get(report_server.report_server_port, path) == (200, REPORT.encode())
    # The report as it is now: a run rewrites it (history import) and the same URL shows that.
    report.write_text("<p>rewritten</p>")
    assert _get(report_server.report_server_port, path)[1] == b"<p>rewritten</p>"
    assert _get(report_server.report_server_port, path, method="HEAD")[0] == 200
    # Each registration has its own unguessable token; the registration is the user's alone.
    other = report_url(report, "r1", root=tmp_path / "server")
    assert other is not None and other != url
    registrations = list((tmp_path / "server" / "reports").iterdir())
    assert len(registrations) == 2
    assert all(p.stat().st_mode & 0o077 == 0 for p in [*registrations, registrations[0].parent])
    # No URL (they hold the tokens) reaches the report server's log.
    token = url.rsplit("/", 1)[1]
    assert token not in (tmp_path / "server" / "reports.log").read_text()


def test_unknown_tokens_and_other_paths_are_404(report_server: ServerState, tmp_path: Path) -> None:
    port = report_server.report_server_port
    token = register_report(tmp_path / "server", _report(tmp_path), "r1")
    assert _get(port, f"/reports/{token}")[0] == 200
    unknown = ("A" if token[0] != "A" else "B") + token[1:]
    for path in [
        f"/reports/{unknown}",
        "/reports/",  # no listing
        "/reports",
        "/",
        "/server.json",
        "/auth",
        "/reports/../auth",
        "/reports/..%2fauth",
        "/reports/%2e%2e/server.json",
        f"/reports/{token}/../../auth",
        f"/reports/{token}?x=1",
        f"/reports/{token}.json",
        "/reports/" + "." * 43,
    ]:
        assert _get(port, path)[0] == 404, path
    # A page that rebound its own host name to 127.0.0.1 gets nothing, even with a token.
    assert _get(port, f"/reports/{token}", host=f"evil.example:{port}")[0] == 404
    assert _get(port, f"/reports/{token}", host=f"localhost:{port}")[0] == 200


def test_a_token_whose_report_is_gone_is_404(report_server: ServerState, tmp_path: Path) -> None:
    report = _report(tmp_path)
    token = register_report(tmp_path / "server", report, "r1")
    report.unlink()
    assert _get(report_server.report_server_port, f"/reports/{token}")[0] == 404
    # Nor is anything but a regular file read: a FIFO in its place would block a reader.
    os.mkfifo(report)
    assert _get(report_server.report_server_port, f"/reports/{token}")[0] == 404


def test_the_report_server_binds_loopback_only(report_server: ServerState) -> None:
    port = report_server.report_server_port
    listening = _listening_addresses(port)
    assert listening == {"127.0.0.1"}, listening
    other = _non_loopback_address()
    if other is not None:
        with socket.socket() as s, pytest.raises(OSError):
            s.settimeout(5)
            s.connect((other, port))


def _listening_addresses(port: int) -> set[str]:
    """The local addresses of TCP sockets listening on `port` (from /proc/net/tcp and tcp6)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.rsplit(":", 1)
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                found.add(
                    socket.inet_ntoa(bytes.fromhex(address)[::-1]) if len(address) == 8 else address
                )
    return found


def _non_loopback_address() -> str | None:
    """This machine's address on its default route, if it has one (no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # TEST-NET-1: only picks a route
            address = s.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address


def test_no_url_without_a_running_report_server(report_server: ServerState, tmp_path: Path) -> None:
    report = _report(tmp_path)
    assert report_url(report, "r1", root=tmp_path / "elsewhere") is None  # no server folder
    assert report_server_up(read_state(tmp_path / "server"))
    assert stop_report_server(report_server)
    assert not pid_alive(report_server.report_server_pid)
    assert report_url(report, "r1", root=tmp_path / "server") is None
    assert not (tmp_path / "server" / "reports").exists() or not any(
        (tmp_path / "server" / "reports").iterdir()
    )


def test_the_run_summary_links_the_served_report(
    prefect_server: None, report_server: ServerState, tmp_path: Path, monkeypatch
) -> None:
    """The swarm's summary artifact in the Prefect UI links the report where the report
    server serves it; without a report server the path stays text, never a file:// link."""
    from prefect import flow

    from tasks.artifacts import summary_artifact as _summary_artifact

    report = _report(tmp_path)

    @flow
    def summarise() -> str:
        _summary_artifact({"run_id": "r1", "status": "done", "report": str(report)})
        return _summary_markdown()

    monkeypatch.setenv("DEVSWARM_HOME", str(tmp_path))  # the server folder: <home>/server
    served = summarise()
    link = served.split("[HTML report](", 1)[1].split(")", 1)[0]
    assert link.startswith(report_server.reports_url), served
    path = link.removeprefix(f"http://127.0.0.1:{report_server.report_server_port}")
    assert _get(report_server.report_server_port, path) == (200, REPORT.encode())

    monkeypatch.setenv("DEVSWARM_HOME", str(tmp_path / "no-server-here"))
    unserved = summarise()
    assert f"`{report}`" in unserved and "[HTML report]" not in unserved
    assert "file://" not in unserved


def _summary_markdown() -> str:
    """The summary artifact of the running flow run, as the UI shows it."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
    from prefect.runtime import flow_run

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run.id]))
        )
    (summary,) = [a for a in artifacts if a.key == "swarm-summary"]
    return summary.data
