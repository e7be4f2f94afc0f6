"""The parser of tool calls written as text, on verbatim outputs in each documented format
(tests/fixtures/textcalls.json names the source of each), malformed ones included."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from devswarm.agent.textcalls import parse_text_calls, tool_responses, tools_prompt
from devswarm.tools.toolbox import Toolbox
from tests.conftest import make_repo

FIXTURES = json.loads((Path(__file__).parent / "fixtures" / "textcalls.json").read_text())
CASES = {case["name"]: case for case in FIXTURES["cases"]}


@pytest.mark.parametrize("name", list(CASES))
def test_each_documented_format_parses_to_its_calls_and_garbage_to_errors(name: str) -> None:
    case = CASES[name]
    assert case["source"]
    parsed = parse_text_calls(case["output"], FIXTURES["tools"][case["tools"]])
    got = [{"name": c["name"], "arguments": json.loads(c["arguments"])} for c in parsed.calls]
    assert got == case["calls"]
    assert len(parsed.errors) == case["errors"], parsed.errors
    assert parsed.attempted is case["attempted"]
    for error in parsed.errors:
        assert error["error"] and "\n" not in error["error"] and len(error["written"]) <= 500


def test_the_fixtures_cover_every_format_and_malformed_outputs() -> None:
    names = " ".join(CASES)
    for family in ("hermes", "qwen", "qwen3_coder", "llama31", "llama32", "mistral_v3"):
        assert family in names
    assert "mistral_v11" in names and "fenced" in names and "prose" in names
    assert sum(1 for c in CASES.values() if c["errors"]) >= 8


def test_errors_say_what_is_wrong_in_words_the_model_can_act_on() -> None:
    tools = FIXTURES["tools"]["qwen_temperature"]
    messages = {
        name: parse_text_calls(CASES[name]["output"], tools).errors[0]["error"]
        for name in ("one_good_one_unknown_tool", "missing_required_argument", "hermes_broken_json")
    }
    assert "unknown tool 'get_humidity'" in messages["one_good_one_unknown_tool"]
    assert "get_current_temperature" in messages["one_good_one_unknown_tool"]  # the tools there are
    assert "missing required argument(s): date" in messages["missing_required_argument"]
    assert "not valid JSON" in messages["hermes_broken_json"]
    (error,) = parse_text_calls(CASES["missing_required_argument"]["output"], tools).errors
    assert error["name"] == "get_temperature_date"  # the row names the tool when it was recognised


def test_call_ids_are_deterministic_and_distinct() -> None:
    case = CASES["qwen_two_tool_calls"]
    tools = FIXTURES["tools"][case["tools"]]
    first, again = (parse_text_calls(case["output"], tools) for _ in range(2))
    ids = [c["id"] for c in first.calls]
    assert ids == [c["id"] for c in again.calls] and len(set(ids)) == 2


def test_the_prompt_describes_our_tools_in_the_format_the_parser_reads(tmp_path: Path) -> None:
    specs = Toolbox(make_repo(tmp_path / "r", {"a.txt": "a\n"}), sandbox=False).specs()
    prompt = tools_prompt(specs)
    for spec in specs:
        assert json.dumps(spec["function"], sort_keys=True) in prompt
    example = '<tool_call>\n{"name": "read_file", "arguments": {"path": "a.txt"}}\n</tool_call>'
    (call,) = parse_text_calls(example, specs).calls
    assert call["name"] == "read_file" and json.loads(call["arguments"]) == {"path": "a.txt"}
    assert (
        tool_responses([("read_file", "a")])
        == '<tool_response name="read_file">\na\n</tool_response>'
    )
