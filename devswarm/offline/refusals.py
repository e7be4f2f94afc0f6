"""Requests the server refuses: malformed ones, and those the scenario's server does not support."""

from __future__ import annotations

from devswarm.offline.imitations import (
    STRUCTURED_OUTPUT_FAULT,
    json_object_refusal,
    json_schema_refusal,
    tools_refusal,
)
from devswarm.offline.outcome import Outcome, error
from devswarm.offline.scenario import Scenario


def malformed_chat_request(body: object) -> Outcome | None:
    """A 400 for a body that is not a chat request this server can answer."""
    if not isinstance(body, dict):
        return error(
            400,
            "We could not parse the JSON body of your request. The body must be a JSON object.",
            "invalid_request_error",
        )
    model = body.get("model")
    if not isinstance(model, str) or not model:
        return error(400, "you must provide a model parameter", "invalid_request_error")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return error(
            400,
            "Invalid 'messages': expected a non-empty array of messages.",
            "invalid_request_error",
            param="messages",
        )
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            return error(
                400,
                f"Invalid 'messages[{index}]': expected an object with a 'role'.",
                "invalid_request_error",
                param=f"messages[{index}]",
            )
    if body.get("stream"):
        return error(
            400,
            "stream is not supported by the offline model server",
            "invalid_request_error",
            param="stream",
            code="unsupported_value",
        )
    return None


def refused_chat_request(scenario: Scenario, body: dict) -> Outcome | None:
    """An error for a well-formed request the scenario's server would refuse."""
    model = body["model"]
    if model not in scenario.models:
        return error(
            404,
            f"The model `{model}` does not exist or you do not have access to it.",
            "invalid_request_error",
            code="model_not_found",
        )
    for field, wanted in (
        ("max_tokens", "max_completion_tokens"),
        ("max_completion_tokens", "max_tokens"),
    ):
        if field in body and scenario.output_limit == wanted:  # as OpenAI answers it
            return error(
                400,
                f"Unsupported parameter: '{field}' is not supported with this model. "
                f"Use '{wanted}' instead.",
                "invalid_request_error",
                param=field,
                code="unsupported_parameter",
                fault="output_limit_unsupported",
            )
    refused = _structured_output_error(scenario, body.get("response_format"))
    return refused if refused is not None else _tools_error(scenario, body)


def _tools_error(scenario: Scenario, body: dict) -> Outcome | None:
    """Ollama refuses `tools` for a model without tool support; vLLM started without a tool
    parser refuses tool_choice "auto", its default when tools are given."""
    style = scenario.server.tools
    if not body.get("tools") or style not in ("ollama", "vllm"):
        return None
    if style == "vllm" and body.get("tool_choice", "auto") != "auto":
        return None
    return tools_refusal(style, body["model"])


def _structured_output_error(scenario: Scenario, response_format: object) -> Outcome | None:
    """Imitate servers without json_schema (JSON mode only) or without response_format at all."""
    if not isinstance(response_format, dict):
        return None
    kind = response_format.get("type")
    if kind in (None, "text"):
        return None
    profile = scenario.server
    if kind == "json_schema" and profile.json_schema != "accepted":
        return json_schema_refusal(profile.json_schema, kind)
    if kind == "json_object" and profile.json_object != "accepted":
        return json_object_refusal(profile.json_object)
    if scenario.structured_output == "json_schema":
        return None
    if scenario.structured_output == "json_object":
        if kind == "json_object":
            return None
        return error(
            400,
            f"response_format {kind} is not supported",
            "invalid_request_error",
            param="response_format",
            fault=STRUCTURED_OUTPUT_FAULT,
        )
    # llama.cpp's server answers an unsupported response_format with a 500.
    return error(
        500,
        f'Unsupported response_format type: "{kind}"',
        "server_error",
        fault=STRUCTURED_OUTPUT_FAULT,
    )
