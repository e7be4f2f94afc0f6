"""The server's JSONL request log: one line per HTTP request, written under a lock, flushed."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from devswarm.offline.outcome import Outcome
from devswarm.offline.routes import AGENT_HEADER, ATTEMPT_HEADER


class RequestLog:
    """An append-only JSONL file shared by the handler threads; fields in docs/model-server.md."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._file: Any = path.open("a", encoding="utf-8")

    def write(
        self,
        *,
        when: str,
        headers: Any,
        path: str,
        raw: bytes,
        outcome: Outcome,
        latency_ms: float,
    ) -> None:
        """Append the line for one answered request (a no-op once closed)."""
        try:
            attempt = int(headers.get(ATTEMPT_HEADER) or 1)
        except ValueError:
            attempt = None
        request: Any = None
        if raw:
            try:
                request = json.loads(raw)
            except ValueError:
                request = raw.decode("utf-8", errors="replace")
        line = {
            "time": when,
            "agent": headers.get(AGENT_HEADER) or "",
            "attempt": attempt,
            "step": outcome.step,
            "path": path,
            "request": request,
            "status": outcome.status,
            "response": outcome.body,
            "usage": outcome.usage,
            "latency_ms": round(latency_ms, 3),
            "fault": outcome.fault,
            "reply_from": outcome.reply_from,
        }
        text = json.dumps(line, ensure_ascii=False) + "\n"
        with self._lock:
            if self._file is not None:
                self._file.write(text)
                self._file.flush()

    def close(self) -> None:
        """Close the file; later writes are dropped (a handler may outlive stop's grace)."""
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None
