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
from pydantic import SecretStr

from devswarm.config import Budget, Models, SwarmConfig
from devswarm.offline.server import ModelServer, Scenario
from devswarm.records import read_records
from devswarm.roles.worker import task_worker_id, work_task
from devswarm.run.run import Run, plain_calls
from devswarm.schemas import PlannedTask, TaskSpec
from tests.conftest import chat_requests, git, make_repo
from tests.helpers import JUDGE_DONE, plan_reply, rows, task, tc, write_and_finish


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


def _planned(run: Run, id: str) -> PlannedTask:
    return PlannedTask(
        spec=TaskSpec(id=id, title=id, description=id), key=f"c1.root.{id}", cycle=1,
        plan_path="root", planner_agent_id=f"planner/{run.run_id}/c1/root",
        base_commit=run.workspace.tip(),
    )  # fmt: skip


def test_a_runs_spend_outlives_its_process_and_a_resumed_run_starts_from_it(
    tmp_path: Path,
) -> None:
    repo = make_repo(tmp_path / "user", {"README.md": "x\n"})
    scenario = {
        "agents": [
            {"match": f"worker/*/{n}/*", "steps": write_and_finish(f"{n}.txt", f"{n}\n")}
            for n in ("one", "two")
        ]
    }
    with ModelServer(Scenario.from_data(scenario)) as server:

        def a_run(max_cost_usd: float) -> Run:
            return Run(
                SwarmConfig(
                    goal="g", repo=repo, base_url=server.url, api_key=SecretStr("sk-x"),
                    models=Models.single("offline-model"), home=tmp_path / "data", run_id="r",
                    budget=Budget(max_cost_usd=max_cost_usd, max_wall_seconds=3600),
                )
            )  # fmt: skip

        first = a_run(1.0)
        assert work_task(first, plain_calls, _planned(first, "one")).status == "landed"
        spent = first.ledger.spent()
        first.close()
        assert spent.tokens > 0 and spent.cost_usd > 0
        # The process is gone; the run's folder remembers what it paid.
        recorded = json.loads((tmp_path / "data" / "runs" / "r" / "ledger.json").read_text())
        assert recorded["tokens"] == spent.tokens and recorded["cost_usd"] == spent.cost_usd

        # Resumed with a cap only a little above that: one more call does not fit.
        resumed = a_run(spent.cost_usd * 1.01)
        assert (resumed.ledger.tokens, resumed.ledger.cost) == (spent.tokens, spent.cost_usd)
        assert 0 < recorded["wall_seconds"] <= spent.wall_seconds
        assert resumed.ledger.deadline - time.monotonic() <= 3600 - recorded["wall_seconds"]
        report = work_task(resumed, plain_calls, _planned(resumed, "two"))
        resumed.close()
    assert report.status == "budget_exhausted"
    assert resumed.ledger.cost == spent.cost_usd


PRICE = 5.0  # US$ per million tokens, input, cached input and output alike
BUDGET = 0.30


def _cost(r: dict) -> float:
    return r["usage"]["total_tokens"] * PRICE / 1e6 if r["status"] == 200 else 0.0


