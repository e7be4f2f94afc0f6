"""prefect.yaml's scheduled swarm deployment, deployed and run as the README says, on a real
`devswarm server` with a process work pool and a Prefect worker in its own process."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devswarm import server
from tests.conftest import git, make_repo
from tests.test_blocks import CALC, KEY, MUL_SCENARIO
from tests.test_server import fresh_server_folder

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(args: list[str], env: dict, **kwargs) -> str:
    done = subprocess.run(
        args, env=env, capture_output=True, text=True, timeout=120, cwd=ROOT, **kwargs
    )
    assert done.returncode == 0, f"{args}: {done.stdout[-2000:]} {done.stderr[-2000:]}"
    return done.stdout


@pytest.mark.slow
def test_scheduled_swarm_deployment_completes_with_its_child_runs(tmp_path: Path) -> None:
    with fresh_server_folder() as root:
        _deploy_and_run(root, tmp_path)


@contextlib.contextmanager
def _nightly(root: Path, tmp_path: Path, scenario: dict, repo: Path) -> Iterator[str]:
    """prefect.yaml deployed as the README says, each step in its own process, on a real
    `devswarm server` with a process work pool and a Prefect worker; the offline model server
    answers `scenario` (request log: tmp_path/requests.jsonl). Yields `prefect deploy`'s output
    with this process's Prefect settings pointed at the server."""
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    from devswarm.offline.server import ModelServer, Scenario
    from tests.test_scaleout import _stop

    state, _ = server.start(root, port=_free_port())
    worker = None
    try:
        auth = server.read_auth(root) or ""
        env = {
            **os.environ,
            "PREFECT_API_URL": state.api_url,
            "PREFECT_API_AUTH_STRING": auth,
            "PREFECT_HOME": str(tmp_path / "prefect-home"),
            "PREFECT_WORKER_QUERY_SECONDS": "1",
            "PREFECT_LOGGING_LEVEL": "WARNING",
        }
        env.pop("OPENAI_API_KEY", None)  # the run must take the key from the provider block
        env.pop("OPENAI_BASE_URL", None)
        log = tmp_path / "requests.jsonl"
        with ModelServer(Scenario.from_data(scenario), log_path=log) as model_server:
            _run(
                [sys.executable, "-m", "devswarm.cli", "init", "--base-url", model_server.url]
                + ["--model", "offline-model", "--repo", str(repo), "--branch", "devswarm/nightly"]
                + ["--home", str(tmp_path / "data")],
                {**env, "OPENAI_API_KEY": KEY},
            )
            prefect = [sys.executable, "-m", "prefect"]
            _run([*prefect, "work-pool", "create", "devswarm", "--type", "process"], env)
            deployed = _run([*prefect, "--no-prompt", "deploy", "--all"], env)
            worker = subprocess.Popen(
                [*prefect, "worker", "start", "--pool", "devswarm"],
                env=env,
                cwd=tmp_path,
                stdout=(tmp_path / "worker.log").open("w"),
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            with temporary_settings(
                {PREFECT_API_URL: state.api_url, PREFECT_API_AUTH_STRING: auth}
            ):
                yield deployed
    finally:
        if worker is not None:
            _stop(worker)


def _deploy_and_run(root: Path, tmp_path: Path) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId
    from prefect.deployments import run_deployment

    repo = make_repo(tmp_path / "calc", {"calc.py": CALC, "GOAL.md": "Add mul.\n"})
    log = tmp_path / "requests.jsonl"
    with _nightly(root, tmp_path, MUL_SCENARIO, repo) as deployed:
        assert "swarm-from-blocks/nightly" in deployed
        flow_run = run_deployment(
            "swarm-from-blocks/nightly",
            parameters={"max_cycles": 1, "max_workers": 2},
            timeout=0,
        )
        with get_client(sync_client=True) as client:
            deadline = time.monotonic() + 240
            while time.monotonic() < deadline:
                flow_run = client.read_flow_run(flow_run.id)
                if flow_run.state and flow_run.state.is_final():
                    break
                time.sleep(1)
            deployment = client.read_deployment_by_name("swarm-from-blocks/nightly")
            worker_deployment = client.read_deployment_by_name("work-remote/devswarm-worker")
            children = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[flow_run.id])
                )
            )
    worker_output = (tmp_path / "worker.log").read_text()
    assert flow_run.state.is_completed(), f"{flow_run.state}\n{worker_output[-3000:]}"
    assert sorted(c.name.split(": ")[0] for c in children) == ["judge", "plan", "work"]
    assert all(c.state.is_completed() for c in children)
    assert "def mul" in git(repo, "show", "devswarm/nightly:calc.py")
    assert log.read_text().count('"agent": "worker/') == 2  # the offline model did the work
    # prefect.yaml's schedule and one-at-a-time limit reached the server.
    assert deployment.global_concurrency_limit.limit == 1
    assert worker_deployment.work_pool_name == "devswarm"  # scale-out's worker deployment
    assert [s.schedule.cron for s in deployment.schedules] == ["0 2 * * *"]
    assert KEY not in str(flow_run.parameters) and KEY not in worker_output


