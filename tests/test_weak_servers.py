"""The offline server imitating weak servers (the scenario's `server` section), driven by the
real openai client with strict response validation."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest

from devswarm.errors import UserError
from devswarm.offline.server import Scenario
from tests.test_modelserver import TOOLS, Verdict, ask, client, conversation, serve

VERDICT = {"json": {"verdict": "done", "reasons": ["tests pass"]}}


def parse(api: openai.OpenAI) -> Verdict | None:
    """Ask for a Verdict with response_format json_schema, as devswarm's planner and judge do."""
    reply = api.chat.completions.parse(
        model="offline-model", messages=conversation(0), response_format=Verdict
    )
    return reply.choices[0].message.parsed


@pytest.mark.parametrize(
    ("style", "error", "status"),
    [
        ("vllm", openai.BadRequestError, 400),
        ("fastapi", openai.UnprocessableEntityError, 422),
        ("llama-cpp-python", openai.InternalServerError, 500),
        ("llama.cpp", openai.InternalServerError, 500),
    ],
)
def test_json_schema_refusals_name_json_schema_and_json_mode_still_works(
    style: str, error: type[openai.APIStatusError], status: int
) -> None:
    with serve({"server": {"json_schema": style}, "default": VERDICT}) as server:
        api = client(server, "judge")
        with pytest.raises(error) as refused:
            parse(api)
        json_mode = ask(api, conversation(0), response_format={"type": "json_object"})
        text = ask(api, conversation(0))
    assert refused.value.status_code == status
    assert "json_schema" in json.dumps(refused.value.response.json())
    assert json.loads(json_mode.choices[0].message.content) == VERDICT["json"]
    assert json.loads(text.choices[0].message.content) == VERDICT["json"]


def test_refusal_bodies_have_each_servers_shape() -> None:
    bodies = {}
    for style in ("vllm", "fastapi", "llama-cpp-python", "llama.cpp"):
        with serve({"server": {"json_schema": style}}) as server:
            with pytest.raises(openai.APIStatusError) as refused:
                parse(client(server))
            bodies[style] = refused.value.response.json()
    # vLLM's older flat body: the message is the validation errors' repr.
    assert bodies["vllm"]["object"] == "error" and bodies["vllm"]["code"] == 400
    assert "'input': 'json_schema'" in bodies["vllm"]["message"]
    (detail,) = bodies["fastapi"]["detail"]
    assert detail["loc"] == ["body", "response_format", "type"]
    assert detail["input"] == "json_schema"
    assert bodies["llama-cpp-python"]["error"]["type"] == "internal_server_error"
    assert bodies["llama-cpp-python"]["error"]["message"].startswith("1 validation error:")
    assert bodies["llama.cpp"]["error"] == {
        "code": 500,
        "message": 'response_format type must be one of "text" or "json_object", but got: '
        "json_schema",
        "type": "server_error",
    }


def test_lm_studio_refuses_json_mode_but_takes_json_schema(tmp_path) -> None:
    log = tmp_path / "requests.jsonl"
    with serve({"server": {"json_object": "lm-studio"}, "default": VERDICT}, log) as server:
        api = client(server, "judge")
        with pytest.raises(openai.BadRequestError) as refused:
            ask(api, conversation(0), response_format={"type": "json_object"})
        parsed = parse(api)
    assert refused.value.response.json() == {
        "error": "'response_format.type' must be 'json_schema'"
    }
    assert refused.value.code is None  # a plain-text error has no code to read
    assert parsed == Verdict(**VERDICT["json"])
    faults = [json.loads(line)["fault"] for line in log.read_text().splitlines()]
    assert faults == ["structured_output_unsupported", None]


def test_structured_output_and_the_server_section_do_not_mix() -> None:
    with pytest.raises(UserError, match="not both"):
        Scenario.from_data(
            {"structured_output": "json_object", "server": {"json_schema": "llama.cpp"}}
        )
    with pytest.raises(UserError, match=r"server\.json_schema"):
        Scenario.from_data({"server": {"json_schema": "ollama"}})


READ = {"name": "read_file", "arguments": {"path": "x.py"}}
RUN = {"name": "run", "arguments": {"command": "pytest -q"}}


