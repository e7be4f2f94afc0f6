"""What a Prefect user sees of a real swarm run (temporary Prefect server, offline model
server): each flow run's Logs tab tells its own story, the live artifacts reach their end state
updated in place, every artifact is described, the run's events are emitted, and the swarm flow
run's final state says what happened while `run_swarm` still returns the summary."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from tests.conftest import git, make_repo
from tests.helpers import JUDGE_DONE, plan_reply, task, tc

SECRET = "sk-test-secret-0123456789"  # the swarm_run fixture's OPENAI_API_KEY
FILE_TEXT = "FILE-CONTENT-MARKER"  # what alpha writes: never in a log


def _scenario() -> dict:
    exploring = {"tool_calls": [tc("list_files", path=".")]}
    return {
        "agents": [
            {
                "match": "planner/*",
                "steps": [
                    exploring,
                    plan_reply(
                        task("alpha", ["a.txt"], check="test -f a.txt"),
                        task("beta", ["b.txt"], check="grep -q ok b.txt"),
                        task("gamma", ["g.txt"]),
                        task("delta", ["d.txt"], depends_on=["gamma"]),
                    ),
                ],
            },
            {
                "match": "worker/*/alpha/*",
                "steps": [
                    {"tool_calls": [tc("read_file", path="calc.py")]},
                    {"tool_calls": [tc("run", command=f"echo {SECRET}")]},
                    {"tool_calls": [tc("write_file", path="a.txt", content=FILE_TEXT * 40)]},
                    {"tool_calls": [tc("finish", summary="wrote a.txt")]},
                ],
            },
            {
                "match": "worker/*/beta/*",
                "steps": [
                    {"tool_calls": [tc("write_file", path="b.txt", content="no\n")]},
                    {"tool_calls": [tc("finish", summary="wrote b.txt")]},
                    {"tool_calls": [tc("write_file", path="b.txt", content="ok\n")]},
                    {"tool_calls": [tc("finish", summary="fixed b.txt")]},
                ],
            },
            {"match": "worker/*/gamma/*", "steps": [{"tool_calls": [tc("finish", summary="no")]}]},
            JUDGE_DONE,
        ]
    }


def _flow_runs(client: Any, run_id: str) -> dict[str, Any]:
    """The run's flow runs by name (the swarm run and every descendant)."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

    from tasks.history import flow_run_tree

    (root,) = client.read_flow_runs(
        flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[f"swarm: {run_id}"]))
    )
    ids = flow_run_tree(client, [root.id])
    return {
        r.name: r for r in client.read_flow_runs(flow_run_filter=FlowRunFilter(id={"any_": ids}))
    }


def _logs(client: Any, flow_run_id: Any) -> list[str]:
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    found = client.read_logs(
        log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id]))
    )
    # devswarm's own lines (Prefect's flow-run lines come too, when its logger is at INFO)
    return [f"{log.name}: {log.message}" for log in found if log.name.startswith("devswarm")]


def _events(client: Any, run_id: str) -> list[dict]:
    """devswarm's events about this run, oldest first, once run.finished is among them (events
    are written asynchronously)."""
    body = {"filter": {"resource": {"id": [f"devswarm.run.{run_id}"]}}, "limit": 50}
    deadline = time.monotonic() + 30
    while True:
        events = client._client.post("/events/filter", json=body).json()["events"]
        if any(e["event"] == "devswarm.run.finished" for e in events):
            return sorted(events, key=lambda e: e["occurred"])
        assert time.monotonic() < deadline, events
        time.sleep(0.5)


