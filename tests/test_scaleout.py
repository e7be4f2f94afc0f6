"""--executor deployment end to end: a real `prefect server start`, a process work pool with a
Prefect worker in its own process, the worker deployment, a bare remote on disk, and the offline
model server in this process (the worker processes reach it over loopback)."""

from __future__ import annotations

import contextvars
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from datetime import datetime
from itertools import pairwise
from pathlib import Path

import pytest

from tests.conftest import git, make_repo, snapshot
from tests.helpers import JUDGE_DONE, plan_reply, rows, task, tc, write_and_finish

ROOT = Path(__file__).resolve().parents[1]
KEY = "sk-scaleout-secret-0123456789"
POOL = "devswarm-scaleout"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker_script(path: str, content: str) -> list[dict]:
    # Four model calls of 1.5 s each: without the global limit, the calls of two workers would
    # overlap (their flow runs start a few seconds apart at most).
    steps = [
        {"tool_calls": [tc("list_files", path=".")]},
        {"tool_calls": [tc("read_file", path="README.md")]},
        *write_and_finish(path, content),
    ]
    return [{**step, "latency": 1.5} for step in steps]


SCENARIO = {
    "agents": [
        {"match": "planner/*", "steps": [plan_reply(task("a", ["a.py"]), task("b", ["b.py"]))]},
        {"match": "worker/*/a/*", "steps": _worker_script("a.py", "A = 1\n")},
        {"match": "worker/*/b/*", "steps": _worker_script("b.py", "B = 2\n")},
        JUDGE_DONE,
    ]
}


def _intervals(log: Path, prefix: str) -> list[tuple[float, float]]:
    out = []
    for line in log.read_text().splitlines():
        r = json.loads(line)
        if r["path"].endswith("/chat/completions") and r["agent"].startswith(prefix):
            start = datetime.fromisoformat(r["time"].replace("Z", "+00:00")).timestamp()
            out.append((start, start + r["latency_ms"] / 1000))
    return sorted(out)


def _skew(log: Path) -> float:
    """Seconds between the first model calls of the two workers."""
    firsts: dict[str, float] = {}
    for line in log.read_text().splitlines():
        r = json.loads(line)
        if r["agent"].startswith("worker/") and r["path"].endswith("/chat/completions"):
            t = datetime.fromisoformat(r["time"].replace("Z", "+00:00")).timestamp()
            firsts.setdefault(r["agent"], t)
    a, b = sorted(firsts.values())
    return b - a


