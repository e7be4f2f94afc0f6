"""Whole swarms, through real Prefect and real HTTP, against the offline server answering like
the weak servers people run (its `server:` section, docs/model-server.md): each plans, works
and lands. And runs that cannot make progress end with their own status and one line."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from devswarm.run.state import RunState
from tests.conftest import chat_requests, git, make_repo
from tests.helpers import JUDGE_DONE, plan_reply, rows, task, write_and_finish

# One task, written by one worker: the smallest run that plans, works, lands and is judged.
SCRIPT = [
    {"match": "planner/*", "steps": [plan_reply(task("hello", ["hello.txt"]))]},
    {"match": "worker/*", "steps": write_and_finish("hello.txt", "hello\n", "wrote hello")},
    JUDGE_DONE,
]


def problems(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Log records (devswarm's, Prefect's) at ERROR or carrying a traceback. Read from the
    records, not the terminal: Prefect's console handler may hold an earlier test's stream."""
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


WEAK_SERVERS = {
    # response_format json_schema refused, each in its server's words (and tools ignored,
    # the calls written as text in each model family's style)
    "json_schema 400 (vLLM), hermes text calls": {
        "json_schema": "vllm",
        "tools": "ignored",
        "tool_call_text": "hermes",
    },
    "json_schema 422 (FastAPI), llama3 text calls": {
        "json_schema": "fastapi",
        "tools": "ignored",
        "tool_call_text": "llama3",
    },
    "json_schema 500 (llama-cpp-python), mistral text calls": {
        "json_schema": "llama-cpp-python",
        "tools": "ignored",
        "tool_call_text": "mistral",
    },
    "json_schema 500 (llama.cpp), fenced text calls": {
        "json_schema": "llama.cpp",
        "tools": "ignored",
        "tool_call_text": "fenced",
    },
    "tools ignored, bare json text calls": {"tools": "ignored", "tool_call_text": "json"},
    "tools refused 400 (Ollama)": {"tools": "ollama", "tool_call_text": "hermes"},
    "tools refused 400 (vLLM without a tool parser)": {"tools": "vllm"},
    "usage missing": {"usage": False},
}


@pytest.mark.parametrize("weak", list(WEAK_SERVERS))
def test_a_swarm_plans_works_and_lands_on_a_weak_server(
    swarm_run, tmp_path: Path, caplog: pytest.LogCaptureFixture, weak: str
) -> None:
    server = WEAK_SERVERS[weak]
    repo = make_repo(tmp_path / "user", {"README.md": "weak\n"})
    summary, log = swarm_run({"agents": SCRIPT, "server": server}, repo)
    db = Path(summary["db"])
    assert summary["status"] == "done", summary
    assert git(repo, "show", f"{summary['branch']}:hello.txt") == "hello"
    assert rows(db, "SELECT status FROM tasks") == [("landed",)]
    requests = chat_requests(log)
    # every HTTP attempt is one row, the probe's included
    assert rows(db, "SELECT count(*) FROM model_calls")[0][0] == len(requests)
    assert requests[0]["agent"] == f"preflight/{summary['run_id']}/offline-model"
    state = RunState.load(tmp_path / "data" / "runs" / summary["run_id"] / "state.json")
    caps = state.capabilities["offline-model"]
    if "json_schema" in server:
        # the probe learned it: the planner's first request is answered with a plan
        first_plan = next(
            i
            for i, r in enumerate(requests)
            if r["agent"].startswith("planner/") and r["status"] == 200
        )
        assert first_plan + 1 <= 2, [(r["agent"], r["status"]) for r in requests]
        assert caps.json_schema is False and caps.json_object is True  # the refusal offered it
        formats = [r["request"].get("response_format") for r in requests[1:]]
        # JSON mode with the schema beside it from then on (a grammar on llama.cpp)
        assert {f["type"] for f in formats if f} == {"json_object"}
        assert all(f["schema"]["title"] in ("Plan", "Verdict") for f in formats if f)
    if server.get("tools") in ("ollama", "vllm"):
        refused = [r for r in requests if r["fault"] == "tools_unsupported"]
        assert len(refused) == 1  # learned once, for the whole run
        assert caps.native_tools is False
    if server.get("usage") is False:
        estimated = rows(
            db,
            "SELECT bool_and(usage_estimated), sum(input_tokens + output_tokens) FROM model_calls WHERE http_status = 200",
        )
        assert estimated[0][0] is True and estimated[0][1] > 0
        assert summary["tokens"] == estimated[0][1]  # the budget counts the estimates
        assert caps.usage_reported is False
    else:
        assert rows(db, "SELECT count(*) FROM model_calls WHERE usage_estimated")[0][0] == 0
    assert not rows(db, "SELECT * FROM tool_calls WHERE error_type = 'invalid_tool_call'")
    assert not problems(caplog)  # refusals are expected: warning lines, no ERROR, no traceback


def test_a_resumed_run_takes_the_capabilities_from_its_state_without_probing(
    swarm_run, tmp_path: Path
) -> None:
    repo = make_repo(tmp_path / "user", {"README.md": "resume\n"})
    scenario = {"agents": SCRIPT, "server": {"json_schema": "llama.cpp"}}
    summary, _ = swarm_run(scenario, repo, run_id="weak-resume", max_cycles=1)
    assert summary["status"] == "done"
    again, log = swarm_run(scenario, repo, run_id="weak-resume", max_cycles=2)
    requests = chat_requests(log)
    assert not [r for r in requests if r["agent"].startswith("preflight/")]
    formats = [r["request"].get("response_format") for r in requests]
    assert {f["type"] for f in formats if f} == {"json_object"}  # json_schema never sent again


