"""Offline OpenAI-compatible model server with scripted replies, latency and injected faults.

Tests and `devswarm demo` point the real openai client at it over HTTP on 127.0.0.1. Every
answer is a pure function of the scenario and the request (agent header, attempt header,
messages), never of counters kept in the server, so retries and resumed runs see the same
replies a real deterministic model would give. The scenario and request-log formats are
documented in docs/model-server.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import random
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from fnmatch import fnmatchcase
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from devswarm.errors import UserError

AGENT_HEADER = "X-Devswarm-Agent"
ATTEMPT_HEADER = "X-Devswarm-Attempt"
CONTEXT_WINDOW = 128_000  # only quoted in the context_length_exceeded message

# ---------------------------------------------------------------------------------------------
# Scenario


class _Strict(BaseModel):
    # A typo in a scenario should fail loudly, not silently change the script.
    model_config = ConfigDict(extra="forbid")


class ScriptedFail(_Strict):
    """A scripted fault: answer `status` while the request's attempt <= `attempts`."""

    status: int = Field(ge=400, le=599)
    retry_after: float | None = Field(default=None, ge=0)
    attempts: int = Field(default=1, ge=1)
    message: str | None = None


class ToolCallSpec(_Strict):
    """One tool call in a scripted reply; `arguments` is JSON-encoded unless already a string."""

    name: str = Field(min_length=1)
    arguments: dict[str, Any] | str = Field(default_factory=dict)


class Reply(_Strict):
    """One scripted assistant reply."""

    content: str | None = None
    tool_calls: list[ToolCallSpec] = Field(default_factory=list)
    json_value: Any = Field(default=None, alias="json")
    latency: float | None = Field(default=None, ge=0)
    fail: ScriptedFail | None = None

    @model_validator(mode="after")
    def _content_or_json(self) -> Reply:
        if self.has_json and self.content is not None:
            raise ValueError("a reply has either content or json, not both")
        return self

    @property
    def has_json(self) -> bool:
        """Whether the scenario gave a `json` key (its value may be null)."""
        return "json_value" in self.model_fields_set

    def text(self) -> str | None:
        """The assistant message content this reply produces."""
        if self.has_json:
            return json.dumps(self.json_value, ensure_ascii=False)
        if self.content is None and not self.tool_calls:
            return ""
        return self.content


class StatusFault(_Strict):
    """Answer with an HTTP error status (and a Retry-After header when given)."""

    type: Literal["status"]
    status: int = Field(ge=400, le=599)
    retry_after: float | None = Field(default=None, ge=0)
    weight: float = Field(default=1.0, gt=0)


class TimeoutFault(_Strict):
    """Sleep `delay` seconds, then answer normally (the client has usually given up by then)."""

    type: Literal["timeout"]
    delay: float = Field(default=30.0, ge=0)
    weight: float = Field(default=1.0, gt=0)


class MalformedArgumentsFault(_Strict):
    """Cut the first tool call's arguments so they are not valid JSON."""

    type: Literal["malformed_arguments"]
    weight: float = Field(default=1.0, gt=0)


class ContextLengthFault(_Strict):
    """Answer 400 context_length_exceeded as OpenAI does."""

    type: Literal["context_length_exceeded"]
    weight: float = Field(default=1.0, gt=0)


FaultKind = Annotated[
    StatusFault | TimeoutFault | MalformedArgumentsFault | ContextLengthFault,
    Field(discriminator="type"),
]


class Faults(_Strict):
    """Seeded random faults: a fraction `rate` of requests with attempt <= max_attempt."""

    seed: int | str = 0
    rate: float = Field(default=0.0, ge=0.0, le=1.0)
    max_attempt: int = Field(default=3, ge=0)
    kinds: list[FaultKind] = Field(default_factory=list)

    @model_validator(mode="after")
    def _kinds_when_rate(self) -> Faults:
        if self.rate > 0 and not self.kinds:
            raise ValueError("faults.rate > 0 needs at least one entry in faults.kinds")
        return self


