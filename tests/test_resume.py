"""A swarm killed with SIGKILL mid-cycle, then resumed: nothing lost, nothing paid twice."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest

from devswarm.offline.server import ModelServer, Scenario
from tests.conftest import chat_requests, git, make_repo
from tests.helpers import JUDGE_DONE, plan_reply, rows, task, tc


def _key(r: dict) -> tuple:
    body = json.dumps(r["request"], sort_keys=True)
    return r["agent"], r["step"], hashlib.sha256(body.encode()).hexdigest()


def _when(r: dict) -> float:
    """When the server received the request."""
    return datetime.fromisoformat(r["time"].replace("Z", "+00:00")).timestamp()


def _answered(r: dict) -> float:
    """When the server sent its answer."""
    return _when(r) + r["latency_ms"] / 1000


@pytest.mark.slow
def test_killed_run_resumes_without_redoing_or_repaying(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "user", {"README.md": "x\n"})
    names = ["alpha", "beta", "gamma"]
    scenario = {
        "latency": 1.0,
        "agents": [
            {"match": "planner/*/followup-*", "steps": [plan_reply()]},
            {"match": "planner/*", "steps": [plan_reply(*[task(n, [f"{n}.txt"]) for n in names])]},
            *[
                {
                    "match": f"worker/*/{n}/*",
                    "steps": [
                        {"tool_calls": [tc("write_file", path=f"{n}.txt", content=f"{n} 1\n")]},
                        {"tool_calls": [tc("write_file", path=f"{n}.txt", content=f"{n} 2\n")]},
                        {"tool_calls": [tc("finish", summary=f"{n} done")]},
                    ],
                }
                for n in names
            ],
            JUDGE_DONE,
        ],
    }
    home = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API", "OPENAI_"))}
    env.update(
        DEVSWARM_HOME=str(home),
        OPENAI_API_KEY="sk-resume-secret",
        PREFECT_HOME=str(tmp_path / "prefect"),
    )
    exe = str(Path(sys.executable).parent / "devswarm")
    log = tmp_path / "requests.jsonl"
    with ModelServer(Scenario.from_data(scenario), log_path=log) as server:
        proc = subprocess.Popen(
            [exe, "run", "--repo", str(repo), "--goal", "write three files", "--base-url", server.url,
             "--model", "offline-model", "--workers", "1", "--run-id", "resumeme"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            answered = [r for r in chat_requests(log) if r["status"] == 200] if log.exists() else []
            if len(answered) >= 6:  # the planner, alpha's three calls, beta's first two
                break
            time.sleep(0.05)
        time.sleep(0.5)  # beta's last call is in flight now; everything answered is cached
        killed_at = time.time()
        os.killpg(proc.pid, signal.SIGKILL)  # the orchestrator and its temporary Prefect server
        proc.wait()
        time.sleep(1.5)  # the in-flight request finishes at the server, for a dead client
        before = [r for r in chat_requests(log) if _answered(r) <= killed_at]
        resumed_at = time.time()
        out = subprocess.run(
            [exe, "resume", "resumeme"], env=env, capture_output=True, text=True, timeout=300
        )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "done after 1 cycle" in out.stdout

    after = [r for r in chat_requests(log) if _when(r) >= resumed_at]
    answered_before = {_key(r) for r in before if r["status"] == 200}
    repaid = [r for r in after if _key(r) in answered_before]
    assert repaid == []  # 0 tokens spent again on calls answered before the kill
    assert len(answered_before) >= 6

    # Every task landed exactly once.
    trailers = git(
        repo, "log", "--format=%(trailers:key=Devswarm-Task,valueonly)", "devswarm/resumeme"
    ).split()
    assert sorted(trailers) == ["c1.root.alpha", "c1.root.beta", "c1.root.gamma"]
    for n in names:
        assert git(repo, "show", f"devswarm/resumeme:{n}.txt") == f"{n} 2"

    db = home / "devswarm.duckdb"
    assert sorted(r[0] for r in rows(db, "SELECT task_key FROM tasks WHERE status = 'landed'")) == [
        f"c1.root.{n}" for n in names
    ]
    # One row per HTTP attempt the orchestrator saw: before the kill and after the resume.
    assert rows(db, "SELECT count(*) FROM model_calls")[0][0] == len(before) + len(after)
    assert rows(db, "SELECT count(*) FROM runs")[0][0] == 1
    assert rows(db, "SELECT status FROM runs")[0][0] == "done"
    # The crashed process's worktrees are gone.
    assert not [p for p in (home / "repos").glob("*/worktrees/*") if p.is_dir()]
