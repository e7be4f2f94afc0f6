"""Weak servers, through real HTTP: refusals that name a field, missing usage, small contexts,
few parallel slots. The answers are the ones real servers give (quoted from their issue trackers
and docs), served by a tiny loopback server; the capability probe also runs against the
offline model server."""

from __future__ import annotations

import http.server
import json
import logging
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from devswarm.agent.loop import Agent
from devswarm.config import AgentLimits
from devswarm.model.capabilities import Capabilities, endpoint_concurrency
from devswarm.model.client import ModelClient
from devswarm.model.errors import ModelCallError
from devswarm.model.ledger import Ledger
from devswarm.model.slots import ModelSlots
from devswarm.offline.server import ModelServer, Scenario
from devswarm.records import RecordLog, read_records
from devswarm.tools.toolbox import Toolbox
from tests.conftest import chat_requests, make_repo

Answer = tuple[int, dict[str, Any]]


class Loopback:
    """A tiny OpenAI-compatible server answering what `answer(path, body)` says; it logs every
    request it gets (path and body), like a real server's access log."""

    def __init__(self, answer: Callable[[str, dict], Answer]) -> None:
        self.answer = answer
        self.requests: list[tuple[str, dict]] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                outer.requests.append((self.path, body))
                status, data = outer.answer(self.path, body)
                raw = json.dumps(data).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            do_GET = do_POST = _serve  # noqa: N815

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/v1"

    def chats(self) -> list[dict]:
        return [body for path, body in self.requests if path.endswith("/chat/completions")]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def loopback() -> Iterator[Callable[[Callable[[str, dict], Answer]], Loopback]]:
    servers: list[Loopback] = []

    def start(answer: Callable[[str, dict], Answer]) -> Loopback:
        servers.append(Loopback(answer))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def completion(content: str = "ok", usage: dict | None = None) -> dict:
    data: dict[str, Any] = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 0,
        "model": "m",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
            }
        ],
    }
    if usage is not None:
        data["usage"] = usage
    return data


PLAN_REQUEST = {
    "model": "m",
    "messages": [{"role": "user", "content": "plan"}],
    "max_tokens": 64,
    "tools": [{"type": "function", "function": {"name": "list_files", "parameters": {}}}],
    "response_format": {"type": "json_schema", "json_schema": {"name": "Plan", "schema": {}}},
}

# (status, body, the field refused) as servers answer them.
REFUSALS = {
    "llama-cpp-python 500 for json_schema": (
        500,
        {
            "error": {
                "code": 500,
                "message": 'response_format type must be one of "text" or "json_object", '
                "but got: json_schema",
                "type": "server_error",
            }
        },
        "response_format",
    ),
    "Ollama 400 for tools": (
        400,
        {
            "error": {
                "message": "registry.ollama.ai/library/gemma3:4b does not support tools",
                "type": "api_error",
                "param": None,
                "code": None,
            }
        },
        "tools",
    ),
    "vLLM 400 for tools without a tool parser": (
        400,
        {
            "error": {
                "message": '"auto" tool choice requires --enable-auto-tool-choice and '
                "--tool-call-parser to be set",
                "type": "BadRequestError",
                "param": None,
                "code": 400,
            }
        },
        "tools",
    ),
    "OpenAI 400 unsupported_parameter": (
        400,
        {
            "error": {
                "message": "Unsupported parameter: 'max_tokens' is not supported with this "
                "model. Use 'max_completion_tokens' instead.",
                "type": "invalid_request_error",
                "param": "max_tokens",
                "code": "unsupported_parameter",
            }
        },
        "max_tokens",
    ),
    "FastAPI 422 validation error": (
        422,
        {
            "detail": [
                {
                    "type": "literal_error",
                    "loc": ["body", "response_format", "type"],
                    "msg": "Input should be 'text' or 'json_object'",
                }
            ]
        },
        "response_format",
    ),
}


def _chat(
    client: ModelClient,
    request: dict,
    log: RecordLog | None = None,
    attempts: int = 3,
    agent_id: str = "a",
):
    """The caller's retry loop (as run.plain_calls): transient errors are tried again."""
    for attempt in range(1, attempts + 1):
        try:
            return client.call(
                request, run_id="r", agent_id=agent_id, step=0, attempt=attempt, log=log
            )
        except ModelCallError as exc:
            if not exc.transient or attempt == attempts:
                raise
    raise AssertionError("unreachable")


