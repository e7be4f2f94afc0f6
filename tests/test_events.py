"""devswarm's own Prefect events (tasks/events.py) on a real `devswarm server`, and the example
automation (examples/automation.yaml) created with `prefect automation create --from-file`."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from devswarm import server
from tasks.events import EVENT_NAMES, emit
from tests.test_server import _free_port, fresh_server_folder

ROOT = Path(__file__).resolve().parents[1]
SECRET = "sk-event-secret-0123456789abcdef"  # the model key, as the process sees it
PASSED = "ghp-passed-secret-fedcba9876543210"  # a secret the caller knows about


@dataclass(frozen=True)
class Served:
    api_url: str
    auth: str

    def env(self, home: Path) -> dict[str, str]:
        """A client process's environment: this server, its own Prefect home, devswarm importable."""
        return {
            **os.environ,
            "PREFECT_API_URL": self.api_url,
            "PREFECT_API_AUTH_STRING": self.auth,
            "PREFECT_HOME": str(home),
            "PREFECT_LOGGING_LEVEL": "WARNING",
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        }

    def api(self, path: str, body: dict | None = None) -> Any:
        """GET (or POST `body` to) the Prefect API as a client with the auth string."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.api_url + path, data=data, method="GET" if data is None else "POST"
        )
        request.add_header("Content-Type", "application/json")
        request.add_header(
            "Authorization", "Basic " + base64.b64encode(self.auth.encode()).decode()
        )
        with urllib.request.urlopen(request, timeout=15) as resp:
            return json.load(resp)

    def events(self, *prefixes: str) -> list[dict]:
        """The newest 50 events whose names start with one of `prefixes`, newest first."""
        body = {"filter": {"event": {"prefix": list(prefixes)}}, "limit": 50}
        return self.api("/events/filter", body)["events"]


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    """A `devswarm server` (Prefect on PostgreSQL, basic auth) for this module."""
    with fresh_server_folder() as root:
        state, _ = server.start(root, port=_free_port())
        yield Served(state.api_url, server.read_auth(root) or "")


def test_an_unknown_event_or_a_payload_that_is_not_plain_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown devswarm event 'task.exploded'"):
        emit("task.exploded", "run-1")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="'diff'"):
        emit("task.landed", "run-1", payload={"diff": {"a.py": "+x"}})
    assert "devswarm.run.finished" in EVENT_NAMES and "devswarm.budget.exhausted" in EVENT_NAMES


_EMIT_OUTSIDE_A_FLOW = f"""
import sys
from tasks.events import emit

emit("task.landed", "calc-1", task="mul", agent="worker/calc-1/c1/root/mul/a1",
     branch="devswarm/calc", payload={{"commit": "0123abcd", "files": ["calc.py"], "cas_retries": 0,
     "note": "key {SECRET} leaked", "handoff": "token {PASSED} leaked"}}, secrets=["{PASSED}"])
emit("budget.exhausted", "calc-1", payload={{"budget": "cost", "spent": 20.01, "cap": 20.0}})
"""


@pytest.mark.slow
def test_events_name_the_run_task_agent_and_branch_and_carry_no_secret(
    served: Served, tmp_path: Path
) -> None:
    env = {**served.env(tmp_path / "home"), "OPENAI_API_KEY": SECRET}
    done = subprocess.run(
        [sys.executable, "-c", _EMIT_OUTSIDE_A_FLOW],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]

    events = eventually(lambda: served.events("devswarm."), lambda found: len(found) >= 2)
    by_name = {
        e["event"]: e for e in events if e["resource"]["prefect.resource.id"].endswith("calc-1")
    }
    landed = by_name["devswarm.task.landed"]
    assert landed["resource"]["prefect.resource.id"] == "devswarm.run.calc-1"
    assert {r["prefect.resource.role"]: r["prefect.resource.id"] for r in landed["related"]} == {
        "task": "devswarm.task.calc-1.mul",
        "agent": "devswarm.agent.worker/calc-1/c1/root/mul/a1",
        "branch": "devswarm.branch.devswarm/calc",
    }
    assert landed["payload"] == {
        "commit": "0123abcd",
        "files": ["calc.py"],
        "cas_retries": 0,
        "note": "[redacted]",
        "handoff": "[redacted]",
    }
    exhausted = by_name["devswarm.budget.exhausted"]
    assert exhausted["payload"] == {"budget": "cost", "spent": 20.01, "cap": 20.0}
    everything = json.dumps(served.events("devswarm.", "prefect.automation."))
    assert SECRET not in everything and PASSED not in everything
    assert served.auth.split(":", 1)[1] not in everything


# A stand-in for the swarm flow, deployed twice and run from its deployments, as the nightly
# deployment runs: one run ends done, the other out of budget.
_NIGHTLY = """
import json

from prefect import flow
from prefect.client.orchestration import get_client
from prefect.flow_engine import run_flow

from tasks.events import emit


@flow(name="swarm", flow_run_name="swarm: {run_id}")
def swarm(run_id: str, status: str) -> None:
    emit("run.finished", run_id, status=status, branch="devswarm/nightly",
         payload={"cycles": 1, "tasks_landed": 1})