class Rule(_Strict):
    """Steps for agents matching `match` once a user/tool message contains `contains`."""

    match: str = "*"
    contains: str = Field(min_length=1)
    steps: list[Reply] = Field(default_factory=list)


class AgentScript(_Strict):
    """Steps for agents whose id matches the fnmatch pattern `match`."""

    match: str
    steps: list[Reply] = Field(default_factory=list)


class Scenario(_Strict):
    """What the offline server answers; see docs/model-server.md."""

    models: list[str] = Field(default_factory=lambda: ["offline-model"], min_length=1)
    latency: float = Field(default=0.0, ge=0)
    structured_output: Literal["json_schema", "json_object", "none"] = "json_schema"
    # The request field capping the answer's length: OpenAI's newest models refuse max_tokens.
    output_limit: Literal["max_tokens", "max_completion_tokens", "either"] = "either"
    faults: Faults = Field(default_factory=Faults)
    rules: list[Rule] = Field(default_factory=list)
    agents: list[AgentScript] = Field(default_factory=list)
    default: Reply | None = None

    @classmethod
    def from_data(cls, data: object, source: str = "scenario") -> Scenario:
        """Validate a parsed scenario; raises UserError with a one-line message."""
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            errors = exc.errors()
            first = errors[0]
            where = ".".join(str(part) for part in first["loc"]) or "(top level)"
            more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
            raise UserError(f"{source}: {where}: {first['msg']}{more}") from None

    @classmethod
    def load(cls, path: Path) -> Scenario:
        """Read and validate a scenario JSON file; raises UserError with a one-line message."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise UserError(f"scenario file not found: {path}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise UserError(f"cannot read scenario {path}: {exc}") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UserError(
                f"{path}: not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
            ) from None
        return cls.from_data(data, source=str(path))


# ---------------------------------------------------------------------------------------------
# Answering one request (pure: no I/O, no sleeping)


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


def _canonical(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


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


def _error(
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
    body = {"error": {"message": message, "type": type_, "param": param, "code": code}}
    return Outcome(status, body, headers or {}, fault=fault, step=step)


# Error bodies like OpenAI's for the statuses a fault can ask for: (type, code, message).
_STATUS_ERRORS: dict[int, tuple[str, str | None, str]] = {
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


def _status_error(
    status: int, retry_after: float | None, step: int, message: str | None = None
) -> Outcome:
    default_type = "server_error" if status >= 500 else "invalid_request_error"
    type_, code, text = _STATUS_ERRORS.get(status, (default_type, None, f"Error {status}."))
    headers: dict[str, str] = {}
    if retry_after is not None:
        # OpenAI sends both; the openai client prefers retry-after-ms and accepts float seconds.
        seconds = int(retry_after) if float(retry_after).is_integer() else retry_after
        headers["Retry-After"] = str(seconds)
        headers["retry-after-ms"] = str(round(retry_after * 1000))
    return _error(
        status,
        message or text,
        type_,
        code=code,
        headers=headers,
        fault=f"status:{status}",
        step=step,
    )


def _break_json(arguments: str) -> str:
    """Arguments that are certainly not valid JSON: the first half, plus '{' if still valid."""
    cut = arguments[: len(arguments) // 2]
    try:
        json.loads(cut)
    except ValueError:
        return cut
    return cut + "{"  # a valid JSON value followed by more text never parses


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
    prompt_chars = len(_canonical(messages)) + (len(_canonical(tools)) if tools else 0)
    prompt_tokens = _tokens(prompt_chars)
    completion_tokens = max(1, _tokens(len(completion_text)))
    last_assistant = max(
        (i for i, m in enumerate(messages) if m.get("role") == "assistant"), default=None
    )
    # Imitates a prefix cache: everything up to the model's own last turn was seen before.
    cached = 0
    if last_assistant is not None:
        cached = min(prompt_tokens, _tokens(len(_canonical(messages[: last_assistant + 1]))))
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": cached},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }


def _structured_output_error(scenario: Scenario, response_format: object) -> Outcome | None:
    """Imitate servers without json_schema (JSON mode only) or without response_format at all."""
    if not isinstance(response_format, dict):
        return None
    kind = response_format.get("type")
    if kind in (None, "text") or scenario.structured_output == "json_schema":
        return None
    if scenario.structured_output == "json_object":
        if kind == "json_object":
            return None
        return _error(
            400,
            f"response_format {kind} is not supported",
            "invalid_request_error",
            param="response_format",
            fault="structured_output_unsupported",
        )
    # llama.cpp's server answers an unsupported response_format with a 500.
    return _error(
        500,
        f'Unsupported response_format type: "{kind}"',
        "server_error",
        fault="structured_output_unsupported",
    )


def _malformed_chat_request(body: object) -> Outcome | None:
    """A 400 for a body that is not a chat request this server can answer."""
    if not isinstance(body, dict):
        return _error(
            400,
            "We could not parse the JSON body of your request. The body must be a JSON object.",
            "invalid_request_error",
        )
    model = body.get("model")
    if not isinstance(model, str) or not model:
        return _error(400, "you must provide a model parameter", "invalid_request_error")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return _error(
            400,
            "Invalid 'messages': expected a non-empty array of messages.",
            "invalid_request_error",
            param="messages",
        )
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            return _error(
                400,
                f"Invalid 'messages[{index}]': expected an object with a 'role'.",
                "invalid_request_error",
                param=f"messages[{index}]",
            )
    if body.get("stream"):
        return _error(
            400,
            "stream is not supported by the offline model server",
            "invalid_request_error",
            param="stream",
            code="unsupported_value",
        )
    return None


def _refused_chat_request(scenario: Scenario, body: dict) -> Outcome | None:
    """An error for a well-formed request the scenario's server would refuse."""
    model = body["model"]
    if model not in scenario.models:
        return _error(
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
            return _error(
                400,
                f"Unsupported parameter: '{field}' is not supported with this model. "
                f"Use '{wanted}' instead.",
                "invalid_request_error",
                param=field,
                code="unsupported_parameter",
                fault="output_limit_unsupported",
            )
    return _structured_output_error(scenario, body.get("response_format"))


def _roll_fault(
    faults: Faults, agent: str, step: int, attempt: int, messages: list
) -> FaultKind | None:
    """The seeded random fault for this request, if any (same request, same answer)."""
    if faults.rate <= 0 or attempt > faults.max_attempt:
        return None
    rng = random.Random(f"{faults.seed}|{agent}|{step}|{attempt}|{_sha256(_canonical(messages))}")
    if rng.random() >= faults.rate:
        return None
    return rng.choices(faults.kinds, weights=[kind.weight for kind in faults.kinds])[0]


def _context_length_error(prompt_tokens: int, step: int) -> Outcome:
    return _error(
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


def _tool_calls(reply: Reply, request_hash: str) -> list[dict[str, Any]]:
    return [
        {
            "id": "call_" + _sha256(f"{request_hash}|{index}|{call.name}")[:24],
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
    malformed = _malformed_chat_request(body)
    if malformed is not None:
        return malformed
    assert isinstance(body, dict)
    messages: list[dict] = body["messages"]
    step = sum(1 for m in messages if m.get("role") == "assistant")
    refused = _refused_chat_request(scenario, body)
    if refused is not None:
        refused.step = step
        return refused
    reply, reply_from = _pick_reply(scenario, agent, messages)
    if reply is None:
        reply = Reply(content=f"(offline scenario has no reply for agent {agent} step {step})")

    error: Outcome | None = None
    kind = _roll_fault(scenario.faults, agent, step, attempt, messages)
    if reply.fail is not None and attempt <= reply.fail.attempts:
        error = _status_error(reply.fail.status, reply.fail.retry_after, step, reply.fail.message)
    elif isinstance(kind, StatusFault):
        error = _status_error(kind.status, kind.retry_after, step)
    elif isinstance(kind, ContextLengthFault):
        error = _context_length_error(
            _usage(messages, body.get("tools"), "")["prompt_tokens"], step
        )
    if error is not None:
        error.reply_from = reply_from
        return error

    request_hash = _sha256(_canonical(body))
    content = reply.text()
    tool_calls = _tool_calls(reply, request_hash)
    fault: str | None = None
    delay = reply.latency if reply.latency is not None else scenario.latency
    if isinstance(kind, TimeoutFault):
        fault, delay = "timeout", delay + kind.delay
    elif isinstance(kind, MalformedArgumentsFault) and tool_calls:
        function = tool_calls[0]["function"]
        function["arguments"] = _break_json(function["arguments"])
        fault = "malformed_arguments"

    completion_text = (content or "") + "".join(
        call["function"]["name"] + call["function"]["arguments"] for call in tool_calls
    )
    usage = _usage(messages, body.get("tools"), completion_text)
    message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None}
    if tool_calls:
        message["tool_calls"] = tool_calls
    response = {
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
        "usage": usage,
    }
    return Outcome(200, response, {}, delay, fault, step, usage, reply_from)


def _model_object(model_id: str) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": 0, "owned_by": "devswarm"}


def answer(scenario: Scenario, method: str, path: str, headers: Any, raw: bytes) -> Outcome:
    """Answer one HTTP request (pure; `headers` is any mapping with .get)."""
    route = urlsplit(path).path.rstrip("/")
    agent = headers.get(AGENT_HEADER) or ""
    if method == "GET" and route == "/v1/models":
        return Outcome(
            200, {"object": "list", "data": [_model_object(m) for m in scenario.models]}, {}
        )
    if method == "GET" and route.startswith("/v1/models/"):
        model_id = route.removeprefix("/v1/models/")
        if model_id in scenario.models:
            return Outcome(200, _model_object(model_id), {})
        return _error(
            404,
            f"The model '{model_id}' does not exist",
            "invalid_request_error",
            param="model",
            code="model_not_found",
        )
    if method == "POST" and route == "/v1/chat/completions":
        try:
            attempt = int(headers.get(ATTEMPT_HEADER) or 1)
        except ValueError:
            return _error(
                400,
                f"invalid {ATTEMPT_HEADER} header: expected an integer",
                "invalid_request_error",
            )
        try:
            body = json.loads(raw or b"null")
        except ValueError:
            body = None  # reported as an unparsable body by the validation
        return answer_chat(scenario, agent, attempt, body)
    return _error(404, f"Invalid URL ({method} {route or '/'})", "invalid_request_error")


# ---------------------------------------------------------------------------------------------
# HTTP


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive; every answer carries Content-Length
    disable_nagle_algorithm = True  # else header and body writes wait ~40 ms for delayed ACKs
    server_version = "devswarm-modelserver"
    sys_version = ""
    server: _HTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the default stderr access log; the JSONL request log is the record."""

    def setup(self) -> None:
        super().setup()
        self.server.owner._track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        except OSError:
            pass  # the client went away; nothing left to flush to it
        finally:
            self.server.owner._track(self.connection, add=False)

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def _serve(self, method: str) -> None:
        owner = self.server.owner
        started = time.monotonic()
        when = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        owner._busy(+1)
        try:
            raw = b""
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                length = -1
            if length < 0:
                self.close_connection = True  # the body's end is unknown: the stream is lost
                outcome = _error(400, "invalid Content-Length header", "invalid_request_error")
            else:
                raw = self.rfile.read(length) if length else b""
                try:
                    outcome = answer(owner.scenario, method, self.path, self.headers, raw)
                except Exception as exc:  # a server bug must still get an answer and a log line
                    outcome = _error(500, f"offline model server error: {exc!r}", "server_error")
            if outcome.delay > 0:
                owner._stopping.wait(outcome.delay)  # overlaps across threads; stop() wakes it
            self._send(outcome)
            owner._log_request(
                when=when,
                headers=self.headers,
                path=urlsplit(self.path).path,
                raw=raw,
                outcome=outcome,
                latency_ms=(time.monotonic() - started) * 1000,
            )
        finally:
            owner._busy(-1)

    def _send(self, outcome: Outcome) -> None:
        data = json.dumps(outcome.body, ensure_ascii=False).encode("utf-8")
        try:
            self.send_response(outcome.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in outcome.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
            self.wfile.flush()
        except OSError:  # BrokenPipeError, ConnectionResetError, ...
            # The client timed out and went away (e.g. a timeout fault); that's expected.
            self.close_connection = True


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024  # hundreds of agents may connect at once
    owner: ModelServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], OSError):
            return  # a client hanging up mid-request is not a server error
        super().handle_error(request, client_address)


class ModelServer:
    """The offline model server, serving a scenario in a background thread."""

    def __init__(
        self,
        scenario: Scenario,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        log_path: Path | None = None,
    ) -> None:
        self.scenario = scenario
        self.host = host
        self.port = port
        self.log_path = Path(log_path) if log_path is not None else None
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._log_lock = threading.Lock()
        self._log_file: Any = None
        self._state = threading.Condition()
        self._in_flight = 0
        self._connections: set[socket.socket] = set()

    @property
    def url(self) -> str:
        """Base URL for the openai client, e.g. http://127.0.0.1:PORT/v1."""
        if self._httpd is None:
            raise RuntimeError("the model server is not started")
        return f"http://{self.host}:{self.port}/v1"

    def start(self) -> ModelServer:
        """Bind and serve in a daemon thread; returns self."""
        if self._httpd is not None:
            return self
        try:
            httpd = _HTTPServer((self.host, self.port), _Handler)
        except OSError as exc:
            raise UserError(f"cannot listen on {self.host}:{self.port}: {exc.strerror}") from None
        httpd.owner = self
        self.port = httpd.server_address[1]
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log_file = self.log_path.open("a", encoding="utf-8")
        self._stopping.clear()
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=f"modelserver:{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self, grace: float = 5.0) -> None:
        """Stop serving: wake sleeping handlers, let in-flight answers finish, close sockets."""
        httpd = self._httpd
        if httpd is None:
            return
        self._stopping.set()
        httpd.shutdown()
        with self._state:
            self._state.wait_for(lambda: self._in_flight == 0, timeout=grace)
            connections = list(self._connections)
        for connection in connections:  # idle keep-alive connections block their threads
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=grace)
        with self._log_lock:
            if self._log_file is not None:
                self._log_file.close()
                self._log_file = None
        self._httpd = None
        self._thread = None

    def __enter__(self) -> ModelServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _track(self, connection: socket.socket, *, add: bool) -> None:
        with self._state:
            if add:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)

    def _busy(self, delta: int) -> None:
        with self._state:
            self._in_flight += delta
            self._state.notify_all()

    def _log_request(
        self,
        *,
        when: str,
        headers: Any,
        path: str,
        raw: bytes,
        outcome: Outcome,
        latency_ms: float,
    ) -> None:
        if self._log_file is None:
            return
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
        with self._log_lock:
            if self._log_file is not None:
                self._log_file.write(text)
                self._log_file.flush()


def serve_forever(scenario_path: Path, port: int = 0, log_path: Path | None = None) -> None:
    """Serve a scenario file until SIGINT/SIGTERM; prints 'model server listening on URL'."""
    scenario = Scenario.load(scenario_path)
    done = threading.Event()

    def _on_signal(signum: int, frame: object) -> None:
        done.set()

    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    server = ModelServer(scenario, port=port, log_path=log_path).start()
    try:
        print(f"model server listening on {server.url}", flush=True)
        while not done.wait(1.0):
            pass
    finally:
        server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devswarm.offline.server",
        description="Offline OpenAI-compatible model server with scripted replies.",
    )
    parser.add_argument("--scenario", type=Path, required=True, help="scenario JSON file")
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: any free)")
    parser.add_argument("--log", type=Path, default=None, help="append a JSONL request log here")
    args = parser.parse_args(argv)
    try:
        serve_forever(args.scenario, port=args.port, log_path=args.log)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(_main())