def test_every_flow_run_logs_its_story_and_the_live_artifacts_end_at_100(
    swarm_run, tmp_path: Path
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    repo = make_repo(tmp_path / "calc", {"calc.py": "def add(a, b):\n    return a + b\n"})
    summary, _ = swarm_run(_scenario(), repo, max_followups=0)
    assert summary["status"] == "done"
    assert (summary["tasks_landed"], summary["tasks_not_landed"]) == (2, 2)  # gamma, delta
    alpha_tip = git(repo, "log", "-1", "--format=%H", "--grep=do alpha", summary["branch"])

    with get_client(sync_client=True) as client:
        runs = _flow_runs(client, summary["run_id"])
        deadline = time.monotonic() + 30  # logs are sent in batches, in the background
        while True:
            logs = {name: _logs(client, r.id) for name, r in runs.items()}
            if all(logs.values()) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        swarm = runs[f"swarm: {summary['run_id']}"]
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id={"any_": [r.id for r in runs.values()]})
        )
        boards = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=["swarm-board"]), flow_run_id={"any_": [swarm.id]}
            )
        )
        events = _events(client, summary["run_id"])

    # The planner's exploration and the tasks it returned.
    plan = "\n".join(logs["plan: cycle 1, root"])
    assert "devswarm.planner: step 1: list_files path='.' -> ok" in plan
    assert "plan of root: 4 task(s), 0 scope(s)" in plan
    assert "task c1.root.delta: do delta [d.txt]; after c1.root.gamma" in plan
    # Each worker step, its checks and its landing, in its own work run.
    alpha = logs["work: c1.root.alpha"]
    assert alpha[:2] == [
        "devswarm.worker: worker on c1.root.alpha: do alpha "
        f"(base {git(repo, 'rev-parse', 'main')[:10]}, files a.txt)",
        "devswarm.worker: step 1: read_file path='calc.py' -> ok, 3 lines of output",
    ]
    assert "devswarm.worker: step 2: run command='echo [redacted]' -> exit code 0" in alpha
    assert "devswarm.worker: step 3: write_file path='a.txt' content=<760 chars> -> " in "\n".join(
        alpha
    )
    assert "devswarm.worker: task check `test -f a.txt`: passes" in alpha
    assert any(f"new tip {alpha_tip[:10]}" in line for line in alpha), alpha
    beta = "\n".join(logs["work: c1.root.beta"])
    assert (
        "task check `grep -q ok b.txt`: fails (exit code 1); its last lines:\n(no output)" in beta
    )
    assert beta.index(": fails") < beta.index("task check `grep -q ok b.txt`: passes")
    assert "ended landed as" in beta
    assert "ended failed: the worker finished without changing anything" in "\n".join(
        logs["work: c1.root.gamma"]
    )
    assert "verdict of cycle 1: done (score 1.00): ok" in "\n".join(logs["judge: cycle 1"])
    story = "\n".join(logs[swarm.name])
    assert "devswarm.swarm: cycle 1: 4 tasks planned" in story
    assert "c1.root.delta: skipped (dependency c1.root.gamma did not land)" in story
    everything = "\n".join(line for lines in logs.values() for line in lines)
    assert SECRET not in everything and FILE_TEXT not in everything

    # The live artifacts: 100 % although two tasks did not land; the board, one artifact
    # updated in place, ends with the final counts. Every artifact says what it is.
    by_key = {a.key: a for a in artifacts}
    assert by_key["swarm-progress"].data == 100.0
    assert len(boards) == 1
    assert "| 0 | 4 | 0 | 0 | 2 | 1 | 1 |" in boards[0].data  # planning .. skipped
    assert "1 of at most 1 cycle(s) done" in boards[0].data
    assert all(a.description for a in artifacts), [a.key for a in artifacts if not a.description]
    assert {"plan-root", "work-alpha", "judge-verdict", "swarm-summary", "swarm-board"} <= set(
        by_key
    )

    # The run's final state says what happened; events tell automations.
    assert swarm.state.is_completed() and "the judge says done; 2 task(s) landed" in (
        swarm.state.message or ""
    )
    names = [
        (e["event"], e["related"][0]["prefect.resource.name"] if e["related"] else "")
        for e in events
    ]
    assert ("devswarm.task.landed", "c1.root.alpha") in names
    assert ("devswarm.task.abandoned", "c1.root.gamma") in names
    assert names[-1][0] == "devswarm.run.finished"
    assert events[-1]["resource"]["devswarm.status"] == "done"