@pytest.mark.parametrize("server", list(REFUSALS))
def test_a_refusal_naming_a_field_is_not_retried_is_learned_and_said_in_one_warning_line(
    loopback, caplog: pytest.LogCaptureFixture, tmp_path: Path, server: str
) -> None:
    status, body, field = REFUSALS[server]
    srv = loopback(lambda path, req: (status, body))
    client = ModelClient(srv.url, SecretStr("sk-test"))
    log = RecordLog(tmp_path / "records.jsonl")
    with caplog.at_level(logging.WARNING, logger="devswarm"):
        for _ in range(2):  # a second refusal of the same field says nothing new
            with pytest.raises(ModelCallError) as err:
                _chat(client, PLAN_REQUEST, log)
            assert not err.value.transient and err.value.unsupported == field
    assert len(srv.chats()) == 2  # one HTTP attempt each: no retries
    (line,) = [r for r in caplog.records if r.name.startswith("devswarm")]
    assert field in line.getMessage() and not line.exc_info and "sk-test" not in line.getMessage()
    rows = [r for r in read_records(log.path) if r["kind"] == "model_call"]
    assert [r["http_status"] for r in rows] == [status, status]
    caps = client.book.get("m")
    learned = {
        "response_format": caps.json_schema is False,
        "tools": caps.native_tools is False and caps.agent_options()["text_tools"],
        "max_tokens": caps.output_limit == "max_completion_tokens",
    }
    assert learned[field]


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"error": {"code": 500, "message": "boom", "type": "server_error"}}, 500),
        # names a field the request does not have: not a refusal of ours
        ({"error": {"message": "stream_options is not supported"}}, 503),
    ],
)
def test_a_5xx_that_names_no_field_of_the_request_stays_transient(
    loopback, body: dict, status: int
) -> None:
    srv = loopback(lambda path, req: (status, body))
    client = ModelClient(srv.url, SecretStr("sk-test"))
    with pytest.raises(ModelCallError) as err:
        _chat(client, PLAN_REQUEST)
    assert err.value.transient and err.value.unsupported is None
    assert len(srv.chats()) == 3


CONTEXT_ERRORS = {
    "llama.cpp 400 exceed_context_size_error": (
        400,
        {
            "error": {
                "code": 400,
                "message": "the request exceeds the available context size. try increasing "
                "the context size or enable context shift",
                "type": "exceed_context_size_error",
                "n_prompt_tokens": 1407,
                "n_ctx": 256,
            }
        },
        256,
    ),
    "llama.cpp 500 without a type": (
        500,
        {
            "error": {
                "code": 500,
                "message": "Context size has been exceeded.",
                "type": "server_error",
            }
        },
        None,
    ),
    "vLLM 400": (
        400,
        {
            "object": "error",
            "message": "This model's maximum context length is 4096 tokens. However, you "
            "requested 5000 tokens (4936 in the messages, 64 in the completion).",
            "type": "BadRequestError",
            "code": 400,
        },
        4096,
    ),
}


@pytest.mark.parametrize("server", list(CONTEXT_ERRORS))
def test_a_prompt_longer_than_the_context_ends_the_agent_in_one_clear_error(
    loopback, tmp_path: Path, server: str
) -> None:
    status, body, window = CONTEXT_ERRORS[server]
    srv = loopback(lambda path, req: (status, body))
    client = ModelClient(srv.url, SecretStr("sk-test"))
    repo = make_repo(tmp_path / "repo", {"a.txt": "alpha\n"})
    agent = Agent(
        agent_id="worker/r/c1/root/t/a1",
        run_id="r",
        role="worker",
        model="m",
        call=lambda request, step: _chat(client, request),
        toolbox=Toolbox(repo, sandbox=False),
        system="s",
        user="u",
        limits=AgentLimits(),
        log=RecordLog(tmp_path / "records.jsonl"),
    )
    outcome = agent.run()
    assert outcome.status == "error" and "context_length_exceeded" in outcome.reason
    assert "\n" not in outcome.reason
    assert len(srv.chats()) == 2  # the request, then once with every tool output cut: no loop
    assert client.book.get("m").context_window == window


