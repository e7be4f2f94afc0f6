"""The offline model server's HTTP side: a threaded loopback server, its request log, and stop.

Answers come from `routes.answer` (pure); this module reads requests, waits the answer's delay,
sends it and logs it.
"""

from __future__ import annotations

import json
import signal
import socket
import sys
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from devswarm.errors import UserError
from devswarm.offline.imitations import busy_refusal
from devswarm.offline.outcome import Outcome, error
from devswarm.offline.request_log import RequestLog
from devswarm.offline.routes import answer, is_chat
from devswarm.offline.scenario import Scenario

# Scenario is re-exported: `from devswarm.offline.server import ModelServer, Scenario` is the API.
__all__ = ["ModelServer", "Scenario", "serve_forever"]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive; every answer carries Content-Length
    disable_nagle_algorithm = True  # else header and body writes wait ~40 ms for delayed ACKs
    server_version = "devswarm-modelserver"
    sys_version = ""
    server: _HTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the default stderr access log; the JSONL request log is the record."""

    def setup(self) -> None:
        super().setup()
        self.server.owner._track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        except OSError:
            pass  # the client went away; nothing left to flush to it
        finally:
            self.server.owner._track(self.connection, add=False)

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def _serve(self, method: str) -> None:
        owner = self.server.owner
        started = time.monotonic()
        when = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        owner._busy(+1)
        slot: bool | None = None
        try:
            raw = b""
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                length = -1
            if length < 0:
                self.close_connection = True  # the body's end is unknown: the stream is lost
                outcome = error(400, "invalid Content-Length header", "invalid_request_error")
            else:
                raw = self.rfile.read(length) if length else b""
                slot = owner._take_slot() if is_chat(method, self.path) else None
                outcome = busy_refusal() if slot is False else self._answer(method, raw)
            if outcome.delay > 0:
                owner._stopping.wait(outcome.delay)  # overlaps across threads; stop() wakes it
            self._send(outcome)
            log = owner._log  # read once: stop() may drop it meanwhile (a closed log ignores)
            if log is not None:
                log.write(
                    when=when,
                    headers=self.headers,
                    path=urlsplit(self.path).path,
                    raw=raw,
                    outcome=outcome,
                    latency_ms=(time.monotonic() - started) * 1000,
                )
        finally:
            if slot:
                owner._free_slot()
            owner._busy(-1)

    def _answer(self, method: str, raw: bytes) -> Outcome:
        try:
            return answer(self.server.owner.scenario, method, self.path, self.headers, raw)
        except Exception as exc:  # a server bug must still get an answer and a log line
            return error(500, f"offline model server error: {exc!r}", "server_error")

    def _send(self, outcome: Outcome) -> None:
        data = json.dumps(outcome.body, ensure_ascii=False).encode("utf-8")
        try:
            self.send_response(outcome.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in outcome.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
            self.wfile.flush()
        except OSError:  # BrokenPipeError, ConnectionResetError, ...
            # The client timed out and went away (e.g. a timeout fault); that's expected.
            self.close_connection = True


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024  # hundreds of agents may connect at once
    owner: ModelServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], OSError):
            return  # a client hanging up mid-request is not a server error
        super().handle_error(request, client_address)


class ModelServer:
    """The offline model server, serving a scenario in a background thread."""

    def __init__(
        self,
        scenario: Scenario,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        log_path: Path | None = None,
    ) -> None:
        self.scenario = scenario
        self.host = host
        self.port = port
        self.log_path = Path(log_path) if log_path is not None else None
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._log: RequestLog | None = None
        self._state = threading.Condition()
        self._in_flight = 0
        self._chats = 0  # chat requests holding a slot (answering, or waiting out a delay)
        self._queued = 0  # chat requests waiting for a slot (when_busy: queue)
        self._connections: set[socket.socket] = set()

    @property
    def url(self) -> str:
        """Base URL for the openai client, e.g. http://127.0.0.1:PORT/v1."""
        if self._httpd is None:
            raise RuntimeError("the model server is not started")
        return f"http://{self.host}:{self.port}/v1"

    def start(self) -> ModelServer:
        """Bind and serve in a daemon thread; returns self."""
        if self._httpd is not None:
            return self
        try:
            httpd = _HTTPServer((self.host, self.port), _Handler)
        except OSError as exc:
            raise UserError(f"cannot listen on {self.host}:{self.port}: {exc.strerror}") from None
        httpd.owner = self
        self.port = httpd.server_address[1]
        if self.log_path is not None:
            self._log = RequestLog(self.log_path)
        self._stopping.clear()
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=f"modelserver:{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self, grace: float = 5.0) -> None:
        """Stop serving: wake sleeping handlers, let in-flight answers finish, close sockets."""
        httpd = self._httpd
        if httpd is None:
            return
        self._stopping.set()
        with self._state:
            self._state.notify_all()  # queued requests go ahead and answer
        httpd.shutdown()
        with self._state:
            self._state.wait_for(lambda: self._in_flight == 0, timeout=grace)
            connections = list(self._connections)
        for connection in connections:  # idle keep-alive connections block their threads
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=grace)
        if self._log is not None:
            self._log.close()
            self._log = None
        self._httpd = None
        self._thread = None

    def __enter__(self) -> ModelServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _track(self, connection: socket.socket, *, add: bool) -> None:
        with self._state:
            if add:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)

    @property
    def chats_in_flight(self) -> int:
        """Chat requests being answered now (each holds one of `max_concurrent` slots)."""
        with self._state:
            return self._chats

    @property
    def chats_queued(self) -> int:
        """Chat requests waiting for a slot (`when_busy: queue`)."""
        with self._state:
            return self._queued

    def _take_slot(self) -> bool:
        """Whether a chat request may be answered; under `queue` it waits for a free slot."""
        profile = self.scenario.server
        limit = profile.max_concurrent
        with self._state:
            if limit is not None and self._chats >= limit:
                if profile.when_busy == "reject":
                    return False
                self._queued += 1
                self._state.wait_for(lambda: self._chats < limit or self._stopping.is_set())
                self._queued -= 1
            self._chats += 1
            return True

    def _free_slot(self) -> None:
        with self._state:
            self._chats -= 1
            self._state.notify_all()

    def _busy(self, delta: int) -> None:
        with self._state:
            self._in_flight += delta
            self._state.notify_all()


def serve_forever(scenario_path: Path, port: int = 0, log_path: Path | None = None) -> None:
    """Serve a scenario file until SIGINT/SIGTERM; prints 'model server listening on URL'."""
    scenario = Scenario.load(scenario_path)
    done = threading.Event()

    def _on_signal(signum: int, frame: object) -> None:
        done.set()

    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    server = ModelServer(scenario, port=port, log_path=log_path).start()
    try:
        print(f"model server listening on {server.url}", flush=True)
        while not done.wait(1.0):
            pass
    finally:
        server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
