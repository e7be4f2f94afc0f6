"""The agent loop, driven through real HTTP to the offline model server (no Prefect).

Each agent gets a model function like devswarm.run.run.plain_calls: ModelClient.chat against the
offline server, retrying transient failures (here without sleeping).
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from devswarm.agent.compat import (
    HARD_BUDGET,
    KEEP_RECENT,
    TOOL_OUTPUT_BUDGET,
    prepare_messages,
    schema_prompt,
)
from devswarm.agent.loop import Agent
from devswarm.agent.stuck import StuckDetector, StuckThresholds
from devswarm.config import KNOWN_PRICES, AgentLimits
from devswarm.model.client import ModelClient
from devswarm.model.errors import ModelCallError
from devswarm.offline.faults import roll_fault
from devswarm.offline.scenario import Faults
from devswarm.offline.server import ModelServer, Scenario
from devswarm.records import RecordLog, read_records
from devswarm.schemas import Plan
from devswarm.tools.toolbox import Toolbox
from tests.conftest import chat_requests, make_repo

WORKER = "worker/run-1/c1/root/t/a1"
PLANNER = "planner/run-1/c1/root"
PLAN = {
    "summary": "one task",
    "tasks": [{"id": "add-mul", "title": "Add mul", "description": "Add mul to calc.py."}],
    "scopes": [],
}


def tc(name: str, **arguments: Any) -> dict:
    return {"name": name, "arguments": arguments}


def calls(*tool_calls: dict) -> dict:
    return {"tool_calls": list(tool_calls)}


FINISH = calls(tc("finish", summary="done"))


class Harness:
    """One offline server, one repository, and agents talking to them."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.repo = make_repo(tmp_path / "repo", {"a.txt": "alpha\n", "b.txt": "beta\n"})
        self.servers: list[ModelServer] = []
        self.log = tmp_path / "requests.jsonl"

    def serve(self, scenario: dict) -> ModelServer:
        self.log = self.tmp / f"requests-{len(self.servers)}.jsonl"
        server = ModelServer(Scenario.from_data(scenario), log_path=self.log).start()
        self.servers.append(server)
        return server

    def requests(self) -> list[dict]:
        """The last server's request log (stopped first: it logs after answering)."""
        if self.servers:
            self.servers[-1].stop()
        return chat_requests(self.log)

    def agent(
        self,
        scenario: dict,
        *,
        agent_id: str = WORKER,
        limits: AgentLimits | None = None,
        attempts: int = 1,
        toolbox: Toolbox | None = None,
        wrap: Callable[[Callable, dict, int], dict] | None = None,
        **options: Any,
    ) -> Agent:
        server = self.serve(scenario)
        client = ModelClient(
            server.url,
            SecretStr("sk-test"),
            prices={"offline-model": KNOWN_PRICES["offline-model"]},
        )
        records = RecordLog(self.tmp / "records" / f"{agent_id.replace('/', '_')}.jsonl")

        def call(request: dict, step: int) -> dict:
            for attempt in range(1, attempts + 1):
                try:
                    return client.call(
                        request,
                        run_id="run-1",
                        agent_id=agent_id,
                        step=step,
                        attempt=attempt,
                        log=records,
                    )
                except ModelCallError as exc:
                    if not exc.transient or attempt == attempts:
                        raise
            raise AssertionError("unreachable")

        return Agent(
            agent_id=agent_id,
            run_id="run-1",
            role="planner" if agent_id.startswith("planner/") else "worker",
            model="offline-model",
            call=(lambda r, s: wrap(call, r, s)) if wrap else call,
            toolbox=toolbox or Toolbox(self.repo, sandbox=False),
            system="You are a test agent.",
            user="Do the test task.",
            limits=limits or AgentLimits(),
            log=records,
            transcript=self.tmp / "transcripts" / f"{agent_id.replace('/', '_')}.jsonl",
            **options,
        )

    def tool_rows(self, agent: Agent) -> list[dict]:
        return [r for r in read_records(agent.log.path) if r["kind"] == "tool_call"]

    def close(self) -> None:
        for server in self.servers:
            server.stop()


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    harness = Harness(tmp_path)
    yield harness
    harness.close()


def tool_messages(request: dict) -> list[str]:
    return [m["content"] for m in request["request"]["messages"] if m["role"] == "tool"]


