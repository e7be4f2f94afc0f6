"""Tool calls written as text, in the styles models use when the server does not parse them.

A server without native tool calling (tools ignored, or refused and the client falls back to
describing its tools in the prompt) hands back what the model wrote. Open models write their
calls in the format they were trained on; these are the common ones.
"""

from __future__ import annotations

import json
from typing import Any


def _call_object(function: dict[str, Any], arguments_key: str) -> str:
    # The arguments are already JSON text (or broken on purpose): embedded as the model wrote
    # them, so a malformed-arguments fault stays malformed in the text.
    arguments = function["arguments"] or "{}"
    return f'{{"name": {json.dumps(function["name"])}, "{arguments_key}": {arguments}}}'


def _one_or_array(objects: list[str]) -> str:
    return objects[0] if len(objects) == 1 else "[" + ", ".join(objects) + "]"


def tool_calls_as_text(tool_calls: list[dict[str, Any]], style: str) -> str:
    """The OpenAI-shaped `tool_calls` written as a model in `style` writes them."""
    functions = [call["function"] for call in tool_calls]
    if style == "hermes":  # Hermes, Qwen 2.5/3: one tagged JSON object per call
        return "\n".join(
            f"<tool_call>\n{_call_object(f, 'arguments')}\n</tool_call>" for f in functions
        )
    if style == "llama3":  # Llama 3.1/3.2 JSON tool calling: "parameters", ';' between calls
        return "<|python_tag|>" + "; ".join(_call_object(f, "parameters") for f in functions)
    if style == "mistral":  # Mistral before its v11 tokenizer: one JSON array after the token
        return "[TOOL_CALLS] [" + ", ".join(_call_object(f, "arguments") for f in functions) + "]"
    objects = [_call_object(f, "arguments") for f in functions]
    if style == "fenced":
        return "```json\n" + _one_or_array(objects) + "\n```"
    if style == "json":
        return _one_or_array(objects)
    raise ValueError(f"no tool call text style {style!r}")