ids = {}
with get_client(sync_client=True) as client:
    for name, status in (("went-fine", "done"), ("nightly", "budget_exhausted")):
        deployment_id = swarm.to_deployment(name=name).apply()
        run = client.create_flow_run_from_deployment(
            deployment_id, parameters={"run_id": f"calc-{name}", "status": status}
        )
        run_flow(swarm, flow_run=run, parameters=run.parameters)
        ids[name] = str(deployment_id)
print(json.dumps(ids))
"""


@pytest.mark.slow
def test_example_automation_pauses_the_deployment_whose_run_ran_out_of_budget(
    served: Served, tmp_path: Path
) -> None:
    env = served.env(tmp_path / "home")
    created = subprocess.run(
        [sys.executable, "-m", "prefect", "automation", "create"]
        + ["--from-file", str(ROOT / "examples" / "automation.yaml")],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert created.returncode == 0 and "Created automation" in created.stdout, (
        created.stdout + created.stderr[-3000:]
    )
    (tmp_path / "nightly.py").write_text(_NIGHTLY)
    ran = subprocess.run(
        [sys.executable, "nightly.py"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert ran.returncode == 0, ran.stdout[-2000:] + ran.stderr[-3000:]
    ids = json.loads(ran.stdout.strip().splitlines()[-1])

    executed = eventually(
        lambda: served.events("prefect.automation.action."),
        lambda found: any(e["event"] == "prefect.automation.action.executed" for e in found),
    )
    targets = [
        r["prefect.resource.id"]
        for e in executed
        if e["event"] == "prefect.automation.action.executed"
        for r in e["related"]
        if r["prefect.resource.role"] == "target"
    ]
    assert targets == [f"prefect.deployment.{ids['nightly']}"]
    assert served.api(f"/deployments/{ids['nightly']}")["paused"] is True
    # The run that went fine was emitted first and matched nothing: its deployment runs on.
    assert served.api(f"/deployments/{ids['went-fine']}")["paused"] is False
    triggered = served.events("prefect.automation.triggered")
    assert [e["payload"]["triggering_event"]["resource"]["devswarm.status"] for e in triggered] == [
        "budget_exhausted"
    ]


def eventually(read: Callable[[], Any], ready: Callable[[Any], bool], timeout: float = 90) -> Any:
    """Poll `read()` until `ready` says yes (events are written and acted on asynchronously)."""
    deadline = time.monotonic() + timeout
    while True:
        value = read()
        if ready(value) or time.monotonic() > deadline:
            assert ready(value), f"not there after {timeout:.0f} s: {json.dumps(value)[:3000]}"
            return value
        time.sleep(0.5)


@pytest.mark.slow
def test_example_automation_pauses_the_nightly_deployment_when_its_swarm_runs_out_of_budget(
    tmp_path: Path,
) -> None:
    """The real thing: prefect.yaml's nightly swarm deployment, run by a Prefect worker on
    `devswarm server`, with a token budget too small for one model call. Its swarm flow run ends
    Failed with the reason, emits devswarm.run.finished (budget_exhausted) from itself, and the
    automation created from examples/automation.yaml pauses the deployment."""
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL

    from tests.conftest import make_repo
    from tests.test_blocks import CALC, MUL_SCENARIO
    from tests.test_deployment import _nightly

    repo = make_repo(tmp_path / "calc", {"calc.py": CALC, "GOAL.md": "Add mul.\n"})
    with fresh_server_folder() as root, _nightly(root, tmp_path, MUL_SCENARIO, repo):
        nightly = Served(PREFECT_API_URL.value(), server.read_auth(root) or "")
        created = subprocess.run(
            [sys.executable, "-m", "prefect", "automation", "create"]
            + ["--from-file", str(ROOT / "examples" / "automation.yaml")],
            env=nightly.env(tmp_path / "cli-home"),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert created.returncode == 0, created.stdout + created.stderr[-3000:]
        flow_run = run_deployment(
            "swarm-from-blocks/nightly",
            parameters={"max_cycles": 1, "max_workers": 1, "max_tokens": 2_000},
            timeout=0,
        )
        with get_client(sync_client=True) as client:
            flow_run = eventually(
                lambda: client.read_flow_run(flow_run.id),
                lambda run: bool(run.state and run.state.is_final()),
                timeout=240,
            )
            deployment = eventually(
                lambda: client.read_deployment_by_name("swarm-from-blocks/nightly"),
                lambda found: found.paused,
            )
        # The automation acts on the event stream; the events' rows may be written after.
        finished = eventually(lambda: nightly.events("devswarm.run.finished"), bool)
        triggered = eventually(lambda: nightly.events("prefect.automation.triggered"), bool)
    worker_output = (tmp_path / "worker.log").read_text()
    assert flow_run.state.is_failed(), f"{flow_run.state}\n{worker_output[-3000:]}"
    assert flow_run.state.message.startswith("budget exhausted (tokens); 0 task(s) landed")
    assert deployment.paused
    assert [e["resource"]["devswarm.status"] for e in finished] == ["budget_exhausted"]
    related = {r["prefect.resource.role"]: r["prefect.resource.id"] for r in finished[0]["related"]}
    assert related["deployment"] == f"prefect.deployment.{deployment.id}"
    assert [e["payload"]["triggering_event"]["event"] for e in triggered] == [
        "devswarm.run.finished"
    ]