# -- tool calls --------------------------------------------------------------------------------


def test_several_tool_calls_in_one_reply_run_in_order_and_are_answered_by_id(h: Harness) -> None:
    agent = h.agent(
        {
            "agents": [
                {
                    "match": "worker/*",
                    "steps": [
                        calls(
                            tc("write_file", path="c.txt", content="gamma\n"),
                            tc("edit_file", path="c.txt", old="gamma", new="GAMMA"),
                            tc("read_file", path="c.txt"),
                        ),
                        FINISH,
                    ],
                }
            ]
        }
    )
    outcome = agent.run()
    assert outcome.status == "finished" and outcome.steps == 2
    assert (h.repo / "c.txt").read_text() == "GAMMA\n"
    assistant = agent.messages[2]
    ids = [c["id"] for c in assistant["tool_calls"]]
    answers = agent.messages[3:6]
    assert [m["tool_call_id"] for m in answers] == ids  # one answer per call, in order
    assert "GAMMA" in answers[2]["content"]  # the read saw the edit made before it
    rows = h.tool_rows(agent)
    assert [r["tool_name"] for r in rows] == ["write_file", "edit_file", "read_file", "finish"]
    assert all(r["error_type"] is None for r in rows)
    assert outcome.finish == {"summary": "done", "not_done": "", "concerns": ""}


def test_unknown_tool_bad_json_and_schema_errors_go_back_to_the_model_which_recovers(
    h: Harness,
) -> None:
    agent = h.agent(
        {
            "agents": [
                {
                    "match": "worker/*",
                    "steps": [
                        calls(
                            tc("frobnicate", path="a.txt"),
                            {"name": "write_file", "arguments": '{"path": "c.txt", "content": '},
                            tc("write_file", path="c.txt"),  # content missing
                        ),
                        calls(tc("write_file", path="c.txt", content="fixed\n")),
                        FINISH,
                    ],
                }
            ]
        }
    )
    outcome = agent.run()
    assert outcome.status == "finished"
    assert (h.repo / "c.txt").read_text() == "fixed\n"
    rows = h.tool_rows(agent)
    assert [r["error_type"] for r in rows] == [
        "unknown_tool",
        "invalid_json",
        "invalid_arguments",
        None,
        None,
    ]
    # The model saw each problem as a tool result in its next request.
    second = tool_messages(h.requests()[1])
    assert "unknown tool 'frobnicate'" in second[0] and "write_file" in second[0]
    assert "not valid JSON" in second[1]
    assert "content: Field required" in second[2]


def test_a_bug_inside_a_tool_is_a_tool_error_not_a_dead_worker(h: Harness) -> None:
    box = Toolbox(h.repo, sandbox=False)
    shutil.rmtree(h.repo)  # `run` now raises inside devswarm (no working directory)
    agent = h.agent(
        {"agents": [{"match": "worker/*", "steps": [calls(tc("run", command="true")), FINISH]}]},
        toolbox=box,
    )
    assert agent.run().status == "finished"
    assert h.tool_rows(agent)[0]["error_type"] == "internal_error"
    assert "failed inside devswarm" in tool_messages(h.requests()[1])[0]


def test_malformed_arguments_fault_is_answered_and_recovered_from(h: Harness) -> None:
    """The server's malformed_arguments fault cuts the first tool call's JSON in half."""
    steps = [
        calls(tc("write_file", path="c.txt", content="made it\n")),
        calls(tc("write_file", path="c.txt", content="made it\n")),
        FINISH,
    ]
    # Faults are a pure function of (seed, request): take the first seed that breaks the first
    # reply and no other (the same seed every time).
    for seed in range(64):
        scenario = {
            "faults": {
                "seed": seed,
                "rate": 0.4,
                "kinds": [{"type": "malformed_arguments"}],
            },
            "agents": [{"match": "worker/*", "steps": steps}],
        }
        (h.repo / "c.txt").unlink(missing_ok=True)
        for folder in ("records", "transcripts"):  # each try starts from nothing
            shutil.rmtree(h.tmp / folder, ignore_errors=True)
        agent = h.agent(scenario)
        outcome = agent.run()
        faults = [r["fault"] for r in h.requests()]
        if faults == ["malformed_arguments", None, None]:
            break
    else:
        pytest.fail("no seed below 64 breaks only the first reply")
    assert outcome.status == "finished"
    assert (h.repo / "c.txt").read_text() == "made it\n"
    assert [r["error_type"] for r in h.tool_rows(agent)] == ["invalid_json", None, None]
    assert "not valid JSON" in tool_messages(h.requests()[1])[0]


