"""A failed model call: what kind of failure it is, and how long to wait before trying again.

Weak servers refuse what they don't support in many ways: OpenAI answers 400 with the field in
`param`; Ollama 400 "<model> does not support tools"; vLLM and llama-cpp-python 422 with a
validation error naming the field; llama.cpp and llama-cpp-python 500 "response_format type must
be one of ...". A refusal that names a field we sent is `unsupported` (not transient: sending the
same request again cannot help), as is a prompt longer than the model's context, whatever the
status. Everything else keeps the usual rule: 408/409/425/429 and 5xx are worth retrying.
"""

from __future__ import annotations

import re
from typing import Any

import openai

TRANSIENT_STATUS = {408, 409, 425, 429}
MAX_BACKOFF = 60.0  # seconds; a longer Retry-After is cut to this
# Words of a 429 that means "too many requests at once" (a local server's queue), not a quota.
BUSY_WORDS = ("busy", "overloaded", "pending requests", "concurrent", "capacity", "slots")

# The request fields a server may refuse, and the words its refusal may use for them. A field
# only counts when the request had it; parallel_tool_calls before tools (its name holds "tool").
FIELD_WORDS: dict[str, tuple[str, ...]] = {
    "response_format": ("response_format", "json_schema", "json schema", "structured output"),
    "parallel_tool_calls": ("parallel_tool_calls", "parallel tool calls"),
    # vLLM without a tool parser: '"auto" tool choice requires --enable-auto-tool-choice ...'
    "tools": (
        "tool_choice",
        "tool choice",
        "tools",
        "tool calling",
        "function calling",
        "tool use",
        "tool-call-parser",
    ),
    "max_completion_tokens": ("max_completion_tokens",),
    "max_tokens": ("max_tokens",),
}
REFUSAL = re.compile(
    r"not supported|unsupported|does not support|doesn't support|not allowed|must be one of"
    r"|only\b.{0,60}\b(?:allowed|supported)|extra inputs are not permitted|extra_forbidden"
    r"|unrecognized|unknown (?:field|parameter|argument)|not permitted|requires|input should be"
    r"|not available|invalid (?:type|value)",
    re.IGNORECASE,
)
CONTEXT = re.compile(
    r"context length|context window|context size|maximum context|exceeds? (?:the )?"
    r"(?:available |maximum )?context|too many tokens|prompt is too long",
    re.IGNORECASE,
)
WINDOW = re.compile(
    r"(?:maximum context length is|context window of|context size \(|n_ctx\W+)\s*(\d+)",
    re.IGNORECASE,
)


class ModelCallError(Exception):
    """A failed HTTP attempt. `transient` ones are worth retrying.

    `unsupported`: the request field the server refused (response_format, tools,
    parallel_tool_calls, max_tokens, max_completion_tokens), if it named one.
    `context_window`: the model's context in tokens, when a context_length_exceeded said it."""

    def __init__(
        self,
        message: str,
        *,
        transient: bool,
        status: int | None = None,
        error_type: str = "error",
        retry_after: float | None = None,
        unsupported: str | None = None,
        context_window: int | None = None,
    ) -> None:
        super().__init__(message)
        self.transient = transient
        self.status = status
        self.error_type = error_type
        self.retry_after = retry_after
        self.unsupported = unsupported
        self.context_window = context_window

    @property
    def busy(self) -> bool:
        """The server is busy with the calls in flight (a full queue), not rate-limiting."""
        text = str(self).lower()
        return self.status == 503 or (
            self.status == 429 and any(w in text for w in BUSY_WORDS) and "rate" not in text
        )

    @property
    def expected(self) -> bool:
        """A refusal devswarm works around or reports in one line (a field the server does not
        support, a prompt over the context): nothing for a traceback."""
        return not self.transient and (
            self.unsupported is not None or self.error_type == "context_length_exceeded"
        )

    def as_dict(self) -> dict[str, Any]:
        """The error as JSON-safe data (to cross a boundary that would log a raised one)."""
        return {
            "message": str(self),
            "transient": self.transient,
            "status": self.status,
            "error_type": self.error_type,
            "retry_after": self.retry_after,
            "unsupported": self.unsupported,
            "context_window": self.context_window,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelCallError:
        """The error `as_dict` described."""
        return cls(data["message"], **{k: v for k, v in data.items() if k != "message"})


def backoff_seconds(exc: ModelCallError, attempt: int) -> float:
    """How long to wait before attempt `attempt + 1`: the server's Retry-After when it sent one
    (0 included: it means now), else 1 s, 2 s, 4 s, ... doubling; never more than a minute."""
    wait = exc.retry_after if exc.retry_after is not None else 0.5 * 2**attempt
    return min(wait, MAX_BACKOFF)


def refused_field(status: int, text: str, param: str | None, request: dict[str, Any]) -> str | None:
    """The field of `request` that a refusal (`status`, its body as `text`) says the server
    does not support, or None when it names none."""
    if status not in (400, 422) and status < 500:
        return None
    if status in (400, 422) and param in request and param in FIELD_WORDS:
        return param
    if not REFUSAL.search(text):
        return None
    lowered = text.lower()
    named = []
    for field, words in FIELD_WORDS.items():
        if field not in request:
            continue
        found = [i for i in (lowered.find(w) for w in words) if i >= 0]
        if found:
            named.append((min(found), field))
    return min(named)[1] if named else None


def context_exceeded(status: int, text: str, code: str | None, type_: str | None) -> bool:
    """Whether an error says the prompt is longer than the model's context (any status: llama.cpp
    has answered both 400 and 500 for it)."""
    if code == "context_length_exceeded" or type_ == "exceed_context_size_error":
        return True
    return (status in (400, 413, 422) or status >= 500) and bool(CONTEXT.search(text))


def from_status_error(exc: openai.APIStatusError, request: dict[str, Any]) -> ModelCallError:
    """The ModelCallError for an HTTP error answer to `request`."""
    status = exc.status_code
    body = exc.body if isinstance(exc.body, dict) else {}
    inner = body.get("error", body) if isinstance(body.get("error"), dict) else body
    code = inner.get("code") if isinstance(inner.get("code"), str) else None
    type_ = inner.get("type") if isinstance(inner.get("type"), str) else None
    param = inner.get("param") if isinstance(inner.get("param"), str) else None
    text = f"{exc.message} {body}"
    message = str(exc.message)
    if body and message == f"Error code: {status}":  # FastAPI's {"detail": ...}: the body says it
        message = f"{message} - {body}"
    message = " ".join(message.split())[:500]  # one line
    if context_exceeded(status, text, code, type_):
        window = inner.get("n_ctx")
        if not isinstance(window, int):
            match = WINDOW.search(text)
            window = int(match.group(1)) if match else None
        size = f" ({window} tokens)" if window else ""
        return ModelCallError(
            f"the prompt is longer than the model's context window{size}: {message}",
            transient=False,
            status=status,
            error_type="context_length_exceeded",
            context_window=window,
        )
    field = refused_field(status, text, param, request)
    if field is not None:
        return ModelCallError(
            message,
            transient=False,
            status=status,
            error_type=code or "unsupported_parameter",
            unsupported=field,
        )
    return ModelCallError(
        message,
        transient=status in TRANSIENT_STATUS or status >= 500,
        status=status,
        error_type=code or type(exc).__name__,
        retry_after=_retry_after(exc),
    )


def _retry_after(exc: openai.APIStatusError) -> float | None:
    value = exc.response.headers.get("retry-after") if exc.response is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