@pytest.mark.slow
def test_deployment_executor_lands_two_concurrent_workers_through_a_bare_remote(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_RESULTS_LOCAL_STORAGE_PATH,
        temporary_settings,
    )

    from devswarm.commands.runtime import run_swarm
    from devswarm.config import Models, SwarmConfig
    from devswarm.offline.server import ModelServer, Scenario
    from flows.worker_deployment import deploy_worker
    from tasks.model import MODEL_CALL_LIMIT

    t0 = time.monotonic()
    api_url, prefect_server = _start_prefect_server(tmp_path / "server")
    server_seconds = time.monotonic() - t0
    worker = None
    try:
        # The worker's key comes from its environment.
        worker, worker_log = _start_process_worker(tmp_path, api_url, KEY)
        repo = make_repo(tmp_path / "user", {"README.md": "# demo\n"})
        before = snapshot(repo)
        remote = tmp_path / "shared" / "remote.git"
        git(tmp_path, "init", "-q", "--bare", str(remote))
        log = tmp_path / "requests.jsonl"
        monkeypatch.setenv("OPENAI_API_KEY", KEY)
        settings = {
            PREFECT_API_URL: api_url,
            PREFECT_RESULTS_LOCAL_STORAGE_PATH: tmp_path / "results",
        }
        with (
            temporary_settings(settings),
            ModelServer(Scenario.from_data(SCENARIO), log_path=log) as model_server,
        ):
            deploy_worker(POOL)
            slots: list[int] = []
            done = threading.Event()

            def watch_limit() -> None:  # the global limit's active slots while workers run
                with get_client(sync_client=True) as client:
                    while not done.is_set():
                        try:
                            limit = client.read_global_concurrency_limit_by_name(MODEL_CALL_LIMIT)
                            slots.append(limit.active_slots)
                        except Exception:
                            pass  # not created yet
                        time.sleep(0.05)

            watcher = threading.Thread(target=contextvars.copy_context().run, args=(watch_limit,))
            watcher.start()
            started = time.monotonic()
            try:
                summary = run_swarm(
                    SwarmConfig(
                        goal="Add a.py and b.py.",
                        repo=repo,
                        base_url=model_server.url,
                        models=Models.single("offline-model"),
                        home=tmp_path / "data",
                        max_cycles=1,
                        max_workers=2,
                        max_model_calls_at_once=1,
                        executor="deployment",
                        remote=str(remote),
                    )
                )
            finally:
                done.set()
                watcher.join()
            swarm_seconds = time.monotonic() - started
            with get_client(sync_client=True) as client:
                limit = client.read_global_concurrency_limit_by_name(MODEL_CALL_LIMIT)
                roots = client.read_flow_runs(
                    flow_run_filter=FlowRunFilter(
                        parent_flow_run_id=FlowRunFilterParentFlowRunId(
                            any_=[
                                r.id
                                for r in client.read_flow_runs()
                                if r.name == f"swarm: {summary['run_id']}"
                            ]
                        )
                    )
                )
        output = worker_log.read_text()
        assert summary["status"] == "done", output[-3000:]

        # Both tasks landed, by worker processes, through the remote, and were published.
        db = Path(summary["db"])
        assert rows(db, "SELECT task_key, status FROM tasks ORDER BY task_key") == [
            ("c1.root.a", "landed"),
            ("c1.root.b", "landed"),
        ]
        branch = f"refs/heads/{summary['branch']}"
        tip = git(remote, "rev-parse", branch)
        assert tip == summary["tip"] == git(repo, "rev-parse", branch)
        assert git(repo, "show", f"{tip}:a.py") == "A = 1"
        assert git(repo, "show", f"{tip}:b.py") == "B = 2"
        assert snapshot(repo) == before  # only the landing branch moved
        landings = rows(db, "SELECT status, cas_retries FROM landings ORDER BY task_key")
        assert [s for s, _ in landings] == ["landed", "landed"]

        # Each worker ran as a flow run of the worker deployment, a child of the swarm flow
        # run, in its own process (its records carry that flow run's id), and the two overlapped.
        works = {r.name: r for r in roots if r.name.startswith("work: ")}
        assert sorted(works) == ["work: c1.root.a", "work: c1.root.b"]
        assert all(r.deployment_id is not None and r.state.is_completed() for r in works.values())
        agent_runs = dict(rows(db, "SELECT task_key, flow_run_id FROM agents WHERE role='worker'"))
        assert agent_runs == {
            "c1.root.a": str(works["work: c1.root.a"].id),
            "c1.root.b": str(works["work: c1.root.b"].id),
        }
        a, b = works["work: c1.root.a"], works["work: c1.root.b"]
        assert a.created < b.end_time and b.created < a.end_time  # dispatched together
        assert a.start_time < b.end_time and b.start_time < a.end_time, "workers did not overlap"
        # Their records came back: every model call of a worker is a row in the orchestrator's store.
        assert (
            rows(db, "SELECT count(*) FROM model_calls WHERE agent_id LIKE 'worker/%'")[0][0] == 8
        )

        # The global limit on model calls exists with the configured cap, was used, and no two
        # calls of the two worker processes were ever in flight at once.
        assert limit.limit == 1
        assert slots and max(slots) == 1
        calls = _intervals(log, "worker/")
        assert len(calls) == 8
        assert all(end <= nxt + 0.05 for (_, end), (nxt, _) in pairwise(calls)), calls

        # The workers' answered calls are cached beside the orchestrator's (a resume replays them).
        cached = [p.name for p in (tmp_path / "results").iterdir()]
        prefix = f"devswarm-{summary['run_id']}-worker_"
        assert len([n for n in cached if n.startswith(prefix)]) == 8, cached

        # The key was never a flow run parameter, nor in the Prefect worker's output.
        assert all(KEY not in json.dumps(r.parameters, default=str) for r in works.values())
        assert KEY not in output
        print(
            f"\nscale-out: server up in {server_seconds:.1f} s; swarm {swarm_seconds:.1f} s; "
            f"workers {(a.end_time - a.start_time).total_seconds():.1f} s and "
            f"{(b.end_time - b.start_time).total_seconds():.1f} s; total "
            f"{time.monotonic() - t0:.1f} s; CAS retries {sum(r for _, r in landings)}; "
            f"first model calls of the two workers {_skew(log):.2f} s apart; created → running "
            f"{(a.start_time - a.created).total_seconds():.1f} s and "
            f"{(b.start_time - b.created).total_seconds():.1f} s"
        )
    finally:
        if worker is not None:
            _stop(worker)
        _stop(prefect_server)