# -- stuck -------------------------------------------------------------------------------------

STUCK_SCRIPTS = {
    "same_action_result": [calls(tc("read_file", path="a.txt"))] * 4,
    "same_error": [
        calls(tc("edit_file", path="a.txt", old=f"nope {i}", new="x")) for i in range(4)
    ],
    "no_tool_calls": [{"content": f"Let me think ({i})."} for i in range(3)],
    "alternation": [calls(tc("read_file", path=p)) for p in ["a.txt", "b.txt"] * 3],
}


@pytest.mark.parametrize("pattern", list(STUCK_SCRIPTS))
def test_each_stuck_pattern_ends_the_agent_and_is_named(h: Harness, pattern: str) -> None:
    script = STUCK_SCRIPTS[pattern]
    # One more step than the pattern needs: the agent must stop before asking for it.
    agent = h.agent({"agents": [{"match": "worker/*", "steps": [*script, FINISH]}]})
    outcome = agent.run()
    assert outcome.status == "stuck"
    assert outcome.reason.startswith(f"{pattern}:"), outcome.reason
    assert outcome.steps == len(script) == len(h.requests())


def test_replies_without_tool_calls_are_nudged_towards_the_tools(h: Harness) -> None:
    agent = h.agent(
        {"agents": [{"match": "worker/*", "steps": [{"content": "Thinking."}, FINISH]}]}
    )
    assert agent.run().status == "finished"
    last = h.requests()[1]["request"]["messages"][-1]
    assert last["role"] == "user" and "call `finish`" in last["content"]


def test_stuck_thresholds_are_configurable_and_progress_is_not_stuck() -> None:
    d = StuckDetector(StuckThresholds(same_action_result=2, same_error=0, alternation=2))
    d.add("run pytest", "1 failed")
    d.add("edit_file x", "edited")
    d.add("run pytest", "1 passed")  # same action, new result: progress
    assert d.check() is None
    d.add("run pytest", "1 passed")
    assert (d.check() or "").startswith("same_action_result:")

    errors = StuckDetector(StuckThresholds(same_error=0))
    for i in range(10):  # 0 turns the pattern off
        errors.add(f"edit_file {i}", f"not found {i}", "not_found")
    assert errors.check() is None

    alternating = StuckDetector(StuckThresholds(alternation=2))
    for action in ["a", "b", "a"]:
        alternating.add(action, "same")
    assert alternating.check() is None
    alternating.add("b", "same")
    assert (alternating.check() or "").startswith("alternation:")


# -- limits ------------------------------------------------------------------------------------

LIMITS = {
    "steps": AgentLimits(max_steps=2),
    "tokens": AgentLimits(max_tokens=50),
    "cost": AgentLimits(max_cost_usd=1e-7),
    "wall_seconds": AgentLimits(max_wall_seconds=0.5),
}


@pytest.mark.parametrize("name", list(LIMITS))
def test_each_limit_ends_the_agent_with_its_status(h: Harness, name: str) -> None:
    steps = [
        calls(tc("run", command="sleep 0.6" if name == "wall_seconds" else "true")),
        calls(tc("read_file", path="b.txt")),
        calls(tc("list_files")),
        FINISH,
    ]
    agent = h.agent({"agents": [{"match": "worker/*", "steps": steps}]}, limits=LIMITS[name])
    outcome = agent.run()
    assert outcome.status == f"limit:{name}", outcome.reason
    expected_calls = 2 if name == "steps" else 1  # checked before every model call
    assert outcome.steps == expected_calls == len(h.requests())
    assert outcome.input_tokens > 0 and outcome.cost_usd > 0


def test_a_stop_request_ends_the_agent_before_its_next_model_call(h: Harness) -> None:
    asked: list[int] = []

    def should_stop() -> str | None:
        asked.append(1)
        return "stop requested" if len(asked) > 1 else None

    agent = h.agent(
        {"agents": [{"match": "worker/*", "steps": [calls(tc("list_files")), FINISH]}]},
        should_stop=should_stop,
    )
    outcome = agent.run()
    assert (outcome.status, outcome.reason) == ("stopped", "stop requested")
    assert len(h.requests()) == 1