@pytest.mark.slow
def test_a_run_killed_at_60_percent_of_its_budget_and_resumed_stops_at_the_budget(
    tmp_path: Path,
) -> None:
    repo = make_repo(tmp_path / "user", {"README.md": "x\n"})
    names = [f"t{i}" for i in range(8)]  # more work than the budget pays for
    steps = [{"tool_calls": [tc("list_files", path=".", pattern=f"*{j}*")]} for j in range(9)]
    scenario = {
        "latency": 0.3,
        "agents": [
            {"match": "planner/*/followup-*", "steps": [plan_reply()]},
            {"match": "planner/*", "steps": [plan_reply(*[task(n, [f"{n}.txt"]) for n in names])]},
            *[
                {"match": f"worker/*/{n}/*", "steps": [*steps, *write_and_finish(f"{n}.txt", n)]}
                for n in names
            ],
            JUDGE_DONE,
        ],
    }
    settings = tmp_path / "swarm.toml"
    settings.write_text(
        f'[prices."offline-model"]\ninput = {PRICE}\ncached_input = {PRICE}\noutput = {PRICE}\n'
        f"[budget]\nmax_cost_usd = {BUDGET}\n"
    )
    home = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API", "OPENAI_"))}
    env.update(DEVSWARM_HOME=str(home), OPENAI_API_KEY="sk-x", PREFECT_HOME=str(tmp_path / "p"))
    exe = str(Path(sys.executable).parent / "devswarm")
    log = tmp_path / "requests.jsonl"
    with ModelServer(Scenario.from_data(scenario), log_path=log) as server:
        proc = subprocess.Popen(
            [exe, "run", "--repo", str(repo), "--goal", "g", "--base-url", server.url, "--model",
             "offline-model", "--workers", "2", "--run-id", "budget", "--config", str(settings)],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            paid = sum(_cost(r) for r in chat_requests(log)) if log.exists() else 0.0
            if paid >= 0.6 * BUDGET:
                break
            time.sleep(0.05)
        time.sleep(0.2)  # the answers just sent are cached
        killed_at = time.time()
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        time.sleep(1.0)  # calls in flight finish at the server, for a dead client
        resumed_at = time.time()
        out = subprocess.run(
            [exe, "resume", "budget"], env=env, capture_output=True, text=True, timeout=300
        )
    assert out.returncode == 4, out.stdout + out.stderr  # the budget ran out
    served = chat_requests(log)
    before = [r for r in served if _answered(r) <= killed_at]
    dead = [r for r in served if _answered(r) > killed_at and _when(r) < resumed_at]
    after = [r for r in served if _when(r) >= resumed_at]
    assert 0.5 * BUDGET <= sum(map(_cost, before)) < BUDGET
    assert sum(map(_cost, after)) > 0  # the resumed run went on working...
    # ...and stopped at the budget, counting what the killed process had paid.
    paid = sum(map(_cost, before + after))
    assert paid <= BUDGET
    ledger = json.loads((home / "runs" / "budget" / "ledger.json").read_text())
    assert ledger["cost_usd"] == pytest.approx(paid)
    db = home / "devswarm.duckdb"
    assert rows(db, "SELECT sum(cost_usd) FROM model_calls")[0][0] == pytest.approx(paid)
    assert rows(db, "SELECT status FROM runs")[0][0] == "budget_exhausted"
    # Calls answered before the kill replayed from the cache: not sent, not paid again.
    # (An answer in the last second before the kill may not have been persisted yet: a loaded
    # machine can take that long, and such a call is honestly sent again.)
    answered = {_key(r) for r in before if r["status"] == 200 and _answered(r) <= killed_at - 1.0}
    assert not [r for r in after if _key(r) in answered]
    assert len(dead) <= 2  # at most one call in flight per worker, paid at the server only


@pytest.mark.parametrize("fails", ["landing", "after landing"])
def test_a_work_flow_that_raises_is_retried_by_prefect_free_and_its_task_lands_once(
    prefect_server: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fails: str
) -> None:
    import flows.work

    repo = make_repo(tmp_path / "user", {"README.md": "x\n"})
    scenario = {"agents": [{"match": "worker/*", "steps": write_and_finish("a.txt", "a\n")}]}
    raised: list[str] = []

    def once(real):  # the first call raises, as a full disk or a lost connection would
        def call(*args):
            if not raised:
                raised.append(fails)
                raise OSError("no space left on device")
            return real(*args)

        return call

    name = "land" if fails == "landing" else "work_artifact"
    monkeypatch.setattr(flows.work, name, once(getattr(flows.work, name)))
    log = tmp_path / "requests.jsonl"
    with ModelServer(Scenario.from_data(scenario), log_path=log) as server:
        run = Run(
            SwarmConfig(
                goal="g", repo=repo, base_url=server.url, api_key=SecretStr("sk-x"),
                models=Models.single("offline-model"), home=tmp_path / "data", run_id=f"retry-{name.replace('_', '-')}",
            )
        )  # fmt: skip
        try:
            report = flows.work.work(run.run_id, _planned(run, "a"), 1)
        finally:
            run.close()
    assert raised and report.status == "landed"
    assert len(chat_requests(log)) == 2  # the retry's calls replayed from Prefect's cache
    tasks = git(repo, "log", "--format=%(trailers:key=Devswarm-Task,valueonly)", run.branch)
    assert tasks.split() == ["c1.root.a"]  # landed once
    # A retry after the landing found the task's trailer and did not work or land it again.
    records = read_records(run.agent_log(task_worker_id(run, _planned(run, "a"))).path)
    assert [r["status"] for r in records if r["kind"] == "landing"] == ["landed"]


def test_planners_are_told_the_hot_files_of_the_cycles_start_also_after_a_resume(
    tmp_path: Path,
) -> None:
    repo = make_repo(tmp_path / "user", {"README.md": "x\n"})
    cfg = SwarmConfig(goal="g", repo=repo, home=tmp_path / "data", run_id="hot")
    run = Run(cfg)
    run.progress.conflicted(["old.py"])
    run.cycle_base(1)  # the root planner records the cycle's base
    run.progress.conflicted(["new.py"])  # a worker's landing conflicts while sub-planners plan
    assert run.cycle_hot_files(1) == {"old.py": 1}
    run.save_state()
    run.close()
    resumed = Run(cfg)
    assert resumed.progress.hot() == {"old.py": 1, "new.py": 1}
    assert resumed.cycle_hot_files(1) == {"old.py": 1}  # the same request as before the crash
    assert resumed.cycle_hot_files(2) == {"old.py": 1, "new.py": 1}
    resumed.close()