def test_ollama_refuses_tools_and_then_writes_calls_as_hermes_text(tmp_path) -> None:
    log = tmp_path / "requests.jsonl"
    scenario = {"server": {"tools": "ollama"}, "default": {"tool_calls": [READ]}}
    with serve(scenario, log) as server:
        api = client(server, "worker")
        with pytest.raises(openai.BadRequestError) as refused:
            ask(api, conversation(0), tools=TOOLS)
        fallback = ask(api, conversation(0))  # tools described in the prompt instead
    assert refused.value.message.endswith("offline-model does not support tools")
    assert refused.value.type == "api_error" and refused.value.code is None
    choice = fallback.choices[0]
    assert choice.message.tool_calls is None and choice.finish_reason == "stop"
    assert choice.message.content == (
        '<tool_call>\n{"name": "read_file", "arguments": {"path": "x.py"}}\n</tool_call>'
    )
    faults = [json.loads(line)["fault"] for line in log.read_text().splitlines()]
    assert faults == ["tools_unsupported", None]


def test_vllm_without_a_tool_parser_refuses_auto_tool_choice_only() -> None:
    scenario = {"server": {"tools": "vllm"}, "default": {"content": "no tools used"}}
    with serve(scenario) as server:
        api = client(server, "worker")
        for tool_choice in ({}, {"tool_choice": "auto"}):
            with pytest.raises(openai.BadRequestError) as refused:
                ask(api, conversation(0), tools=TOOLS, **tool_choice)
            assert "--enable-auto-tool-choice" in refused.value.message
            assert refused.value.code == "400" and refused.value.type == "BadRequestError"
        answered = ask(api, conversation(0), tools=TOOLS, tool_choice="none")
    assert answered.choices[0].message.content == "no tools used"


ARGS_READ = '{"path": "x.py"}'
ARGS_RUN = '{"command": "pytest -q"}'