# -- transcript --------------------------------------------------------------------------------


def test_transcript_holds_every_message_before_the_next_action(h: Harness) -> None:
    transcript = h.tmp / "transcripts" / f"{WORKER.replace('/', '_')}.jsonl"
    seen_at_call: list[tuple[int, int]] = []

    def wrap(call: Callable, request: dict, step: int) -> dict:
        lines = transcript.read_text().splitlines()
        seen_at_call.append((len(lines), len(request["messages"])))
        return call(request, step)

    agent = h.agent(
        {
            "agents": [
                {
                    "match": "worker/*",
                    "steps": [
                        calls(
                            tc("write_file", path="c.txt", content="x\n"),
                            # The command counts the transcript's lines while it runs: the
                            # reply that asked for it is already on disk.
                            tc("run", command=f"wc -l < {transcript}"),
                        ),
                        FINISH,
                    ],
                }
            ]
        },
        wrap=wrap,
    )
    assert agent.run().status == "finished"
    # system, user, assistant, write_file's result: 4 lines when the command ran
    assert tool_messages(h.requests()[1])[1].split("\n")[1].strip() == "4"
    # At each model call, everything the model is sent is already in the transcript.
    assert seen_at_call == [(2, 2), (5, 5)]
    lines = transcript.read_bytes().split(b"\n")
    assert lines[-1] == b""  # every line complete
    records = [json.loads(line) for line in lines[:-1]]
    assert [r["message"] for r in records] == agent.messages
    assert {r["agent_id"] for r in records} == {WORKER}


# -- context -----------------------------------------------------------------------------------


def test_prepare_messages_shortens_old_tool_outputs_only() -> None:
    big = "H" * 5000 + "middle" + "T" * 5000
    messages = [{"role": "system", "content": "s"}, {"role": "user", "content": big}]
    messages += [{"role": "tool", "tool_call_id": "1", "content": big}]
    messages += [{"role": "tool", "tool_call_id": str(i), "content": "ok"} for i in range(8)]
    messages += [{"role": "tool", "tool_call_id": "9", "content": big}]
    sent = prepare_messages(messages)
    assert sent[1]["content"] == big  # not a tool output
    old = sent[2]["content"]
    assert len(old) < TOOL_OUTPUT_BUDGET + 100 and "middle" not in old
    assert old.startswith("H" * 1500) and old.endswith("T" * 1500)
    assert "characters of tool output cut" in old
    assert sent[-1]["content"] == big  # among the last KEEP_RECENT messages
    assert messages[2]["content"] == big  # the agent's own history is untouched
    assert prepare_messages(messages) == sent  # deterministic
    hard = prepare_messages(messages, budget=HARD_BUDGET, keep_recent=0)
    assert all(len(m["content"]) < HARD_BUDGET + 100 for m in hard if m["role"] == "tool")


def test_old_tool_outputs_are_shortened_in_what_is_sent(h: Harness) -> None:
    (h.repo / "big.txt").write_text("".join(f"line {i}\n" for i in range(2000)))
    for name in "cdef":
        (h.repo / f"{name}.txt").write_text(f"{name}\n")
    steps = [calls(tc("read_file", path="big.txt"))]
    steps += [calls(tc("read_file", path=f"{n}.txt")) for n in "cdef"]
    agent = h.agent({"agents": [{"match": "worker/*", "steps": [*steps, FINISH]}]})
    assert agent.run().status == "finished"
    reqs = h.requests()
    full = agent.messages[3]["content"]
    assert len(full) > 10_000 and "line 1999" in full
    sent = [tool_messages(r)[0] for r in reqs[1:]]
    # Kept whole while among the last KEEP_RECENT messages, shortened once older.
    recent = [len(r["request"]["messages"]) - 3 <= KEEP_RECENT for r in reqs[1:]]
    assert [s == full for s in sent] == recent
    assert sent[-1] != full and "line 0" in sent[-1] and "line 1999" in sent[-1]
    assert len(sent[-1]) < TOOL_OUTPUT_BUDGET + 100


def _big_output_scenario(faults: dict | None = None) -> dict:
    steps = [calls(tc("run", command="python -c \"print('x' * 2000)\"")), FINISH]
    return {"faults": faults or {}, "agents": [{"match": "worker/*", "steps": steps}]}


