"""Whole swarms through real Prefect, real git and real HTTP to the offline model server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import chat_requests, git, make_repo, snapshot
from tests.helpers import JUDGE_DONE, plan_reply, rows, task, tc

CALC = """def add(a, b):
    return a + b
"""
CALC_TEST = """import unittest

from calc import add


class AddTest(unittest.TestCase):
    def test_add(self):
        self.assertEqual(add(2, 3), 5)
"""


def test_model_call_retries_429_with_retry_after_then_lands(swarm_run, tmp_path: Path) -> None:
    repo = make_repo(
        tmp_path / "user",
        {"calc.py": CALC, "tests/__init__.py": "", "tests/test_calc.py": CALC_TEST},
    )
    scenario = {
        "agents": [
            {
                "match": "planner/*",
                "steps": [
                    {
                        "fail": {"status": 429, "retry_after": 1, "attempts": 1},
                        **plan_reply(task("mul", ["calc.py"])),
                    }
                ],
            },
            {
                "match": "worker/*",
                "steps": [
                    {
                        "tool_calls": [
                            tc(
                                "edit_file",
                                path="calc.py",
                                old="    return a + b\n",
                                new="    return a + b\n\n\ndef mul(a, b):\n    return a * b\n",
                            )
                        ]
                    },
                    {"tool_calls": [tc("finish", summary="added mul")]},
                ],
            },
            JUDGE_DONE,
        ]
    }
    summary, log = swarm_run(scenario, repo, check="python -m unittest -q")
    db = Path(summary["db"])
    assert summary["status"] == "done"
    planner_calls = rows(
        db,
        "SELECT attempt, http_status, error_type FROM model_calls WHERE agent_id LIKE 'planner/%' ORDER BY started_at",
    )
    assert planner_calls[0][:2] == (1, 429)
    assert planner_calls[1][:2] == (2, 200)
    reqs = chat_requests(log)
    assert [r["status"] for r in reqs if r["agent"].startswith("planner/")] == [429, 200]
    # every HTTP attempt is one row, and the log agrees
    assert rows(db, "SELECT count(*) FROM model_calls")[0][0] == len(reqs)
    assert rows(db, "SELECT status FROM tasks")[0][0] == "landed"
    assert "def mul" in git(repo, "show", f"{summary['branch']}:calc.py")
    # The retry is visible in Prefect as a second run of the same task run.
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterName

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            task_run_filter=TaskRunFilter(
                name=TaskRunFilterName(like_=f"planner/{summary['run_id']}/%")
            )
        )
    assert any(r.run_count == 2 for r in runs)


def test_task_failing_its_own_check_is_not_landed(swarm_run, tmp_path: Path) -> None:
    repo = make_repo(
        tmp_path / "user",
        {"calc.py": CALC, "tests/__init__.py": "", "tests/test_calc.py": CALC_TEST},
    )
    wrong = {
        "tool_calls": [
            tc("write_file", path="calc.py", content="def add(a, b):\n    return a - b\n")
        ]
    }
    finish = {"tool_calls": [tc("finish", summary="done (not really)")]}
    scenario = {
        "agents": [
            {
                "match": "planner/*",
                "steps": [
                    plan_reply(task("break", ["calc.py"], "python -m unittest -q tests.test_calc"))
                ],
            },
            {"match": "worker/*", "steps": [wrong, finish, finish, finish]},
            JUDGE_DONE,
        ]
    }
    before = git(repo, "rev-parse", "HEAD")
    summary, log = swarm_run(scenario, repo)
    db = Path(summary["db"])
    status, reason = rows(db, "SELECT status, reason FROM tasks")[0]
    assert status == "failed" and "check" in reason
    assert summary["tip"] == before  # nothing landed
    # The failure output went back to the agent (check_turns = 2 more turns).
    worker_reqs = [r for r in chat_requests(log) if r["agent"].startswith("worker/")]
    assert any(
        "failed after you finished" in json.dumps(r["request"]["messages"]) for r in worker_reqs
    )
    assert rows(db, "SELECT count(*) FROM landings")[0][0] == 0


def test_landing_that_turns_a_passing_check_red_is_refused(swarm_run, tmp_path: Path) -> None:
    repo = make_repo(
        tmp_path / "user",
        {"calc.py": CALC, "tests/__init__.py": "", "tests/test_calc.py": CALC_TEST},
    )
    breaks = {
        "tool_calls": [tc("write_file", path="calc.py", content="def add(a, b):\n    return 0\n")]
    }
    finish = {"tool_calls": [tc("finish", summary="simplified add")]}
    scenario = {
        "agents": [
            {"match": "planner/*", "steps": [plan_reply(task("simplify", ["calc.py"]))]},
            {"match": "worker/*", "steps": [breaks, finish, finish, finish]},
            JUDGE_DONE,
        ]
    }
    before = git(repo, "rev-parse", "HEAD")
    summary, log = swarm_run(scenario, repo, check="python -m unittest -q")
    status, reason = rows(Path(summary["db"]), "SELECT status, reason FROM tasks")[0]
    assert status == "failed" and "red" in reason
    assert summary["tip"] == before
    worker_reqs = [r for r in chat_requests(log) if r["agent"].startswith("worker/")]
    assert any(
        "passed before your change and fails with it" in json.dumps(r["request"]["messages"])
        for r in worker_reqs
    )


def test_demo_end_to_end_offline(tmp_path: Path) -> None:
    """The README's demo, as a user runs it: a fresh process, its own temporary Prefect server.

    The user's git config signs commits and has a failing pre-commit hook: landings still work,
    and the user's checkout and branches stay as they were.
    """
    home = tmp_path / "home"
    hooks = home / "hooks"
    hooks.mkdir(parents=True)
    (hooks / "pre-commit").write_text("#!/bin/sh\necho 'hook says no' >&2\nexit 1\n")
    (hooks / "pre-commit").chmod(0o755)
    (home / ".gitconfig").write_text(
        f"[commit]\n\tgpgsign = true\n[user]\n\tsigningkey = DEADBEEF\n\tname = U\n\temail = u@x.invalid\n"
        f"[core]\n\thooksPath = {hooks}\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "OPENAI_"))}
    env.update(
        HOME=str(home), PREFECT_HOME=str(home / ".prefect"), DEVSWARM_HOME=str(home / "devswarm")
    )
    demo = tmp_path / "demo"
    exe = Path(sys.executable).parent / "devswarm"
    proc = subprocess.run(
        [str(exe), "demo", "--dir", str(demo)], env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert "tasks landed   4 of 4" in proc.stdout
    # The runs' story goes to Prefect's API, not to the terminal (tests/test_watching.py).
    assert "worker on c1." not in proc.stderr and "step 1:" not in proc.stderr
    assert "Finished in state" not in proc.stderr

    repo = demo / "textkit"
    # The user's own branch and working tree are untouched: still the initial commit, clean.
    assert git(repo, "symbolic-ref", "HEAD") == "refs/heads/main"
    assert git(repo, "rev-list", "--count", "main") == "1"
    assert git(repo, "status", "--porcelain") == ""
    assert not (repo / "textkit" / "slug.py").exists()
    # The landing branch holds the landed commits, with trailers.
    log = git(
        repo, "log", "--format=%H%x00%(trailers:key=Devswarm-Task,valueonly)", "main..devswarm/demo"
    )
    tasks = [line.split("\x00")[1].strip() for line in log.splitlines() if "\x00" in line]
    assert len([t for t in tasks if t]) >= 4
    assert len(set(tasks)) == len(tasks)  # no task landed twice
    # Its test suite passes on the landing branch.
    wt = tmp_path / "check"
    git(repo, "worktree", "add", "-q", "--detach", str(wt), "devswarm/demo")
    check = subprocess.run(
        [sys.executable, "-m", "unittest", "discover", "-s", "tests", "-t", "."],
        cwd=wt,
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stderr

    db = demo / "data" / "devswarm.duckdb"
    assert rows(db, "SELECT count(*) FROM runs")[0][0] == 1
    assert rows(db, "SELECT count(*) FROM tasks WHERE status = 'landed'")[0][0] >= 4
    reqs = chat_requests(demo / "data" / "model-requests.jsonl")
    assert rows(db, "SELECT count(*) FROM model_calls")[0][0] == len(reqs)
    assert rows(db, "SELECT sum(input_tokens) FROM model_calls")[0][0] == sum(
        r["usage"]["prompt_tokens"] for r in reqs if r["usage"]
    )
    tool_calls_in_log = sum(
        len(r["response"]["choices"][0]["message"].get("tool_calls") or [])
        for r in reqs
        if r["status"] == 200
    )
    assert rows(db, "SELECT count(*) FROM tool_calls")[0][0] == tool_calls_in_log
    assert rows(db, "SELECT count(*) FROM landings WHERE resolved AND status = 'landed'")[0][0] >= 1
    assert rows(db, "SELECT count(*) FROM landings WHERE status = 'conflict'")[0][0] >= 1
    assert (
        rows(db, "SELECT count(DISTINCT plan_path) FROM agents WHERE role = 'planner'")[0][0] == 2
    )
    # The demo's fake key never reaches the store.
    dump = json.dumps(rows(db, "SELECT * FROM model_calls"), default=str) + json.dumps(
        rows(db, "SELECT * FROM runs"), default=str
    )
    assert "sk-offline-demo-key" not in dump


def test_flows_appear_as_parent_with_plan_subplan_work_and_judge_children(
    swarm_run, tmp_path: Path
) -> None:
    from prefect.client.orchestration import get_client

    from devswarm.demo import DEMO, make_demo_repo
    from tasks.history import flow_run_tree

    repo = make_demo_repo(tmp_path / "textkit")
    scenario = json.loads((DEMO / "scenario.json").read_text())
    summary, _ = swarm_run(
        scenario,
        repo,
        goal=(repo / "GOAL.md").read_text(),
        check="python -m unittest discover -s tests -t .",
    )
    assert summary["status"] == "done"
    with get_client(sync_client=True) as client:
        from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

        root = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                name=FlowRunFilterName(any_=[f"swarm: {summary['run_id']}"])
            )
        )
        assert len(root) == 1
        ids = flow_run_tree(client, [root[0].id])
        names = sorted(
            r.name for r in client.read_flow_runs(flow_run_filter=FlowRunFilter(id={"any_": ids}))
        )
    assert "plan: cycle 1, root" in names
    assert "plan: cycle 1, root.extras" in names
    assert sum(n.startswith("work: c1.") for n in names) == 4
    assert "judge: cycle 1" in names


@pytest.mark.parametrize(
    "args, message",
    [
        (["--repo", "{tmp}/missing", "--goal", "x"], "does not exist"),
        (["--repo", "{tmp}", "--goal", "x"], "not a git repository"),
        (["--repo", "{repo}", "--goal", "   "], "goal is empty"),
        (
            ["--repo", "{repo}", "--goal", "x", "--base-url", "http://127.0.0.1:9/v1"],
            "cannot reach the model endpoint",
        ),
        (
            ["--repo", "{repo}", "--goal", "x", "--branch", "main", "--base-url", "{url}"],
            "checked out",
        ),
        (["--repo", "{repo}", "--goal", "x", "--config", "{tmp}/nope.toml"], "does not exist"),
        (["--repo", "{repo}", "--goal", "x", "--config", "{tmp}/bad.toml"], "max_workers"),
        (["--repo", "{repo}", "--goal-file", "{tmp}/missing.md"], "goal file"),
    ],
)
def test_run_with_bad_input_says_one_line_and_exits_nonzero(
    tmp_path: Path, args: list[str], message: str
) -> None:
    from devswarm.offline.server import ModelServer, Scenario

    repo = make_repo(tmp_path / "user", {"a.txt": "a\n"})
    (tmp_path / "bad.toml").write_text('max_workers = "many"\n')
    before = snapshot(repo)
    with ModelServer(Scenario.from_data({})) as server:
        argv = [a.format(tmp=tmp_path, repo=repo, url=server.url) for a in args]
        env = {**os.environ, "DEVSWARM_HOME": str(tmp_path / "data"), "OPENAI_API_KEY": "sk-x"}
        env.pop("OPENAI_BASE_URL", None)
        if "--base-url" not in argv:
            env["OPENAI_BASE_URL"] = server.url
        proc = subprocess.run(
            [str(Path(sys.executable).parent / "devswarm"), "run", *argv],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert message in lines[0]
    assert "Traceback" not in proc.stderr
    assert snapshot(repo) == before


def test_a_run_on_a_model_that_refuses_max_tokens_pays_one_refusal(swarm_run, tmp_path) -> None:
    """OpenAI's newest models answer `max_tokens` with a 400 naming `max_completion_tokens`:
    the first agent switches, and every later agent of the run starts with the field that works."""
    repo = make_repo(tmp_path / "repo", {"README.md": "limits\n"})
    worker = {
        "steps": [
            {"tool_calls": [tc("write_file", path="{name}.txt", content="x\n")]},
            {"tool_calls": [tc("finish", summary="done")]},
        ]
    }
    scenario = {
        "output_limit": "max_completion_tokens",
        "agents": [
            {
                "match": "planner/*",
                "steps": [plan_reply(task("a", ["a.txt"]), task("b", ["b.txt"]))],
            },
            *[
                {
                    "match": f"worker/*/{n}/*",
                    "steps": json.loads(json.dumps(worker["steps"]).replace("{name}", n)),
                }
                for n in ("a", "b")
            ],
            JUDGE_DONE,
        ],
    }
    summary, log = swarm_run(scenario, repo)
    assert summary["status"] == "done" and summary["tasks_landed"] == 2
    requests = chat_requests(log)
    refused = [r for r in requests if r["status"] == 400]
    # The capability probe at the run's start pays it; every agent starts with the right field.
    assert len(refused) == 1 and refused[0]["agent"].startswith("preflight/"), refused
    later = [r for r in requests if r["status"] == 200]
    assert later and all("max_completion_tokens" in r["request"] for r in later)
    assert not any("max_tokens" in r["request"] for r in later)