@pytest.mark.parametrize(
    ("style", "written"),
    [
        (
            "hermes",
            f'<tool_call>\n{{"name": "read_file", "arguments": {ARGS_READ}}}\n</tool_call>\n'
            f'<tool_call>\n{{"name": "run", "arguments": {ARGS_RUN}}}\n</tool_call>',
        ),
        (
            "llama3",
            f'<|python_tag|>{{"name": "read_file", "parameters": {ARGS_READ}}}; '
            f'{{"name": "run", "parameters": {ARGS_RUN}}}',
        ),
        (
            "mistral",
            f'[TOOL_CALLS] [{{"name": "read_file", "arguments": {ARGS_READ}}}, '
            f'{{"name": "run", "arguments": {ARGS_RUN}}}]',
        ),
        (
            "fenced",
            f'```json\n[{{"name": "read_file", "arguments": {ARGS_READ}}}, '
            f'{{"name": "run", "arguments": {ARGS_RUN}}}]\n```',
        ),
        (
            "json",
            f'[{{"name": "read_file", "arguments": {ARGS_READ}}}, '
            f'{{"name": "run", "arguments": {ARGS_RUN}}}]',
        ),
    ],
)
def test_ignored_tools_come_back_as_text_in_the_models_style(style: str, written: str) -> None:
    scenario = {
        "server": {"tools": "ignored", "tool_call_text": style},
        "default": {"content": "Let me look.", "tool_calls": [READ, RUN]},
    }
    with serve(scenario) as server:
        reply = ask(client(server, "worker"), conversation(0), tools=TOOLS)
    choice = reply.choices[0]
    assert choice.message.tool_calls is None and choice.finish_reason == "stop"
    assert choice.message.content == "Let me look.\n" + written
    assert reply.usage.completion_tokens == -(-len(choice.message.content) // 4)


def test_one_call_as_bare_json_and_malformed_arguments_stay_malformed() -> None:
    scenario = {
        "server": {"tools": "ignored", "tool_call_text": "json"},
        "faults": {"rate": 1.0, "kinds": [{"type": "malformed_arguments"}]},
        "agents": [{"match": "one", "steps": [{"tool_calls": [READ]}]}],
    }
    with serve(scenario) as server:
        text = ask(client(server, "one"), conversation(0)).choices[0].message.content
    assert text.startswith('{"name": "read_file", "arguments": {"path"')
    with pytest.raises(ValueError):
        json.loads(text)


def test_a_server_without_usage_sends_no_usage_object(tmp_path) -> None:
    log = tmp_path / "requests.jsonl"
    with serve({"server": {"usage": False}, "default": {"content": "ok"}}, log) as server:
        raw = client(server).chat.completions.with_raw_response.create(
            model="offline-model", messages=conversation(0)
        )
    reply = raw.parse()
    assert reply.usage is None and reply.choices[0].message.content == "ok"
    assert "usage" not in raw.http_response.json()
    (line,) = [json.loads(line) for line in log.read_text().splitlines()]
    assert line["usage"] is None and line["status"] == 200


def test_a_gateway_lists_some_models_and_serves_only_known_ones() -> None:
    scenario = {
        "models": ["offline-model", "offline-small"],
        "server": {"listed_models": ["offline-small"]},
        "default": {"content": "served"},
    }
    with serve(scenario) as server:
        api = client(server)
        listed = [m.id for m in api.models.list()]
        unlisted = ask(api, conversation(0))  # offline-model: served, though not listed
        retrieved = api.models.retrieve("offline-model")
        with pytest.raises(openai.NotFoundError) as unknown:
            api.chat.completions.create(model="offline-large", messages=conversation(0))
    assert listed == ["offline-small"]
    assert unlisted.choices[0].message.content == "served" and retrieved.id == "offline-model"
    assert unknown.value.code == "model_not_found" and "offline-large" in unknown.value.message
    with pytest.raises(UserError, match="offline-large"):
        Scenario.from_data({"server": {"listed_models": ["offline-large"]}})


def wait_until(condition, what: str) -> None:
    """Poll `condition` (bounded): the test waits for server state, never asserts on time."""
    for _ in range(2000):
        if condition():
            return
        time.sleep(0.01)
    raise AssertionError(f"gave up waiting for {what}")


def test_over_max_concurrent_a_request_gets_ollamas_503(tmp_path) -> None:
    log = tmp_path / "requests.jsonl"
    # The long latency holds the first two requests in their slots until the server stops.
    scenario = {"latency": 120, "server": {"max_concurrent": 2}, "default": {"content": "ok"}}
    with serve(scenario, log) as server, ThreadPoolExecutor(2) as pool:
        api = client(server, "worker")
        held = [pool.submit(ask, api, conversation(0, first=f"q{i}")) for i in range(2)]
        wait_until(lambda: server.chats_in_flight == 2, "two requests in flight")
        with pytest.raises(openai.InternalServerError) as busy:
            ask(api, conversation(0, first="one too many"))
        models = [m.id for m in api.models.list()]  # only chat requests take a slot
        server.stop()  # wakes the held requests: they are answered
        answers = [future.result().choices[0].message.content for future in held]
    assert busy.value.status_code == 503 and busy.value.type == "api_error"
    assert "maximum pending requests exceeded" in busy.value.message
    assert models == ["offline-model"] and answers == ["ok", "ok"]
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert sorted((line["status"], line["fault"]) for line in lines if line["request"]) == [
        (200, None),
        (200, None),
        (503, "server_busy"),
    ]


def test_with_when_busy_queue_requests_wait_for_a_free_slot() -> None:
    scenario = {
        "latency": 120,
        "server": {"max_concurrent": 1, "when_busy": "queue"},
        "default": {"content": "ok"},
    }
    with serve(scenario) as server, ThreadPoolExecutor(2) as pool:
        api = client(server, "worker")
        first = pool.submit(ask, api, conversation(0, first="first"))
        wait_until(lambda: server.chats_in_flight == 1, "the first request in flight")
        second = pool.submit(ask, api, conversation(0, first="second"))
        wait_until(lambda: server.chats_queued == 1, "the second request queued")
        assert server.chats_in_flight == 1 and not second.done()
        server.stop()
        answers = [f.result().choices[0].message.content for f in (first, second)]
    assert answers == ["ok", "ok"]
    assert (server.chats_in_flight, server.chats_queued) == (0, 0)