def test_context_length_exceeded_shortens_and_retries_once(h: Harness) -> None:
    # A run without faults gives the exact messages of each request; faults are a pure
    # function of (seed, agent, step, attempt, messages), so pick the first seed that refuses
    # only the full second request and accepts its hard-shortened retry.
    first = h.agent(_big_output_scenario())
    assert first.run().status == "finished"
    m0, m1 = (r["request"]["messages"] for r in h.requests())
    m1_short = prepare_messages(m1, budget=HARD_BUDGET, keep_recent=0)
    assert m1_short != m1
    kinds = [{"type": "context_length_exceeded"}]

    def roll(seed: int, step: int, messages: list) -> bool:
        faults = Faults(seed=seed, rate=0.5, kinds=kinds)
        return roll_fault(faults, WORKER, step, 1, messages) is not None

    seed = next(
        s for s in range(1000) if not roll(s, 0, m0) and roll(s, 1, m1) and not roll(s, 1, m1_short)
    )
    agent = h.agent(_big_output_scenario({"seed": seed, "rate": 0.5, "kinds": kinds}))
    outcome = agent.run()
    assert outcome.status == "finished"
    reqs = h.requests()
    assert [(r["step"], r["status"], r["fault"]) for r in reqs] == [
        (0, 200, None),
        (1, 400, "context_length_exceeded"),
        (1, 200, None),
    ]
    assert reqs[2]["request"]["messages"] == m1_short
    assert "characters of tool output cut" in tool_messages(reqs[2])[0]


def test_context_length_exceeded_again_ends_the_agent_with_an_error(h: Harness) -> None:
    agent = h.agent(
        _big_output_scenario(
            {"rate": 1.0, "max_attempt": 9, "kinds": [{"type": "context_length_exceeded"}]}
        )
    )
    outcome = agent.run()
    assert outcome.status == "error" and "context_length_exceeded" in outcome.reason
    assert len(h.requests()) == 2  # the first request and one shortened retry, no more


# -- structured output -------------------------------------------------------------------------


def _planner_scenario(structured_output: str, *answers: dict) -> dict:
    steps = [calls(tc("list_files")), *(answers or [{"json": PLAN}])]
    return {
        "structured_output": structured_output,
        "agents": [{"match": "planner/*", "steps": steps}],
    }


def _plan_agent(h: Harness, scenario: dict, **options: Any) -> Agent:
    return h.agent(
        scenario,
        agent_id=PLANNER,
        toolbox=Toolbox(h.repo, read_only=True),
        answer_schema=Plan,
        **options,
    )


def test_plan_from_a_server_that_answers_500_to_any_response_format(h: Harness) -> None:
    agent = _plan_agent(h, _planner_scenario("none"), attempts=2)
    outcome = agent.run()
    assert outcome.status == "finished"
    assert Plan.model_validate(outcome.answer).tasks[0].id == "add-mul"
    assert agent.structured_output is False
    reqs = h.requests()
    # The 500 names response_format: not retried; the same step went out without the format.
    assert [(r["step"], r["status"], "response_format" in r["request"]) for r in reqs] == [
        (0, 500, True),
        (0, 200, False),
        (1, 200, False),
    ]
    assert reqs[1]["request"]["messages"][-1]["content"] == schema_prompt(Plan)
    assert '"summary"' in schema_prompt(Plan) and "JSON schema" in schema_prompt(Plan)


def test_plan_from_a_server_with_json_object_mode_only(h: Harness) -> None:
    agent = _plan_agent(h, _planner_scenario("json_object"))
    outcome = agent.run()
    assert outcome.status == "finished" and Plan.model_validate(outcome.answer).summary
    reqs = h.requests()
    assert [(r["status"], "response_format" in r["request"]) for r in reqs] == [
        (400, True),  # a non-retryable refusal: no retry of the same request
        (200, False),
        (200, False),
    ]


def test_an_agent_told_there_is_no_structured_output_never_sends_a_format(h: Harness) -> None:
    agent = _plan_agent(h, _planner_scenario("none"), structured_output=False)
    assert agent.run().status == "finished"
    reqs = h.requests()
    assert [r["status"] for r in reqs] == [200, 200]
    assert not any("response_format" in r["request"] for r in reqs)
    assert reqs[0]["request"]["messages"][-1]["content"] == schema_prompt(Plan)