@pytest.mark.slow
@pytest.mark.drill
def test_cancelling_a_deployment_run_drains_the_swarm(tmp_path: Path) -> None:
    """What the UI's Cancel does (the flow run set to Cancelling; the Prefect worker SIGTERMs the
    run's process group): the swarm drains — the landed task stays, the running worker stops at
    its next step, the run is recorded as stopped — instead of dying mid-landing."""
    with fresh_server_folder() as root:
        _cancel_drains(root, tmp_path)


def _cancel_drains(root: Path, tmp_path: Path) -> None:
    import duckdb
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.objects import StateType
    from prefect.deployments import run_deployment
    from prefect.states import Cancelling

    from tests.helpers import JUDGE_DONE, plan_reply, task, tc

    def worker(name: str, latency: float) -> dict:
        return {
            "match": f"worker/*/{name}/*",
            "steps": [
                {"tool_calls": [tc("list_files", path=".")]},
                {
                    "tool_calls": [tc("write_file", path=f"{name}.txt", content=f"{name}\n")],
                    "latency": latency,
                },
                {"tool_calls": [tc("finish", summary="done")]},
            ],
        }

    plan = plan_reply(task("fast", ["fast.txt"]), task("slow", ["slow.txt"]))
    scenario = {
        "latency": 0.05,
        "agents": [
            {"match": "planner/*", "steps": [plan]},
            worker("fast", 0.05),
            worker("slow", 8.0),
            JUDGE_DONE,
        ],
    }
    repo = make_repo(tmp_path / "calc", {"calc.py": CALC, "GOAL.md": "Two files.\n"})
    branch = "devswarm/nightly"
    data = tmp_path / "data"
    with _nightly(root, tmp_path, scenario, repo):
        flow_run = run_deployment(
            "swarm-from-blocks/nightly",
            parameters={"max_cycles": 1, "max_workers": 2},
            timeout=0,
        )
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:  # the fast task landed; slow is thinking
            shown = subprocess.run(
                ["git", "-C", str(repo), "show", f"{branch}:fast.txt"], capture_output=True
            )
            if shown.returncode == 0:
                break
            time.sleep(0.2)
        else:
            raise AssertionError((tmp_path / "worker.log").read_text()[-3000:])
        with get_client(sync_client=True) as client:
            client.set_flow_run_state(flow_run.id, Cancelling(), force=True)  # the UI
            cancelled_at = time.monotonic()
            while time.monotonic() < cancelled_at + 90:
                flow_run = client.read_flow_run(flow_run.id)
                if flow_run.state and flow_run.state.is_final():
                    break
                time.sleep(0.5)
            ended_after = time.monotonic() - cancelled_at
    worker_output = (tmp_path / "worker.log").read_text()
    assert flow_run.state.type == StateType.CANCELLED, f"{flow_run.state}\n{worker_output}"
    assert ended_after < 30, ended_after  # drained before Prefect's 30 s grace ran out
    assert git(repo, "show", f"{branch}:fast.txt") == "fast"
    con = duckdb.connect(str(data / "devswarm.duckdb"), read_only=True)
    try:
        # The flow's own ending ran: a SIGKILLed process would have left "running".
        (status,) = con.execute("SELECT status FROM runs").fetchone()
        tasks = dict(con.execute("SELECT task_key, status FROM tasks").fetchall())
    finally:
        con.close()
    assert status == "stopped", status
    assert tasks["c1.root.fast"] == "landed" and tasks["c1.root.slow"] != "landed", tasks
    clones = list((data / "repos").glob("*/clone"))
    assert clones, list(data.rglob("*"))[:20]
    for clone in clones:  # no worker left a worktree behind
        listed = git(clone, "worktree", "list", "--porcelain")
        assert listed.count("worktree ") == 1, listed
