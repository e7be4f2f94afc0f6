"""The agent with tool calls written as text, against the offline model server scripted to
answer in text (the formats of tests/fixtures/textcalls.json), through real HTTP."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from devswarm.agent.textcalls import tools_prompt
from devswarm.schemas import Plan
from devswarm.tools.toolbox import Toolbox
from tests.test_agent import PLAN, PLANNER, Harness


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    harness = Harness(tmp_path)
    yield harness
    harness.close()


def hermes(name: str, **arguments: object) -> str:
    return f"<tool_call>\n{json.dumps({'name': name, 'arguments': arguments})}\n</tool_call>"


def text(*parts: str) -> dict:
    return {"content": "\n".join(parts)}


def worker(*steps: dict) -> dict:
    return {"agents": [{"match": "worker/*", "steps": list(steps)}]}


def last_user(request: dict) -> str:
    return request["request"]["messages"][-1]["content"]


def test_text_tools_are_described_in_the_prompt_and_written_calls_run_like_native_ones(
    h: Harness,
) -> None:
    agent = h.agent(
        worker(
            text(
                "Let me look around.",
                hermes("list_files", path="."),
                hermes("read_file", path="a.txt"),
            ),
            text('[TOOL_CALLS]write_file[ARGS]{"path": "c.txt", "content": "gamma\\n"}'),
            text(hermes("finish", summary="wrote c.txt")),
        ),
        text_tools=True,
    )
    outcome = agent.run()
    assert outcome.status == "finished" and outcome.finish
    assert outcome.finish["summary"] == "wrote c.txt"
    assert (h.repo / "c.txt").read_text() == "gamma\n"
    rows = h.tool_rows(agent)
    assert [(r["step"], r["tool_name"], r["error_type"]) for r in rows] == [
        (0, "list_files", None),
        (0, "read_file", None),
        (1, "write_file", None),
        (2, "finish", None),
    ]
    assert all(r["tool_call_id"].startswith("call_text_") for r in rows)
    reqs = h.requests()
    assert not any("tools" in r["request"] for r in reqs)  # the server never sees `tools`
    system = reqs[0]["request"]["messages"][0]["content"]
    assert system.endswith(tools_prompt(agent.specs)) and system.startswith("You are a test agent.")
    # The results came back in one user message, in order, with no tool role.
    second = reqs[1]["request"]["messages"]
    assert [m["role"] for m in second[-2:]] == ["assistant", "user"]
    assert not any(m["role"] == "tool" or "tool_calls" in m for m in second)
    assert second[-1]["content"].index('name="list_files"') < second[-1]["content"].index(
        'name="read_file"'
    )
    assert "alpha" in second[-1]["content"]


def test_an_unreadable_text_call_is_an_error_row_and_a_message_and_the_model_recovers(
    h: Harness,
) -> None:
    broken = '<tool_call>\n{"name": "read_file", "arguments": {"path": "a.txt"}\n</tool_call>'
    agent = h.agent(
        worker(
            text(broken, hermes("grep_everything", pattern="x")),
            text(hermes("read_file", path="a.txt")),
            text(hermes("finish", summary="read it")),
        ),
        text_tools=True,
    )
    outcome = agent.run()
    assert outcome.status == "finished"
    rows = h.tool_rows(agent)
    assert [(r["tool_name"], r["error_type"]) for r in rows] == [
        ("(unread)", "invalid_tool_call"),
        ("(unread)", "invalid_tool_call"),
        ("read_file", None),
        ("finish", None),
    ]
    assert rows[0]["arguments"].startswith('{"name": "read_file"')  # what the model wrote
    told = last_user(h.requests()[1])
    assert "not valid JSON" in told and "unknown tool 'grep_everything'" in told
    assert "<tool_call>" in told  # reminded how to write a call


def test_the_same_garbage_again_and_again_is_stuck(h: Harness) -> None:
    garbage = text("<tool_call>\nread a.txt please\n</tool_call>")
    agent = h.agent(worker(*[garbage] * 5), text_tools=True)
    outcome = agent.run()
    assert outcome.status == "stuck" and outcome.reason.startswith("same_action_result")
    assert outcome.steps == 4 == len(h.tool_rows(agent))


def test_calls_written_as_text_run_where_the_server_ignored_native_tools(h: Harness) -> None:
    agent = h.agent(
        worker(
            text(
                "<|python_tag|>"
                + json.dumps({"name": "read_file", "parameters": {"path": "b.txt"}})
            ),
            text("<function=finish>" + json.dumps({"summary": "done"}) + "</function>"),
        )
    )
    outcome = agent.run()
    assert outcome.status == "finished" and not agent.text_tools
    assert [r["tool_name"] for r in h.tool_rows(agent)] == ["read_file", "finish"]
    second = h.requests()[1]["request"]
    assert "tools" in second  # still offered natively
    assert second["messages"][-1]["role"] == "user" and "beta" in second["messages"][-1]["content"]


def test_a_planner_in_text_mode_reads_with_text_calls_and_answers_a_plan(h: Harness) -> None:
    scenario = {
        "structured_output": "none",
        "agents": [
            {
                "match": "planner/*",
                "steps": [text(hermes("list_files", path=".")), {"json": PLAN}],
            }
        ],
    }
    agent = h.agent(
        scenario,
        agent_id=PLANNER,
        toolbox=Toolbox(h.repo, read_only=True),
        answer_schema=Plan,
        structured_output=False,
        text_tools=True,
    )
    outcome = agent.run()
    assert outcome.status == "finished" and Plan.model_validate(outcome.answer).tasks
    assert [r["tool_name"] for r in h.tool_rows(agent)] == ["list_files"]
    system = h.requests()[0]["request"]["messages"][0]["content"]
    assert '"name": "list_files"' in system and '"name": "write_file"' not in system