def test_an_invalid_json_answer_gets_its_validation_errors_and_a_retry(h: Harness) -> None:
    scenario = _planner_scenario(
        "none",
        {"content": '```json\n{"tasks": []}\n```'},  # no summary
        {"content": 'Here it is: {"summary": "nothing to do", "tasks": []}'},
    )
    agent = _plan_agent(h, scenario, structured_output=False)
    outcome = agent.run()
    assert outcome.status == "finished"
    assert outcome.answer == {"summary": "nothing to do", "tasks": [], "scopes": []}
    retry = h.requests()[2]["request"]["messages"][-1]["content"]
    assert "not a valid Plan" in retry and "summary" in retry and "Field required" in retry


def test_a_refused_key_is_not_mistaken_for_missing_structured_output(h: Harness) -> None:
    scenario = {
        "agents": [
            {"match": "planner/*", "steps": [{"fail": {"status": 401, "attempts": 9}}]},
        ]
    }
    agent = _plan_agent(h, scenario)
    outcome = agent.run()
    assert outcome.status == "error" and "invalid_api_key" in outcome.reason
    assert agent.structured_output is True
    assert len(h.requests()) == 1


def test_model_slots_cap_calls_in_flight_and_serve_the_oldest_agent_first() -> None:
    from devswarm.model.slots import ModelSlots

    slots = ModelSlots(1, grace=0)  # one slot: grants happen one after another
    for agent in ("old", "young"):  # ages: old first
        with slots.hold(agent):
            pass
    order: list[str] = []
    in_flight, peak = 0, 0
    lock = threading.Lock()
    release = threading.Event()

    def call(agent: str) -> None:
        nonlocal in_flight, peak
        with slots.hold(agent):
            with lock:
                in_flight += 1
                peak = max(peak, in_flight)
                order.append(agent)
            release.wait(5)
            time.sleep(0.01)
            with lock:
                in_flight -= 1

    blockers = [threading.Thread(target=call, args=("blocker",))]
    blockers[0].start()
    while not order:
        time.sleep(0.01)
    waiters = []
    for agent in ("young", "young", "old"):  # young asks first, old last
        waiters.append(threading.Thread(target=call, args=(agent,)))
        waiters[-1].start()
        while len(slots._waiting) < len(waiters):  # it is queued: the next may ask
            time.sleep(0.005)
    release.set()
    for t in blockers + waiters:
        t.join(5)
    assert order[1:] == ["old", "young", "young"]  # the oldest agent first, then by arrival
    assert peak == 1
    with slots.hold("x"):  # the slot is free again: nothing leaked
        pass


def test_an_agent_keeps_its_model_slot_between_calls_until_done_or_its_grace_ends() -> None:
    from devswarm.model.slots import ModelSlots

    slots = ModelSlots(1, grace=0.5)
    got: list[tuple[str, float]] = []
    t0 = time.monotonic()

    def call(agent: str) -> None:
        with slots.hold(agent):
            got.append((agent, time.monotonic() - t0))

    call("a")  # a keeps the slot for 0.5 s
    waiter = threading.Thread(target=call, args=("b",))
    waiter.start()
    time.sleep(0.1)
    call("a")  # back within its grace: its own slot, ahead of b who waits
    assert [g[0] for g in got] == ["a", "a"]
    slots.done("a")  # a is finished: b gets the slot now, not when the grace ends
    waiter.join(2)
    assert got[-1][0] == "b" and got[-1][1] < 0.45, got
    waiter = threading.Thread(target=call, args=("c",))
    waiter.start()  # b keeps the slot, never says done: c gets it when b's grace ends
    waiter.join(2)
    assert got[-1][0] == "c" and got[-1][1] - got[-2][1] >= 0.45, got