def test_missing_usage_is_estimated_marked_and_still_spends_the_budget(
    loopback, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    srv = loopback(lambda path, req: (200, completion("x" * 400)))
    ledger = Ledger(max_tokens=10_000, max_cost_usd=10.0, max_wall_seconds=60)
    client = ModelClient(srv.url, SecretStr("sk-test"), ledger=ledger)
    log = RecordLog(tmp_path / "records.jsonl")
    request = {"model": "m", "messages": [{"role": "user", "content": "y" * 800}], "max_tokens": 64}
    with caplog.at_level(logging.WARNING, logger="devswarm"):
        replies = [_chat(client, request, log) for _ in range(2)]
    assert all(r["usage_estimated"] for r in replies)
    assert replies[0]["output_tokens"] == 100 and replies[0]["input_tokens"] >= 200
    assert ledger.tokens == 2 * (replies[0]["input_tokens"] + replies[0]["output_tokens"])
    assert replies[0]["cost_usd"] > 0
    rows = [r for r in read_records(log.path) if r["kind"] == "model_call"]
    assert [r["usage_estimated"] for r in rows] == [True, True]
    assert len([r for r in caplog.records if "usage" in r.getMessage()]) == 1
    assert client.book.get("m").usage_reported is False

    reported = loopback(
        lambda path, req: (200, completion("ok", {"prompt_tokens": 7, "completion_tokens": 1}))
    )
    reply = _chat(ModelClient(reported.url, SecretStr("sk-test")), request)
    assert not reply["usage_estimated"] and reply["input_tokens"] == 7


def test_the_probe_learns_json_schema_in_one_request_from_the_offline_server(
    tmp_path: Path,
) -> None:
    for structured_output, accepted in (("json_schema", True), ("none", False)):
        log = tmp_path / f"{structured_output}.jsonl"
        scenario = Scenario.from_data({"structured_output": structured_output})
        with ModelServer(scenario, log_path=log) as server:
            client = ModelClient(server.url, SecretStr("sk-test"))
            records = RecordLog(tmp_path / f"records-{structured_output}.jsonl")
            client.preflight()
            caps = client.probe("offline-model", run_id="r", log=records)
        assert caps.json_schema is accepted
        assert caps.agent_options()["structured_output"] is accepted
        assert len(chat_requests(log)) == 1  # one chat request, refused or not
        (row,) = [r for r in read_records(records.path) if r["kind"] == "model_call"]
        assert row["agent_id"] == "preflight/r/offline-model"


def test_the_probe_reads_the_context_window_and_slots_a_local_server_announces(loopback) -> None:
    def answer(path: str, body: dict) -> Answer:
        if path == "/v1/models":
            return 200, {"object": "list", "data": [{"id": "m", "max_model_len": 8192}]}
        if path == "/props":  # llama.cpp's server
            return 200, {"total_slots": 2, "default_generation_settings": {"n_ctx": 4096}}
        return 200, completion('{"ok": true}', {"prompt_tokens": 9, "completion_tokens": 4})

    srv = loopback(answer)
    client = ModelClient(srv.url, SecretStr("sk-test"))
    caps = client.probe("m", run_id="r", log=None)
    assert caps.max_concurrent_requests == 2 and client.slots.capacity == 2
    assert caps.context_window == 4096  # what the server serves, not what the model could
    assert caps.json_schema is True and caps.usage_reported is not False
    assert [path for path, _ in srv.requests] == ["/v1/models", "/props", "/v1/chat/completions"]


def test_capabilities_survive_a_round_trip_and_a_resumed_client_does_not_learn_them_again(
    loopback,
) -> None:
    learned = Capabilities(
        json_schema=False,
        native_tools=False,
        output_limit="max_completion_tokens",
        usage_reported=False,
        context_window=2048,
        max_concurrent_requests=1,
    )
    stored = learned.model_dump_json()
    srv = loopback(lambda path, req: (500, {"error": {"message": "must not be called"}}))
    client = ModelClient(srv.url, SecretStr("sk-test"), max_in_flight=8)
    client.remember("m", Capabilities.model_validate_json(stored))
    assert client.book.get("m") == learned and client.slots.capacity == 1
    assert learned.agent_options() == {
        "structured_output": False,
        "output_limit": "max_completion_tokens",
        "text_tools": True,
        "json_mode": False,  # json_object not known to be accepted
        "tools_unconfirmed": False,
    }
    assert srv.requests == []


def test_loopback_endpoints_take_few_calls_at_once_remote_ones_many_configured_wins() -> None:
    assert endpoint_concurrency("http://127.0.0.1:8080/v1") == 4
    assert endpoint_concurrency("http://localhost:11434/v1") == 4
    assert endpoint_concurrency("http://[::1]:1234/v1") == 4
    assert endpoint_concurrency("https://api.openai.com/v1") == 32
    assert endpoint_concurrency(None) == 32  # the openai client's default: OpenAI itself
    assert endpoint_concurrency("http://127.0.0.1:8080/v1", 16) == 16
    assert ModelClient("http://127.0.0.1:9/v1", SecretStr("")).slots.capacity == 4


def test_model_slots_resize_queues_calls_beyond_the_new_capacity() -> None:
    slots = ModelSlots(3, grace=0)
    held = [slots.hold(f"a{i}") for i in range(3)]
    for h in held:
        h.__enter__()
    slots.resize(1)
    got = threading.Event()

    def call() -> None:
        with slots.hold("late"):
            got.set()

    waiter = threading.Thread(target=call)
    waiter.start()
    while not slots._waiting:  # queued: three in flight, one allowed
        threading.Event().wait(0.005)
    held[0].__exit__(None, None, None)
    held[1].__exit__(None, None, None)
    assert len(slots._waiting) == 1 and not got.is_set()  # two gone, still one over
    held[2].__exit__(None, None, None)
    assert got.wait(5)
    waiter.join(5)
    slots.resize(2)
    with slots.hold("x"), slots.hold("y"):
        pass  # two at once fit again


def test_a_server_refusing_tools_gets_them_in_the_prompt_and_the_agent_carries_on(
    loopback, tmp_path: Path
) -> None:
    refusal = REFUSALS["Ollama 400 for tools"][1]
    script = [
        '<tool_call>\n{"name": "list_files", "arguments": {"path": "."}}\n</tool_call>',
        '<tool_call>\n{"name": "finish", "arguments": {"summary": "looked"}}\n</tool_call>',
    ]

    def answer(path: str, body: dict) -> Answer:
        if "tools" in body:
            return 400, refusal
        step = sum(1 for m in body["messages"] if m["role"] == "assistant")
        return 200, completion(script[step], {"prompt_tokens": 10, "completion_tokens": 5})

    srv = loopback(answer)
    client = ModelClient(srv.url, SecretStr("sk-test"))
    repo = make_repo(tmp_path / "repo", {"a.txt": "alpha\n"})
    agent = Agent(
        agent_id="worker/r/c1/root/t/a1",
        run_id="r",
        role="worker",
        model="m",
        call=lambda request, step: _chat(client, request),
        toolbox=Toolbox(repo, sandbox=False),
        system="s",
        user="u",
        limits=AgentLimits(),
        log=RecordLog(tmp_path / "records.jsonl"),
    )
    outcome = agent.run()
    assert outcome.status == "finished" and agent.text_tools
    chats = srv.chats()
    assert ["tools" in c for c in chats] == [True, False, False]  # refused once, never again
    assert chats[1]["messages"][-1]["content"].startswith("You can call tools.")
    assert client.book.get("m").agent_options()["text_tools"] is True


def test_a_refusal_inside_the_prefect_task_is_one_http_attempt_and_no_traceback(
    prefect_server: None, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    from prefect import flow

    from devswarm.config import Models, SwarmConfig
    from devswarm.run.run import Run
    from tasks.model import prefect_calls

    log = tmp_path / "requests.jsonl"
    scenario = Scenario.from_data({"structured_output": "none"})  # llama.cpp's 500 for formats
    with ModelServer(scenario, log_path=log) as server:
        run = Run(
            SwarmConfig(
                goal="g",
                repo=make_repo(tmp_path / "repo", {"a.txt": "a\n"}),
                base_url=server.url,
                models=Models.single("offline-model"),
                home=tmp_path / "data",
                run_id="refusal-run",
            )
        )
        request = {**PLAN_REQUEST, "model": "offline-model"}

        @flow(name="refusal")
        def call_once() -> str:
            try:
                prefect_calls(run, "planner/refusal-run/c1/root")(request, 0)
            except ModelCallError as exc:
                return f"{exc.unsupported} {exc.transient}"
            return "answered"

        try:
            assert call_once() == "response_format False"
        finally:
            run.close()
    assert [r["status"] for r in chat_requests(log)] == [500]  # no retries
    err = capfd.readouterr().err
    assert "Traceback" not in err and "ERROR" not in err


def test_on_a_json_schema_refusing_server_a_plan_takes_two_requests_probe_included(
    tmp_path: Path,
) -> None:
    from devswarm.schemas import Plan
    from tests.test_agent import PLAN as plan
    from tests.test_agent import PLANNER

    scenario = Scenario.from_data(
        {"structured_output": "none", "agents": [{"match": "planner/*", "steps": [{"json": plan}]}]}
    )
    log = tmp_path / "requests.jsonl"
    records = RecordLog(tmp_path / "records.jsonl")
    with ModelServer(scenario, log_path=log) as server:
        client = ModelClient(server.url, SecretStr("sk-test"))
        client.preflight()
        caps = client.probe("offline-model", run_id="r", log=records)
        agent = Agent(
            agent_id=PLANNER,
            run_id="r",
            role="planner",
            model="offline-model",
            call=lambda request, step: _chat(client, request, records, agent_id=PLANNER),
            toolbox=Toolbox(make_repo(tmp_path / "repo", {"a.txt": "a\n"}), read_only=True),
            system="s",
            user="u",
            limits=AgentLimits(),
            log=records,
            answer_schema=Plan,
            **caps.agent_options(),
        )
        outcome = agent.run()
    assert outcome.status == "finished", outcome.reason
    assert Plan.model_validate(outcome.answer).tasks
    assert [r["status"] for r in chat_requests(log)] == [500, 200]  # today: six
    rows = [r for r in read_records(records.path) if r["kind"] == "model_call"]
    assert len(rows) == 2  # one row per HTTP request


def test_a_busy_server_gets_fewer_calls_at_once_and_every_call_is_answered(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    # Ollama's queue of one: a second request while one is answered gets 503 at once.
    scenario = Scenario.from_data(
        {"latency": 0.2, "server": {"max_concurrent": 1}, "default": {"content": "ok"}}
    )
    log = tmp_path / "requests.jsonl"
    with ModelServer(scenario, log_path=log) as server:
        client = ModelClient(server.url, SecretStr("sk-test"))
        assert client.slots.capacity == 4  # a loopback endpoint's default
        request = {"model": "offline-model", "messages": [{"role": "user", "content": "q"}]}

        def ask(i: int) -> dict:
            return _chat(client, request, attempts=8, agent_id=f"a{i}")

        with caplog.at_level(logging.WARNING, logger="devswarm"), ThreadPoolExecutor(4) as pool:
            replies = list(pool.map(ask, range(4)))
    assert [r["content"] for r in replies] == ["ok"] * 4
    assert client.slots.capacity < 4
    assert client.book.get("offline-model").max_concurrent_requests == client.slots.capacity
    statuses = [r["status"] for r in chat_requests(log)]
    assert statuses.count(200) == 4 and set(statuses) <= {200, 503}
    assert any("is busy (HTTP 503)" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("style", ["vllm", "fastapi", "llama-cpp-python", "llama.cpp"])
def test_a_json_schema_refusal_offering_json_mode_gets_json_mode_with_the_schema(
    tmp_path: Path, style: str
) -> None:
    from devswarm.schemas import Plan
    from tests.test_agent import PLAN as plan
    from tests.test_agent import PLANNER

    scenario = Scenario.from_data(
        {
            "server": {"json_schema": style},
            "agents": [{"match": "planner/*", "steps": [{"json": plan}]}],
        }
    )
    log = tmp_path / "requests.jsonl"
    with ModelServer(scenario, log_path=log) as server:
        client = ModelClient(server.url, SecretStr("sk-test"))
        agent = Agent(
            agent_id=PLANNER,
            run_id="r",
            role="planner",
            model="offline-model",
            call=lambda request, step: _chat(client, request, agent_id=PLANNER),
            toolbox=Toolbox(make_repo(tmp_path / "repo", {"a.txt": "a\n"}), read_only=True),
            system="s",
            user="u",
            limits=AgentLimits(),
            log=RecordLog(tmp_path / "records.jsonl"),
            answer_schema=Plan,
        )
        outcome = agent.run()
    assert outcome.status == "finished" and agent.json_mode and not agent.structured_output
    requests = chat_requests(log)
    assert [(r["status"], r["request"]["response_format"]["type"]) for r in requests] == [
        (400 if style == "vllm" else 422 if style == "fastapi" else 500, "json_schema"),
        (200, "json_object"),  # once: the refusal is not retried
    ]
    sent = requests[1]["request"]["response_format"]["schema"]  # every field required in it
    assert sent["required"] == ["summary", "tasks", "scopes"]
    assert sent["$defs"]["TaskSpec"]["required"] == list(
        Plan.model_json_schema()["$defs"]["TaskSpec"]["properties"]
    )
    caps = client.book.get("offline-model")
    assert caps.json_schema is False and caps.json_object is True
    assert caps.agent_options()["json_mode"] is True


def test_the_probe_tries_again_after_a_transient_failure_and_still_learns(loopback) -> None:
    answers = iter([(503, {"error": {"message": "loading model"}})])

    def answer(path: str, body: dict) -> Answer:
        if path.endswith("/chat/completions"):
            return next(
                answers,
                (200, completion('{"ok": true}', {"prompt_tokens": 9, "completion_tokens": 4})),
            )
        return 404, {"error": {"message": "no such path"}}

    srv = loopback(answer)
    client = ModelClient(srv.url, SecretStr("sk-test"))
    caps = client.probe("m", run_id="r", log=None)
    assert caps.json_schema is True
    assert len(srv.chats()) == 2  # the 503, then the answer: like any model call's retry
    assert client.slots.capacity == 4  # alone in flight: the 503 was not about our calls