def test_reports_and_records_travel_through_a_storage_block(
    prefect_server: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The multi-machine path without a work pool: a worker Run with its own data folder lands
    by push and leaves its report and records in a storage block; the orchestrator collects
    them, imports the records and publishes the landing."""
    from prefect.filesystems import LocalFileSystem

    from devswarm.config import SwarmConfig, default_home
    from devswarm.run.run import Run
    from devswarm.schemas import WorkerReport
    from tasks.scaleout import collect, deliver, shared_remote, usage, worker_config

    LocalFileSystem(basepath=str(tmp_path / "bucket")).save("devswarm-exchange", overwrite=True)
    repo = make_repo(tmp_path / "user", {"README.md": "# demo\n"})
    before = snapshot(repo)
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    run = Run(
        SwarmConfig(
            goal="g",
            repo=repo,
            home=tmp_path / "orchestrator",
            base_url="http://127.0.0.1:9/v1",
            api_key=KEY,
            executor="deployment",
            result_storage="local-file-system/devswarm-exchange",
        )
    )
    remote = shared_remote(run)  # the default: a bare repository in the data folder
    assert remote.startswith(str(tmp_path / "orchestrator" / "remotes"))
    params = worker_config(run, remote)
    assert "api_key" not in params and KEY not in json.dumps(params)
    assert params["remote"] == remote and params["run_id"] == run.run_id
    assert params["budget"]["max_tokens"] == run.config.budget.max_tokens  # nothing spent yet

    # "Another machine": its own data folder; the key from its environment.
    monkeypatch.setenv("DEVSWARM_HOME", str(tmp_path / "machine-2"))
    config = SwarmConfig.model_validate(params).model_copy(update={"home": default_home()})
    worker = Run.for_worker(config, clones=default_home() / "workers")
    assert worker.dir != run.dir
    ws = worker.workspace
    wt = ws.add_worktree("w1", ws.tip())
    (wt / "a.py").write_text("A = 1\n")
    ws.commit(wt, "add a", {"Devswarm-Task": "c1.root.a"})
    landed = ws.land(wt)
    assert landed.status == "landed" and not landed.published
    ws.remove_worktree(wt)
    agent = f"worker/{run.run_id}/c1/root/a/a1"
    worker.agent_log(agent).write(
        "model_call",
        call_id="call-1",
        run_id=run.run_id,
        agent_id=agent,
        step=1,
        attempt=1,
        input_tokens=100,
        output_tokens=20,
        cost_usd=0.5,
        started_at="2026-01-01T00:00:00.000000Z",
    )
    report = WorkerReport(
        task_key="c1.root.a", agent_id=agent, status="landed", commit=landed.new_tip
    )
    deliver(worker, agent, "fr-1", report)
    assert not (run.dir / "reports").exists()  # it went through the block

    assert collect(run, agent, "fr-0") is None  # another flow run's report: not this one
    got = collect(run, agent, "fr-1")
    assert got is not None and got.status == "landed" and got.commit == landed.new_tip
    assert got.records is not None and Path(got.records).parent == run.dir / "records"
    assert usage(Path(got.records)) == (120, 0.5)
    assert usage(Path(got.records), since="9999") == (0, 0.0)
    assert run.records.import_now([Path(got.records)]) == 1
    assert rows(run.store_path, "SELECT agent_id, input_tokens FROM model_calls") == [(agent, 100)]
    assert collect(run, f"worker/{run.run_id}/c1/root/b/a1", "fr-2") is None  # never reported

    assert run.workspace.pull_remote(remote)
    branch = f"refs/heads/{run.branch}"
    assert git(repo, "rev-parse", branch) == landed.new_tip == run.workspace.tip()
    assert snapshot(repo) == before
    worker.close()
    run.close()


def test_a_missing_worker_deployment_is_one_line(prefect_server: None, tmp_path: Path) -> None:
    from devswarm.config import SwarmConfig
    from devswarm.errors import UserError
    from devswarm.run.run import Run
    from tasks.scaleout import deployment_work

    run = Run(
        SwarmConfig(
            goal="g",
            repo=make_repo(tmp_path / "user", {"README.md": "x\n"}),
            home=tmp_path / "data",
            executor="deployment",
            worker_deployment="work-remote/nowhere",
        )
    )
    try:
        with pytest.raises(UserError, match="no deployment 'work-remote/nowhere'"):
            deployment_work(run)
    finally:
        run.close()


def test_cli_refuses_an_unknown_executor(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "user", {"README.md": "x\n"})
    done = subprocess.run(
        [sys.executable, "-m", "devswarm.cli", "run", "--repo", str(repo), "--goal", "g"]
        + ["--executor", "ray"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.strip() == "devswarm: --executor must be local or deployment, not 'ray'"


def _start_prefect_server(home: Path) -> tuple[str, subprocess.Popen]:
    """`prefect server start` on a free loopback port with its own PREFECT_HOME (SQLite)."""
    port = _free_port()
    home.mkdir(parents=True)
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home / 'prefect.db'}",
        "PREFECT_LOGGING_LEVEL": "WARNING",
    }
    for name in ("PREFECT_API_URL", "PREFECT_API_AUTH_STRING", "PREFECT_SERVER_API_AUTH_STRING"):
        env.pop(name, None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1"]
        + ["--port", str(port), "--no-services"],
        env=env,
        stdout=(home / "server.log").open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}/api"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError((home / "server.log").read_text()[-3000:])
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                if r.status == 200:
                    return url, proc
        except OSError:
            time.sleep(0.3)
    _stop(proc)
    raise AssertionError("the Prefect server did not become healthy in 120 s")


def _start_process_worker(tmp_path: Path, api_url: str, key: str) -> tuple[subprocess.Popen, Path]:
    """A Prefect process work pool POOL on the server at `api_url` and a `prefect worker` for it
    (its own process group; its flow runs' data folder is tmp_path/worker-home); (worker, log)."""
    env = {
        **os.environ,
        "PREFECT_API_URL": api_url,
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "PREFECT_LOGGING_LEVEL": "WARNING",
        "DEVSWARM_HOME": str(tmp_path / "worker-home"),  # the worker processes' clones
        "OPENAI_API_KEY": key,
    }
    subprocess.run(
        [sys.executable, "-m", "prefect", "work-pool", "create", POOL, "--type", "process"],
        env=env,
        check=True,
        capture_output=True,
        timeout=120,
    )
    log = tmp_path / "prefect-worker.log"
    worker = subprocess.Popen(
        [sys.executable, "-m", "prefect", "worker", "start", "--pool", POOL],
        env=env,
        cwd=tmp_path,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    return worker, log


def _stop(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)