def test_calls_in_flight_spread_over_connection_pools_one_pool_per_agent(h: Harness) -> None:
    """httpcore scans a whole pool per request: ⌈calls in flight / 32⌉ pools, an agent's calls
    always through the same one (its keep-alive connection), every call answered."""
    server = h.serve({"latency": 0.2, "agents": [{"match": "worker/*", "steps": [FINISH] * 2}]})
    client = ModelClient(server.url, SecretStr("sk-test"), max_in_flight=96)
    agents = [f"worker/r/c1/root/t{i:02}/a1" for i in range(48)]
    assert len({id(client.pool(a)) for a in agents}) == 3
    assert all(client.pool(a) is client.pool(a) for a in agents)
    errors: list[BaseException] = []

    def work(agent_id: str) -> None:
        for step in (1, 2):
            request = {"model": "offline-model", "messages": [{"role": "user", "content": "go"}]}
            try:
                reply = client.call(
                    request, run_id="r", agent_id=agent_id, step=step, attempt=1, log=None
                )
                assert reply["tool_calls"][0]["name"] == "finish", reply
            except BaseException as exc:  # reported below, not lost in a thread
                errors.append(exc)

    threads = [threading.Thread(target=work, args=(a,)) for a in agents]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors[:3]
    sent = h.requests()
    assert sorted(r["agent"] for r in sent) == sorted(a for a in agents for _ in (1, 2))


@pytest.mark.parametrize("body", [b"<html>gateway</html>", b'{"error": null}', b"[]"])
def test_a_200_that_is_not_a_chat_completion_is_a_transient_invalid_response(
    tmp_path: Path, body: bytes
) -> None:
    import http.server

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        client = ModelClient(f"http://127.0.0.1:{server.server_port}/v1", SecretStr("sk-test"))
        log = RecordLog(tmp_path / "records.jsonl")
        request = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        with pytest.raises(ModelCallError) as err:
            client.call(request, run_id="r", agent_id="a", step=1, attempt=1, log=log)
        assert err.value.transient and err.value.error_type == "invalid_response"
        (row,) = [r for r in read_records(log.path) if r["kind"] == "model_call"]
        assert row["error_type"] == "invalid_response" and row["http_status"] == 200
    finally:
        server.shutdown()


@pytest.mark.parametrize(
    ("server_wants", "agent_starts"),
    [("max_completion_tokens", "max_tokens"), ("max_tokens", "max_completion_tokens")],
)
def test_a_refused_output_limit_field_is_switched_once_and_kept(
    h: Harness, server_wants: str, agent_starts: str
) -> None:
    """OpenAI's newest models refuse `max_tokens` (400 unsupported_parameter, naming
    `max_completion_tokens`); other servers may refuse the newer name."""
    scenario = {
        "output_limit": server_wants,
        "agents": [{"match": "worker/*", "steps": [calls(tc("list_files", path=".")), FINISH]}],
    }
    agent = h.agent(scenario, output_limit=agent_starts)
    outcome = agent.run()
    assert outcome.status == "finished" and agent.output_limit == server_wants
    sent = [r["request"] for r in h.requests()]
    fields = [[f for f in ("max_tokens", "max_completion_tokens") if f in b] for b in sent]
    assert fields == [[agent_starts], [server_wants], [server_wants]]  # one refusal, then kept
    assert sent[1][server_wants] == AgentLimits().max_output_tokens


def test_a_server_refusing_both_output_limit_fields_ends_the_agent_with_the_error(
    h: Harness,
) -> None:
    scenario = {
        "agents": [
            {
                "match": "worker/*",
                "steps": [
                    {
                        "fail": {
                            "status": 400,
                            "attempts": 9,
                            "message": "Unsupported parameter: 'max_tokens' or "
                            "'max_completion_tokens' (scripted)",
                        }
                    }
                ],
            }
        ]
    }
    outcome = h.agent(scenario).run()
    assert outcome.status == "error" and "max_completion_tokens" in outcome.reason
    assert len(h.requests()) == 2  # tried the other field once, not forever


def test_backoff_honours_retry_after_even_zero_else_doubles_and_never_exceeds_a_minute() -> None:
    from devswarm.model.errors import backoff_seconds

    def err(retry_after: float | None) -> ModelCallError:
        return ModelCallError("busy", transient=True, status=429, retry_after=retry_after)

    assert [backoff_seconds(err(None), a) for a in (1, 2, 3)] == [1.0, 2.0, 4.0]
    assert backoff_seconds(err(0.0), 3) == 0.0  # "retry now" is not "no answer"
    assert backoff_seconds(err(7.5), 1) == 7.5
    assert backoff_seconds(err(3600), 1) == 60.0
    assert backoff_seconds(err(None), 10) == 60.0
