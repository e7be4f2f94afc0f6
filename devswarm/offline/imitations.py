"""Refusals worded as weak servers word them: their status codes and their body shapes.

Each body is modelled on what the named server answers (from its source, docs and issue
reports), so a client is tested against the shapes it will meet: OpenAI's `{"error": {...}}`,
vLLM's older flat `{"object": "error", ...}`, FastAPI's `{"detail": [...]}`, LM Studio's
`{"error": "text"}`. Every refusal names what it refuses (`json_schema`, `tools`, ...).
"""

from __future__ import annotations

from typing import Any

from devswarm.offline.outcome import Outcome

STRUCTURED_OUTPUT_FAULT = "structured_output_unsupported"
TOOLS_FAULT = "tools_unsupported"
BUSY_FAULT = "server_busy"


def _literal_error(kind: str) -> dict[str, Any]:
    # Pydantic's error for a `Literal["text", "json_object"]` field, as FastAPI reports it.
    return {
        "type": "literal_error",
        "loc": ("body", "response_format", "type"),
        "msg": "Input should be 'text' or 'json_object'",
        "input": kind,
        "ctx": {"expected": "'text' or 'json_object'"},
    }


def json_schema_refusal(style: str, kind: str) -> Outcome:
    """A server that lacks `response_format` type `kind` refusing it, in `style`'s words."""
    fault = STRUCTURED_OUTPUT_FAULT
    if style == "vllm":
        # vLLM before json_schema support (0.5.x): the validation errors' repr, flat body.
        body: Any = {
            "object": "error",
            "message": repr([_literal_error(kind)]),
            "type": "BadRequestError",
            "param": None,
            "code": 400,
        }
        return Outcome(400, body, {}, fault=fault)
    if style == "fastapi":
        # A FastAPI server that lets its request validation answer: 422 with `detail`.
        return Outcome(422, {"detail": [_literal_error(kind)]}, {}, fault=fault)
    if style == "llama-cpp-python":
        # Its route handler turns the validation error into a 500 with the error's text.
        message = f"1 validation error:\n  {_literal_error(kind)!r}\n"
        body = {
            "error": {
                "message": message,
                "type": "internal_server_error",
                "param": None,
                "code": None,
            }
        }
        return Outcome(500, body, {}, fault=fault)
    if style == "llama.cpp":
        message = f'response_format type must be one of "text" or "json_object", but got: {kind}'
        body = {"error": {"code": 500, "message": message, "type": "server_error"}}
        return Outcome(500, body, {}, fault=fault)
    raise ValueError(f"no json_schema refusal style {style!r}")


def json_object_refusal(style: str) -> Outcome:
    """A server that only knows json_schema refusing JSON mode (LM Studio's plain-text error)."""
    if style == "lm-studio":
        body = {"error": "'response_format.type' must be 'json_schema'"}
        return Outcome(400, body, {}, fault=STRUCTURED_OUTPUT_FAULT)
    raise ValueError(f"no json_object refusal style {style!r}")


def tools_refusal(style: str, model: str) -> Outcome:
    """A server that cannot call tools refusing a request that carries `tools`."""
    if style == "ollama":
        message = f"{model} does not support tools"
        body = {"error": {"message": message, "type": "api_error", "param": None, "code": None}}
        return Outcome(400, body, {}, fault=TOOLS_FAULT)
    if style == "vllm":
        # Started without --enable-auto-tool-choice; its tool_choice defaults to "auto".
        message = (
            '"auto" tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set'
        )
        body = {
            "error": {"message": message, "type": "BadRequestError", "param": None, "code": 400}
        }
        return Outcome(400, body, {}, fault=TOOLS_FAULT)
    raise ValueError(f"no tools refusal style {style!r}")


def busy_refusal() -> Outcome:
    """Ollama's 503 when its queue of pending requests is full (OLLAMA_MAX_QUEUE)."""
    message = "server busy, please try again.  maximum pending requests exceeded"
    body = {"error": {"message": message, "type": "api_error", "param": None, "code": None}}
    return Outcome(503, body, {}, fault=BUSY_FAULT)