GARBAGE = {"content": "I think the plan is to do good things."}


def devswarm_run(repo: Path, url: str, home: Path, *models: str) -> subprocess.CompletedProcess:
    """`devswarm run` as a user types it, in its own process, on the session's Prefect server."""
    from prefect.settings import PREFECT_API_URL

    args = ["run", "--repo", str(repo), "--goal", "g", "--base-url", url, "--home", str(home)]
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "OPENAI_API_KEY": "sk-test"}
    env["PYTHONPATH"] = str(Path(__file__).parents[1])
    return subprocess.run(
        [sys.executable, "-m", "devswarm.cli", *args, *models],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_no_plan_after_the_planners_tries_ends_the_run_with_no_plan_and_its_reason(
    swarm_run, tmp_path: Path
) -> None:
    repo = make_repo(tmp_path / "user", {"README.md": "x\n"})
    scenario = {"agents": [{"match": "planner/*", "steps": [GARBAGE] * 4}], "default": GARBAGE}
    summary, log = swarm_run(scenario, repo, max_cycles=2)
    assert summary["status"] == "no_plan"
    assert summary["reason"].startswith("the model never produced a valid plan: ")
    assert "no valid Plan after 3 answers" in summary["reason"] and "\n" not in summary["reason"]
    db = Path(summary["db"])
    assert rows(db, "SELECT status FROM runs") == [("no_plan",)]
    agents = {r["agent"].split("/")[0] for r in chat_requests(log)}
    assert agents == {"preflight", "planner"}  # no judge, no second cycle


def test_no_verdict_ends_the_run_with_no_verdict_after_the_work_landed(
    swarm_run, tmp_path: Path
) -> None:
    repo = make_repo(tmp_path / "user", {"README.md": "x\n"})
    script = [*SCRIPT[:2], {"match": "judge/*", "steps": [GARBAGE] * 3}]
    summary, _ = swarm_run({"agents": script}, repo)
    assert summary["status"] == "no_verdict"
    assert summary["reason"].startswith("the model never produced a valid verdict: ")
    assert summary["tasks_landed"] == 1
    assert rows(Path(summary["db"]), "SELECT status FROM runs") == [("no_verdict",)]


def test_devswarm_run_exits_non_zero_with_one_line_when_the_model_never_plans(
    prefect_server: None, tmp_path: Path
) -> None:
    from devswarm.commands.common import EXIT_CODES
    from devswarm.offline.server import ModelServer, Scenario

    repo = make_repo(tmp_path / "user", {"README.md": "x\n"})
    scenario = Scenario.from_data({"default": GARBAGE, "server": {"json_schema": "llama.cpp"}})
    log = tmp_path / "requests.jsonl"
    with ModelServer(scenario, log_path=log) as server:
        result = devswarm_run(repo, server.url, tmp_path / "data", "--model", "offline-model")
    assert result.returncode == EXIT_CODES["no_plan"] == 5, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("devswarm: the model never produced a valid plan: ")
    assert "Traceback" not in result.stdout + result.stderr
    statuses = [(r["agent"].split("/")[0], r["status"]) for r in chat_requests(log)]
    assert statuses[:2] == [("preflight", 500), ("planner", 200)]  # probed once, at preflight


def test_a_model_the_endpoint_does_not_know_is_refused_at_preflight_in_one_line(
    prefect_server: None, tmp_path: Path
) -> None:
    from devswarm.offline.server import ModelServer, Scenario

    repo = make_repo(tmp_path / "user", {"README.md": "x\n"})
    # A gateway listing only some of what it serves: the unlisted offline-model is served.
    scenario = Scenario.from_data(
        {"models": ["offline-model", "listed"], "server": {"listed_models": ["listed"]}}
    )
    with ModelServer(scenario) as server:
        result = devswarm_run(
            repo, server.url, tmp_path / "data",
            "--planner-model", "offline-model", "--worker-model", "listed",
            "--judge-model", "no-such-model",
        )  # fmt: skip
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("devswarm: the model endpoint ") and "'no-such-model'" in line
    assert "404" in line and "Traceback" not in result.stdout + result.stderr
    assert not (tmp_path / "data" / "runs").exists()  # refused before it began: nothing left


def test_a_server_ignoring_tools_unseen_by_the_model_gets_them_in_the_prompt(
    swarm_run, tmp_path: Path
) -> None:
    """llama.cpp's server without --jinja drops `tools`: the model never sees them and answers
    in prose. No call at all from an endpoint never seen to answer one natively switches the
    agent to tools in the prompt, and the run's later agents start that way."""
    repo = make_repo(tmp_path / "user", {"README.md": "prose\n"})
    worker = [{"content": "I will write hello.txt now."}, *SCRIPT[1]["steps"]]
    script = [SCRIPT[0], {"match": "worker/*", "steps": worker}, JUDGE_DONE]
    server = {"tools": "ignored", "tool_call_text": "hermes"}
    summary, log = swarm_run({"agents": script, "server": server}, repo)
    assert summary["status"] == "done" and summary["tasks_landed"] == 1
    requests = chat_requests(log)
    work = [r["request"] for r in requests if r["agent"].startswith("worker/")]
    assert "tools" in work[0] and not any("tools" in w for w in work[1:])
    assert "<tools>" in work[1]["messages"][-1]["content"]  # described once, in the nudge
    judge = [r["request"] for r in requests if r["agent"].startswith("judge/")]
    assert judge and not any("tools" in j for j in judge)
    assert "<tools>" in judge[0]["messages"][0]["content"]  # in its system prompt from the start
