"""What the server sends for one request, and OpenAI-shaped error bodies."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class Outcome:
    """What to send for one HTTP request, and what to record about it."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str]
    delay: float = 0.0
    fault: str | None = None
    step: int | None = None
    usage: dict[str, Any] | None = None
    reply_from: str | None = None


def error(
    status: int,
    message: str,
    type_: str,
    *,
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
    fault: str | None = None,
    step: int | None = None,
) -> Outcome:
    """An error answer with OpenAI's body shape: {"error": {message, type, param, code}}."""
    body = {"error": {"message": message, "type": type_, "param": param, "code": code}}
    return Outcome(status, body, headers or {}, fault=fault, step=step)
