"""The offline model server, driven by the real openai client over HTTP on 127.0.0.1."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import openai
import pytest
from pydantic import BaseModel

import devswarm
from devswarm.errors import UserError
from devswarm.offline.server import ModelServer, Scenario

MODEL = "offline-model"
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "read_file",
            "description": "Read a file.",
            "parameters": {"type": "object", "properties": {"path": {"type": "string"}}},
        },
    }
]


@contextmanager
def serve(scenario: dict, log_path: Path | None = None) -> Iterator[ModelServer]:
    with ModelServer(Scenario.from_data(scenario), log_path=log_path) as server:
        yield server


def client(server: ModelServer, agent: str = "", **options: object) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=server.url,
        api_key="sk-test",
        max_retries=0,
        _strict_response_validation=True,
        default_headers={"X-Devswarm-Agent": agent},
        **options,
    )


def ask(
    api: openai.OpenAI, messages: list[dict], *, attempt: int | None = None, **kwargs: object
) -> openai.types.chat.ChatCompletion:
    headers = {"X-Devswarm-Attempt": str(attempt)} if attempt is not None else {}
    return api.chat.completions.create(
        model=MODEL, messages=messages, extra_headers=headers, **kwargs
    )


def conversation(assistant_turns: int, first: str = "go") -> list[dict]:
    """A user message followed by `assistant_turns` (assistant, user) pairs."""
    messages: list[dict] = [{"role": "user", "content": first}]
    for turn in range(assistant_turns):
        messages += [
            {"role": "assistant", "content": f"turn {turn}"},
            {"role": "user", "content": f"ok {turn}"},
        ]
    return messages


def test_tool_call_and_text_replies_validate_strictly() -> None:
    scenario = {
        "agents": [
            {
                "match": "worker/*",
                "steps": [
                    {"tool_calls": [{"name": "read_file", "arguments": {"path": "x.py"}}]},
                    {"content": "done"},
                ],
            }
        ]
    }
    with serve(scenario) as server:
        api = client(server, "worker/c1/t1")
        first = ask(api, conversation(0), tools=TOOLS)
        again = ask(api, conversation(0), tools=TOOLS)
        second = ask(api, conversation(1), tools=TOOLS)

    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.function.name == "read_file"
    assert json.loads(call.function.arguments) == {"path": "x.py"}
    assert call.id.startswith("call_") and first.id.startswith("chatcmpl-")
    # Ids are hashes of the request: the same request gets the same ids.
    assert (again.id, again.choices[0].message.tool_calls[0].id) == (first.id, call.id)
    assert first.model == MODEL and first.object == "chat.completion"
    usage = first.usage
    assert usage.prompt_tokens > 0 and usage.completion_tokens >= 1
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert usage.prompt_tokens_details.cached_tokens == 0  # no assistant turn yet
    assert usage.completion_tokens_details.reasoning_tokens == 0

    assert second.choices[0].finish_reason == "stop"
    assert second.choices[0].message.content == "done"
    assert second.choices[0].message.tool_calls is None
    cached = second.usage.prompt_tokens_details.cached_tokens
    assert 0 < cached < second.usage.prompt_tokens
    assert second.id != first.id


class Verdict(BaseModel):
    verdict: str
    reasons: list[str]


def test_json_reply_parses_with_json_schema_response_format() -> None:
    reply = {"json": {"verdict": "done", "reasons": ["tests pass"]}}
    with serve({"agents": [{"match": "judge/*", "steps": [reply]}]}) as server:
        parsed = client(server, "judge/c1").chat.completions.parse(
            model=MODEL, messages=conversation(0), response_format=Verdict
        )
    assert parsed.choices[0].message.parsed == Verdict(verdict="done", reasons=["tests pass"])


def test_models_list_names_the_scenario_models() -> None:
    with serve({"models": ["offline-model", "offline-small"]}) as server:
        api = client(server)
        assert [m.id for m in api.models.list()] == ["offline-model", "offline-small"]
        assert api.models.retrieve("offline-small").owned_by == "devswarm"
        with pytest.raises(openai.NotFoundError) as unknown:
            api.chat.completions.create(model="gpt-unknown", messages=conversation(0))
    assert unknown.value.code == "model_not_found"


def test_step_is_the_number_of_assistant_turns() -> None:
    steps = [{"content": "zero"}, {"content": "one"}, {"content": "two"}]
    scenario = {"agents": [{"match": "a", "steps": steps}], "default": {"content": "fallback"}}
    with serve(scenario) as server:
        api = client(server, "a")
        assert ask(api, conversation(2)).choices[0].message.content == "two"
        assert ask(api, conversation(0)).choices[0].message.content == "zero"
        assert ask(api, conversation(3)).choices[0].message.content == "fallback"
    with serve({"agents": [{"match": "a", "steps": steps}]}) as server:
        text = ask(client(server, "a"), conversation(5)).choices[0].message.content
    assert text == "(offline scenario has no reply for agent a step 5)"


def test_first_matching_agent_entry_answers() -> None:
    scenario = {
        "agents": [
            {"match": "planner/*/c1/root", "steps": [{"content": "root plan"}]},
            {"match": "planner/*", "steps": [{"content": "sub plan"}]},
            {"match": "worker/*", "steps": [{"content": "work"}]},
        ],
        "default": {"content": "nobody"},
    }
    with serve(scenario) as server:

        def reply(agent: str) -> str:
            return ask(client(server, agent), conversation(0)).choices[0].message.content

        assert reply("planner/run1/c1/root") == "root plan"
        assert reply("planner/run1/c2/root") == "sub plan"
        assert reply("worker/run1/c1/t1/a1") == "work"
        assert reply("") == "nobody"
        assert reply("Worker/x") == "nobody"  # matching is case-sensitive


def test_conflict_rule_counts_steps_after_the_marker() -> None:
    marker = "<<<<<<< HEAD"
    scenario = {
        "rules": [
            {
                "match": "worker/*",
                "contains": "<<<<<<<",
                "steps": [{"content": "resolve 0"}, {"content": "resolve 1"}],
            }
        ],
        "agents": [{"match": "*", "steps": [{"content": f"plain {i}"} for i in range(8)]}],
    }
    land = {"id": "c", "type": "function", "function": {"name": "land", "arguments": "{}"}}
    conflict = conversation(2) + [
        {"role": "assistant", "content": None, "tool_calls": [land]},
        {"role": "tool", "tool_call_id": "c", "content": f"rebase failed:\n{marker}"},
    ]
    with serve(scenario) as server:
        worker, planner = client(server, "worker/t1"), client(server, "planner/root")
        assert ask(worker, conflict).choices[0].message.content == "resolve 0"
        later = conflict + [
            {"role": "assistant", "content": "looking"},
            {"role": "user", "content": "go on"},
        ]
        assert ask(worker, later).choices[0].message.content == "resolve 1"
        # Past the rule's steps the agent script answers at the overall step.
        beyond = later + [
            {"role": "assistant", "content": "fixed"},
            {"role": "user", "content": "next"},
        ]
        assert ask(worker, beyond).choices[0].message.content == "plain 5"
        # The rule only applies to matching agents.
        assert ask(planner, conflict).choices[0].message.content == "plain 3"


def test_scripted_429_then_success_on_attempt_two() -> None:
    reply = {"content": "finally", "fail": {"status": 429, "retry_after": 1, "attempts": 1}}
    with serve({"default": reply}) as server:
        api = client(server, "w")
        with pytest.raises(openai.RateLimitError) as limited:
            ask(api, conversation(0))  # no attempt header: attempt 1
        ok = ask(api, conversation(0), attempt=2)
    assert limited.value.status_code == 429
    assert limited.value.response.headers["retry-after"] == "1"
    assert limited.value.code == "rate_limit_exceeded"
    assert ok.choices[0].message.content == "finally"


def test_seeded_faults_are_deterministic_and_near_the_rate() -> None:
    scenario = {
        "faults": {
            "seed": 7,
            "rate": 0.3,
            "max_attempt": 3,
            "kinds": [{"type": "status", "status": 500}],
        },
        "default": {"content": "ok"},
    }

    def faulted(api: openai.OpenAI, count: int, attempt: int = 1) -> list[int]:
        hits = []
        for i in range(count):
            try:
                ask(api, conversation(0, first=f"question {i}"), attempt=attempt)
            except openai.InternalServerError:
                hits.append(i)
        return hits

    with serve(scenario) as server:
        api = client(server, "worker/x")
        first = faulted(api, 200)
        assert faulted(api, 200) == first
        assert faulted(api, 30, attempt=4) == []  # past max_attempt nothing is faulted
    assert 40 <= len(first) <= 80, len(first)
    with serve({**scenario, "faults": {**scenario["faults"], "seed": 8}}) as server:
        assert faulted(client(server, "worker/x"), 200) != first


def test_malformed_arguments_fault_breaks_tool_call_json() -> None:
    scenario = {
        "faults": {"rate": 1.0, "kinds": [{"type": "malformed_arguments"}]},
        "agents": [
            {
                "match": "tools",
                "steps": [
                    {
                        "tool_calls": [
                            {"name": "read_file", "arguments": {"path": "src/main.py"}},
                            {"name": "read_file", "arguments": {"path": "b.py"}},
                        ]
                    }
                ],
            }
        ],
        "default": {"content": "plain text"},
    }
    with serve(scenario) as server:
        calls = ask(client(server, "tools"), conversation(0), tools=TOOLS).choices[0]
        text = ask(client(server, "text"), conversation(0)).choices[0]
    with pytest.raises(ValueError):
        json.loads(calls.message.tool_calls[0].function.arguments)
    assert json.loads(calls.message.tool_calls[1].function.arguments) == {"path": "b.py"}
    assert text.message.content == "plain text"


def test_context_length_fault_is_a_bad_request_with_openai_code() -> None:
    scenario = {"faults": {"rate": 1.0, "kinds": [{"type": "context_length_exceeded"}]}}
    with serve(scenario) as server, pytest.raises(openai.BadRequestError) as exceeded:
        ask(client(server, "w"), conversation(0))
    assert exceeded.value.code == "context_length_exceeded"
    assert exceeded.value.type == "invalid_request_error"
    assert "maximum context length" in exceeded.value.message


def test_timeout_fault_times_out_the_client_and_the_server_survives(tmp_path: Path) -> None:
    scenario = {
        "faults": {"rate": 1.0, "max_attempt": 1, "kinds": [{"type": "timeout", "delay": 2}]},
        "default": {"content": "ok"},
    }
    log = tmp_path / "requests.jsonl"
    with serve(scenario, log_path=log) as server:
        api = client(server, "w", timeout=0.5)
        started = time.monotonic()
        with pytest.raises(openai.APITimeoutError):
            ask(api, conversation(0))
        assert time.monotonic() - started < 1.5
        assert ask(api, conversation(0), attempt=2).choices[0].message.content == "ok"
    # Stopping wakes the sleeping handler; it finds the client gone and still logs the request.
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert sorted((line["attempt"], line["fault"], line["status"]) for line in lines) == [
        (1, "timeout", 200),
        (2, None, 200),
    ]


def test_json_object_server_refuses_json_schema_but_accepts_json_mode() -> None:
    reply = {"json": {"verdict": "done", "reasons": []}}
    with serve({"structured_output": "json_object", "default": reply}) as server:
        api = client(server, "judge")
        with pytest.raises(openai.BadRequestError) as refused:
            api.chat.completions.parse(
                model=MODEL, messages=conversation(0), response_format=Verdict
            )
        json_mode = ask(api, conversation(0), response_format={"type": "json_object"})
    assert refused.value.message.endswith("response_format json_schema is not supported")
    assert json.loads(json_mode.choices[0].message.content) == reply["json"]


def test_server_without_response_format_answers_500_like_llama_cpp() -> None:
    with serve({"structured_output": "none", "default": {"content": "{}"}}) as server:
        api = client(server, "judge")
        with pytest.raises(openai.InternalServerError):
            ask(api, conversation(0), response_format={"type": "json_object"})
        text = ask(api, conversation(0), response_format={"type": "text"})
        assert text.choices[0].message.content == "{}"
        with pytest.raises(openai.InternalServerError):
            api.chat.completions.parse(
                model=MODEL, messages=conversation(0), response_format=Verdict
            )
        assert ask(api, conversation(0)).choices[0].message.content == "{}"


def test_request_log_has_one_line_per_request_with_documented_fields(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "requests.jsonl"
    scenario = {
        "structured_output": "json_object",
        "agents": [{"match": "w", "steps": [{"content": "a"}, {"fail": {"status": 503}}]}],
    }
    with serve(scenario, log_path=log) as server:
        api = client(server, "w")
        ask(api, conversation(0))
        with pytest.raises(openai.InternalServerError):
            ask(api, conversation(1))
        with pytest.raises(openai.BadRequestError):
            api.chat.completions.parse(
                model=MODEL, messages=conversation(1), response_format=Verdict
            )
        with pytest.raises(openai.BadRequestError):
            ask(api, conversation(0), stream=True)
        api.models.list()
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    fields = {"time", "agent", "attempt", "step", "path", "request", "status", "response"}
    fields |= {"usage", "latency_ms", "fault"}
    assert all(fields <= set(line) for line in lines)
    ok, failed, refused, streamed, models = lines
    assert ok["time"].endswith("Z") and ok["agent"] == "w" and ok["attempt"] == 1
    assert (ok["status"], ok["step"], ok["fault"]) == (200, 0, None)
    assert ok["path"] == "/v1/chat/completions"
    assert ok["request"]["messages"] == conversation(0)
    assert ok["usage"] == ok["response"]["usage"] and ok["usage"]["total_tokens"] > 0
    assert isinstance(ok["latency_ms"], float)
    assert (failed["status"], failed["step"], failed["fault"], failed["usage"]) == (
        503,
        1,
        "status:503",
        None,
    )
    assert failed["response"]["error"]["type"] == "server_error"
    assert (refused["status"], refused["fault"]) == (400, "structured_output_unsupported")
    assert (streamed["status"], streamed["step"]) == (400, None)
    assert (models["path"], models["status"], models["request"]) == ("/v1/models", 200, None)


def test_concurrent_requests_wait_in_parallel() -> None:
    with serve({"latency": 0.5, "default": {"content": "slow"}}) as server:
        api = client(server, "w")
        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=50) as pool:
            replies = list(pool.map(lambda i: ask(api, conversation(0, first=f"q{i}")), range(50)))
        elapsed = time.monotonic() - started
    assert [r.choices[0].message.content for r in replies] == ["slow"] * 50
    assert 0.5 <= elapsed < 5.0


def test_bad_scenario_is_a_one_line_user_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"agents": [{"match": "w", "steps": [{"contnet": "typo"}]}]}))
    with pytest.raises(UserError, match=r"agents\.0\.steps\.0\.contnet") as typo:
        Scenario.load(bad)
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(UserError, match="not valid JSON") as not_json:
        Scenario.load(broken)
    with pytest.raises(UserError, match="not found"):
        Scenario.load(tmp_path / "missing.json")
    with pytest.raises(UserError, match="content or json"):
        Scenario.from_data({"default": {"content": "x", "json": {}}})
    with pytest.raises(UserError, match="kinds"):
        Scenario.from_data({"faults": {"rate": 0.5}})
    assert "\n" not in str(typo.value) + str(not_json.value)


def test_module_runs_as_a_server_process(tmp_path: Path) -> None:
    scenario = tmp_path / "scenario.json"
    scenario.write_text(json.dumps({"default": {"content": "from a process"}}))
    log = tmp_path / "requests.jsonl"
    stderr = tmp_path / "stderr.txt"
    paths = [str(Path(devswarm.__file__).resolve().parents[1]), os.environ.get("PYTHONPATH")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
    command = [sys.executable, "-m", "devswarm.offline", "--scenario", str(scenario)]
    with (
        stderr.open("w") as errors,
        subprocess.Popen(
            [*command, "--log", str(log)], stdout=subprocess.PIPE, stderr=errors, text=True, env=env
        ) as process,
    ):
        try:
            line = process.stdout.readline()
            assert line.startswith("model server listening on http://127.0.0.1:"), line
            api = openai.OpenAI(
                base_url=line.split()[-1],
                api_key="sk-test",
                max_retries=0,
                _strict_response_validation=True,
            )
            reply = api.chat.completions.create(model=MODEL, messages=conversation(0))
            assert reply.choices[0].message.content == "from a process"
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=10) == 0
        finally:
            if process.poll() is None:
                process.kill()
    assert stderr.read_text() == ""
    assert len(log.read_text().splitlines()) == 1


def test_module_reports_a_bad_scenario_in_one_line(tmp_path: Path) -> None:
    root = str(Path(devswarm.__file__).resolve().parents[1])
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "devswarm.offline",
            "--scenario",
            str(tmp_path / "nope.json"),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": root},
        timeout=30,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: scenario file not found: {tmp_path / 'nope.json'}"
    ]
