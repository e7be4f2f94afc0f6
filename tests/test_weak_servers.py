"""The offline server imitating weak servers (the scenario's `server` section), driven by the
real openai client with strict response validation."""

from __future__ import annotations

import json

import openai
import pytest

from devswarm.errors import UserError
from devswarm.offline.server import Scenario
from tests.test_modelserver import Verdict, ask, client, conversation, serve

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