def test_a_run_out_of_budget_ends_failed_with_its_reason_and_returns_its_summary(
    swarm_run, tmp_path: Path
) -> None:
    from prefect.client.orchestration import get_client

    from devswarm.config import Budget

    repo = make_repo(tmp_path / "calc", {"calc.py": "x = 1\n"})
    summary, log = swarm_run(_scenario(), repo, budget=Budget(max_tokens=2_000))
    assert summary["status"] == "budget_exhausted"
    # Only the capability probe's tiny request fitted the budget; no agent's call did.
    requests = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    chats = [r for r in requests if r["path"].endswith("/chat/completions")]
    assert [r["agent"].split("/")[0] for r in chats] == ["preflight"]
    with get_client(sync_client=True) as client:
        swarm = _flow_runs(client, summary["run_id"])[f"swarm: {summary['run_id']}"]
        events = _events(client, summary["run_id"])
    assert swarm.state.is_failed(), swarm.state
    assert swarm.state.message == "budget exhausted (tokens); 0 task(s) landed in 0 cycle(s)"
    assert [e["event"] for e in events] == ["devswarm.budget.exhausted", "devswarm.run.finished"]
    assert events[0]["payload"] == {"budget": "tokens", "spent": summary["tokens"], "cap": 2000}
    assert events[1]["resource"]["devswarm.status"] == "budget_exhausted"


def test_devswarm_run_out_of_budget_prints_its_summary_and_exits_4(tmp_path: Path) -> None:
    """Its flow run ends Failed; the command still prints the summary, exits with the status's
    code, and the terminal shows no traceback and no log line (they went to Prefect's API)."""
    import os
    import subprocess
    import sys

    from devswarm.offline.server import ModelServer, Scenario

    repo = make_repo(tmp_path / "calc", {"calc.py": "x = 1\n"})
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "OPENAI_"))}
    env.update(PREFECT_HOME=str(tmp_path / "prefect"), OPENAI_API_KEY=SECRET)
    env["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = "120"  # a busy machine
    with ModelServer(Scenario.from_data(_scenario())) as server:
        proc = subprocess.run(
            [sys.executable, "-m", "devswarm.cli", "run", "--repo", str(repo), "--goal", "x",
             "--base-url", server.url, "--model", "offline-model", "--max-tokens", "2000",
             "--home", str(tmp_path / "data"), "--cycles", "1"],
            env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert "budget_exhausted after 0 cycle(s)" in proc.stdout
    assert "Traceback" not in proc.stderr and "budget exhausted (tokens)" not in proc.stderr
    assert "budget: tokens exhausted (" in proc.stderr  # an event line
    assert SECRET not in proc.stdout + proc.stderr


def test_the_board_shows_the_counts_and_no_secret(tmp_path: Path) -> None:
    from pydantic import SecretStr

    from devswarm.config import Models, SwarmConfig
    from devswarm.run.run import Run
    from tasks.live_artifacts import board_markdown

    repo = make_repo(tmp_path / "calc", {"calc.py": "x = 1\n"})
    config = SwarmConfig(
        goal="g", repo=repo, models=Models.single("m"), home=tmp_path / "data",
        base_url="http://x", api_key=SecretStr(SECRET), check=f"KEY={SECRET} pytest -q",
    )  # fmt: skip
    run = Run(config)
    try:
        run.progress.bump("planned", 3)
        run.progress.bump("working")
        board = board_markdown(run, [f"c1.root.a: failed (leaked {SECRET})"])
    finally:
        run.close()
    assert SECRET not in board
    assert "| 0 | 3 | 1 | 2 | 0 | 0 | 0 |" in board  # planning, planned, working, pending, ...
    assert "not checked yet `KEY=[redacted] pytest -q`" in board
    assert "- c1.root.a: failed (leaked [redacted])" in board
