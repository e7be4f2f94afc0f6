"""Injected faults: scripted and seeded random error statuses, context-length errors, broken JSON."""

from __future__ import annotations

import json
import random

from devswarm.offline.canonical import canonical, sha256
from devswarm.offline.outcome import Outcome, error
from devswarm.offline.scenario import FaultKind, Faults

CONTEXT_WINDOW = 128_000  # only quoted in the context_length_exceeded message


# Error bodies like OpenAI's for the statuses a fault can ask for: (type, code, message).
STATUS_ERRORS: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "Bad request (injected fault)."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    403: ("permission_error", None, "You are not allowed to make this request."),
    404: ("invalid_request_error", None, "Not found."),
    408: ("timeout", None, "Request timed out."),
    409: ("conflict", None, "Conflict, please retry."),
    429: (
        "rate_limit_exceeded",
        "rate_limit_exceeded",
        "Rate limit reached for requests. Please try again later.",
    ),
    500: (
        "server_error",
        None,
        "The server had an error while processing your request. Sorry about that!",
    ),
    502: ("server_error", None, "Bad gateway."),
    503: ("server_error", None, "The engine is currently overloaded, please try again later."),
    504: ("server_error", None, "Gateway timeout."),
}


def status_error(
    status: int, retry_after: float | None, step: int, message: str | None = None
) -> Outcome:
    """An injected error status with OpenAI's body for it, and Retry-After when given."""
    default_type = "server_error" if status >= 500 else "invalid_request_error"
    type_, code, text = STATUS_ERRORS.get(status, (default_type, None, f"Error {status}."))
    headers: dict[str, str] = {}
    if retry_after is not None:
        # OpenAI sends both; the openai client prefers retry-after-ms and accepts float seconds.
        seconds = int(retry_after) if float(retry_after).is_integer() else retry_after
        headers["Retry-After"] = str(seconds)
        headers["retry-after-ms"] = str(round(retry_after * 1000))
    return error(
        status,
        message or text,
        type_,
        code=code,
        headers=headers,
        fault=f"status:{status}",
        step=step,
    )


def context_length_error(prompt_tokens: int, step: int) -> Outcome:
    """OpenAI's 400 context_length_exceeded, quoting a prompt just over the window."""
    return error(
        400,
        f"This model's maximum context length is {CONTEXT_WINDOW} tokens. "
        f"However, your messages resulted in {CONTEXT_WINDOW + prompt_tokens} tokens. "
        "Please reduce the length of the messages.",
        "invalid_request_error",
        param="messages",
        code="context_length_exceeded",
        fault="context_length_exceeded",
        step=step,
    )


def break_json(arguments: str) -> str:
    """Arguments that are certainly not valid JSON: the first half, plus '{' if still valid."""
    cut = arguments[: len(arguments) // 2]
    try:
        json.loads(cut)
    except ValueError:
        return cut
    return cut + "{"  # a valid JSON value followed by more text never parses


def roll_fault(
    faults: Faults, agent: str, step: int, attempt: int, messages: list
) -> FaultKind | None:
    """The seeded random fault for this request, if any (same request, same answer)."""
    if faults.rate <= 0 or attempt > faults.max_attempt:
        return None
    rng = random.Random(f"{faults.seed}|{agent}|{step}|{attempt}|{sha256(canonical(messages))}")
    if rng.random() >= faults.rate:
        return None
    return rng.choices(faults.kinds, weights=[kind.weight for kind in faults.kinds])[0]
