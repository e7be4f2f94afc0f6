"""What keeps an agent alive where the server, not the model, is the problem.

- Context: old tool outputs are cut (head and tail) in what is sent; after a
  `context_length_exceeded` the request goes once more with every tool output cut hard.
- Structured output: a request with `response_format` that the server refuses (a 4xx, or a 5xx
  still failing after the caller's retries: llama.cpp answers 500) is sent again with the JSON
  schema in the prompt, in JSON mode where the refusal offers it, else without a format. The
  JSON-in-text answer is parsed here.
- Output limit: OpenAI's newest models refuse `max_tokens` and name `max_completion_tokens`;
  some servers the reverse. The other field is tried once.
- Tools: a server that refuses `tools` (Ollama: "<model> does not support tools") gets them
  described in the prompt instead, and the calls are read from the text.

`next_fallback` decides which of these a failed request takes; the loop carries it out.
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal

from pydantic import BaseModel

from devswarm.model.errors import ModelCallError

KEEP_RECENT = 8  # the last messages, whose tool outputs are not shortened
TOOL_OUTPUT_BUDGET = 3000  # characters an older tool output may keep
HARD_BUDGET = 600  # characters any tool output keeps after a context_length_exceeded
FENCE = re.compile(r"^```(?:json)?\s*|\s*```$", re.MULTILINE)
OUTPUT_LIMITS = ("max_tokens", "max_completion_tokens")

Fallback = Literal["shorten", "output_limit", "text_tools", "no_response_format"]


def shorten(text: str, keep: int) -> str:
    """Head and tail of a long text with a note of what was cut."""
    if len(text) <= keep:
        return text
    half = keep // 2
    return f"{text[:half]}\n[... {len(text) - 2 * half} characters of tool output cut ...]\n{text[-half:]}"


def prepare_messages(
    messages: list[dict[str, Any]],
    budget: int = TOOL_OUTPUT_BUDGET,
    keep_recent: int = KEEP_RECENT,
) -> list[dict[str, Any]]:
    """The messages to send: tool outputs older than the last `keep_recent` messages and longer
    than `budget` characters keep their head and tail (deterministically, so a rerun sends the
    same bytes). The agent's own history is never changed."""
    cut = len(messages) - keep_recent
    out = []
    for i, m in enumerate(messages):
        if i < cut and m.get("role") == "tool" and len(m.get("content") or "") > budget:
            m = {**m, "content": shorten(m["content"], budget)}
        out.append(m)
    return out


def schema_prompt(schema: type[BaseModel]) -> str:
    """The instruction that replaces `response_format` on servers without structured output."""
    return (
        f"Answer format: when you give your final answer, reply with one JSON object (no code "
        f"fences, no other text) that validates against this JSON schema of "
        f"{schema.__name__}:\n"
        + json.dumps(schema.model_json_schema(), separators=(",", ":"), sort_keys=True)
    )


def format_refused(exc: ModelCallError) -> bool:
    """Whether a failed request with `response_format` may succeed without it: the server
    refused the request (not the key, not the model) or kept failing with a 5xx."""
    if exc.status is None or exc.error_type == "context_length_exceeded":
        return False
    if exc.status >= 500:
        return True
    return not exc.transient and exc.status not in (401, 403, 404)


def json_mode_offered(exc: ModelCallError) -> bool:
    """Whether a refusal of json_schema says JSON mode is allowed instead (vLLM, llama.cpp and
    llama-cpp-python: "must be one of text or json_object"). Those servers constrain JSON mode
    to a schema given beside it, so even a small model answers valid JSON."""
    return exc.unsupported == "response_format" and "json_object" in str(exc)


def json_mode(schema: type[BaseModel]) -> dict[str, Any]:
    """The response_format of JSON mode, with the schema (llama.cpp and llama-cpp-python turn it
    into a grammar; others ignore it). Every property is required there, as in OpenAI's strict
    mode: a grammar lets a small model skip what is optional, and it skips the tasks."""
    return {"type": "json_object", "schema": every_field_required(schema.model_json_schema())}


def every_field_required(node: Any) -> Any:
    """A JSON schema with every object's properties required, all the way down."""
    if isinstance(node, list):
        return [every_field_required(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: every_field_required(v) for k, v in node.items()}
    if isinstance(out.get("properties"), dict):
        out["required"] = list(out["properties"])
    return out


def other_output_limit(exc: ModelCallError, field: str) -> str | None:
    """The field to cap the answer with instead, when the server refused `field` (OpenAI's
    newest models refuse `max_tokens` and name `max_completion_tokens`; some servers the reverse)."""
    other = OUTPUT_LIMITS[1 - OUTPUT_LIMITS.index(field)]
    text = str(exc)
    if exc.status == 400 and field in text and other in text:
        return other
    return None


def next_fallback(
    exc: ModelCallError,
    request: dict[str, Any],
    *,
    shortened: bool,
    output_limit: str,
    tried_limits: set[str],
) -> tuple[Fallback, str | None] | None:
    """The fallback a failed request takes next, with the output-limit field to switch to for
    `output_limit`; None: none is left and the error stands. Each is taken at most once."""
    if exc.error_type == "context_length_exceeded" and not shortened:
        return "shorten", None
    if other := other_output_limit(exc, output_limit):
        return None if other in tried_limits else ("output_limit", other)
    if exc.unsupported == "tools" and "tools" in request:  # before the format: both may be sent
        return "text_tools", None
    if "response_format" in request and format_refused(exc):
        return "no_response_format", None
    return None


def parse_json_answer(content: str | None, schema: type[BaseModel]) -> BaseModel:
    """Parse a structured answer, tolerating code fences around the JSON."""
    text = FENCE.sub("", (content or "").strip()).strip()
    start, end = text.find("{"), text.rfind("}")
    if start > 0 and end > start:
        text = text[start : end + 1]
    return schema.model_validate_json(text)
