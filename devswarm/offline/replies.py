"""Answering one chat request: the scripted reply, its faults, tool calls and usage (pure)."""

from __future__ import annotations

import json
import math
import time
from fnmatch import fnmatchcase
from typing import Any

from devswarm.offline.canonical import canonical, sha256
from devswarm.offline.faults import break_json, context_length_error, roll_fault, status_error
from devswarm.offline.outcome import Outcome
from devswarm.offline.refusals import malformed_chat_request, refused_chat_request
from devswarm.offline.scenario import (
    ContextLengthFault,
    MalformedArgumentsFault,
    Reply,
    Scenario,
    StatusFault,
    TimeoutFault,
)
from devswarm.offline.tool_text import tool_calls_as_text


def _tokens(text_length: int) -> int:
    # Roughly four characters per token, as OpenAI's rule of thumb says.
    return math.ceil(text_length / 4)


def _text_of(content: object) -> str:
    """Text of a message's content: a string, or the text parts of a content-part list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part["text"]
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""


def _pick_reply(scenario: Scenario, agent: str, messages: list[dict]) -> tuple[Reply | None, str]:
    """The scripted reply for this request and where it came from (for the request log)."""
    for index, rule in enumerate(scenario.rules):
        if not fnmatchcase(agent, rule.match):
            continue
        last = None
        for position, message in enumerate(messages):
            if message.get("role") in ("user", "tool") and rule.contains in _text_of(
                message.get("content")
            ):
                last = position
        if last is None:
            continue
        step = sum(1 for m in messages[last + 1 :] if m.get("role") == "assistant")
        if step < len(rule.steps):
            return rule.steps[step], f"rules[{index}].steps[{step}]"
    step = sum(1 for m in messages if m.get("role") == "assistant")
    for index, script in enumerate(scenario.agents):
        if fnmatchcase(agent, script.match):
            if step < len(script.steps):
                return script.steps[step], f"agents[{index}].steps[{step}]"
            break
    if scenario.default is not None:
        return scenario.default, "default"
    return None, "none"


def _usage(messages: list, tools: object, completion_text: str) -> dict[str, Any]:
    prompt_chars = len(canonical(messages)) + (len(canonical(tools)) if tools else 0)
    prompt_tokens = _tokens(prompt_chars)
    completion_tokens = max(1, _tokens(len(completion_text)))
    last_assistant = max(
        (i for i, m in enumerate(messages) if m.get("role") == "assistant"), default=None
    )
    # Imitates a prefix cache: everything up to the model's own last turn was seen before.
    cached = 0
    if last_assistant is not None:
        cached = min(prompt_tokens, _tokens(len(canonical(messages[: last_assistant + 1]))))
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": cached},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }


def _tool_calls(reply: Reply, request_hash: str) -> list[dict[str, Any]]:
    return [
        {
            "id": "call_" + sha256(f"{request_hash}|{index}|{call.name}")[:24],
            "type": "function",
            "function": {
                "name": call.name,
                "arguments": call.arguments
                if isinstance(call.arguments, str)
                else json.dumps(call.arguments, ensure_ascii=False),
            },
        }
        for index, call in enumerate(reply.tool_calls)
    ]


def answer_chat(scenario: Scenario, agent: str, attempt: int, body: object) -> Outcome:
    """Answer one POST /v1/chat/completions request (pure; the caller sleeps `delay`)."""
    malformed = malformed_chat_request(body)
    if malformed is not None:
        return malformed
    assert isinstance(body, dict)
    messages: list[dict] = body["messages"]
    step = sum(1 for m in messages if m.get("role") == "assistant")
    refused = refused_chat_request(scenario, body)
    if refused is not None:
        refused.step = step
        return refused
    reply, reply_from = _pick_reply(scenario, agent, messages)
    if reply is None:
        reply = Reply(content=f"(offline scenario has no reply for agent {agent} step {step})")

    error: Outcome | None = None
    kind = roll_fault(scenario.faults, agent, step, attempt, messages)
    if reply.fail is not None and attempt <= reply.fail.attempts:
        error = status_error(reply.fail.status, reply.fail.retry_after, step, reply.fail.message)
    elif isinstance(kind, StatusFault):
        error = status_error(kind.status, kind.retry_after, step)
    elif isinstance(kind, ContextLengthFault):
        error = context_length_error(_usage(messages, body.get("tools"), "")["prompt_tokens"], step)
    if error is not None:
        error.reply_from = reply_from
        return error

    request_hash = sha256(canonical(body))
    content = reply.text()
    tool_calls = _tool_calls(reply, request_hash)
    fault: str | None = None
    delay = reply.latency if reply.latency is not None else scenario.latency
    if isinstance(kind, TimeoutFault):
        fault, delay = "timeout", delay + kind.delay
    elif isinstance(kind, MalformedArgumentsFault) and tool_calls:
        function = tool_calls[0]["function"]
        function["arguments"] = break_json(function["arguments"])
        fault = "malformed_arguments"

    if tool_calls and scenario.server.tools != "native":
        # No tool parser on this server: the model's calls arrive as the text it wrote.
        written = tool_calls_as_text(tool_calls, scenario.server.tool_call_text)
        content, tool_calls = (f"{content}\n{written}" if content else written), []

    response, usage = _completion(scenario, body, request_hash, content, tool_calls)
    return Outcome(200, response, {}, delay, fault, step, usage, reply_from)


def _completion(
    scenario: Scenario,
    body: dict,
    request_hash: str,
    content: str | None,
    tool_calls: list[dict[str, Any]],
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The chat.completion body, and its usage (None when the server sends none)."""
    completion_text = (content or "") + "".join(
        call["function"]["name"] + call["function"]["arguments"] for call in tool_calls
    )
    message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None}
    if tool_calls:
        message["tool_calls"] = tool_calls
    response: dict[str, Any] = {
        "id": "chatcmpl-" + request_hash[:24],
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body["model"],
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": "tool_calls" if tool_calls else "stop",
                "logprobs": None,
            }
        ],
    }
    if not scenario.server.usage:
        return response, None  # some servers send no usage at all
    usage = _usage(body["messages"], body.get("tools"), completion_text)
    response["usage"] = usage
    return response, usage
