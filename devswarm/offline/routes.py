"""Answering one HTTP request by method and path (pure: no I/O, no sleeping)."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

from devswarm.offline.outcome import Outcome, error
from devswarm.offline.replies import answer_chat
from devswarm.offline.scenario import Scenario

AGENT_HEADER = "X-Devswarm-Agent"
ATTEMPT_HEADER = "X-Devswarm-Attempt"


def is_chat(method: str, path: str) -> bool:
    """Whether a request is a chat completion (what a server's concurrency limit counts)."""
    return method == "POST" and urlsplit(path).path.rstrip("/") == "/v1/chat/completions"


def _model_object(model_id: str) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": 0, "owned_by": "devswarm"}


def answer(scenario: Scenario, method: str, path: str, headers: Any, raw: bytes) -> Outcome:
    """Answer one HTTP request (pure; `headers` is any mapping with .get)."""
    route = urlsplit(path).path.rstrip("/")
    agent = headers.get(AGENT_HEADER) or ""
    if method == "GET" and route == "/v1/models":
        listed = scenario.server.listed_models
        models = scenario.models if listed is None else listed
        return Outcome(200, {"object": "list", "data": [_model_object(m) for m in models]}, {})
    if method == "GET" and route.startswith("/v1/models/"):
        model_id = route.removeprefix("/v1/models/")
        if model_id in scenario.models:
            return Outcome(200, _model_object(model_id), {})
        return error(
            404,
            f"The model '{model_id}' does not exist",
            "invalid_request_error",
            param="model",
            code="model_not_found",
        )
    if is_chat(method, path):
        try:
            attempt = int(headers.get(ATTEMPT_HEADER) or 1)
        except ValueError:
            return error(
                400,
                f"invalid {ATTEMPT_HEADER} header: expected an integer",
                "invalid_request_error",
            )
        try:
            body = json.loads(raw or b"null")
        except ValueError:
            body = None  # reported as an unparsable body by the validation
        return answer_chat(scenario, agent, attempt, body)
    return error(404, f"Invalid URL ({method} {route or '/'})", "invalid_request_error")
