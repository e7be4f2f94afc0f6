"""Fault drills: model faults, killed workers, a killed orchestrator, two swarms on one branch.

Each drill runs a whole swarm through real Prefect, real git and the offline model server, then
hands everything to the independent checker (tests/checker.py): nothing lost, nothing landed
twice, DuckDB equal to git and to the server's request log, the API key nowhere.
"""

from __future__ import annotations

import ctypes
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from devswarm.offline.server import ModelServer, Scenario
from tests import checker
from tests.conftest import make_repo
from tests.helpers import JUDGE_DONE, plan_reply, rows, task, tc
from tests.test_resume import _answered, _key, _when

SECRET = "sk-drill-4be1c9d07a2f36e5-never-log-me"
NO_FOLLOWUPS = {"match": "planner/*/followup-*", "steps": [plan_reply()]}
BAD_JSON = "are not valid JSON"  # what the toolbox answers to malformed tool arguments
EXE = str(Path(sys.executable).parent / "devswarm")


def worker_script(name: str, *, probe: bool = False, match: str | None = None) -> list[dict]:
    """A worker that writes its file (and runs `env` when it is the probe), then finishes; after
    malformed tool arguments it starts over, as a model would that was told its JSON was bad."""
    steps = [{"tool_calls": [tc("write_file", path=f"{name}.txt", content=f"{name}\n")]}]
    if probe:
        steps.append({"tool_calls": [tc("run", command="env")]})
    steps.append({"tool_calls": [tc("finish", summary=f"{name} done")]})
    pattern = match or f"worker/*/{name}/*"
    return [
        {"match": pattern, "steps": steps},
        {"rule": {"match": pattern, "contains": BAD_JSON, "steps": steps}},
    ]


def scenario_for(workers: list[list[dict]], **top: Any) -> dict:
    """Split worker_script() entries into a scenario's agents and rules."""
    agents, rules = [], []
    for entries in workers:
        for e in entries:
            (rules.append(e["rule"]) if "rule" in e else agents.append(e))
    return {**top, "rules": rules, "agents": [NO_FOLLOWUPS, *agents]}


@dataclass
class Drill:
    """One in-process swarm run and everything the checker needs from it."""

    summary: dict
    log: Path
    repo: Path
    home: Path
    request_timeout: float

    @property
    def requests(self) -> list[dict]:
        return checker.read_request_log(self.log)


@pytest.fixture
def drill(prefect_server: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd, caplog):
    """Run a swarm in this process with a distinctive key; `check(d)` runs the checker on it."""
    from devswarm.commands.runtime import run_swarm
    from devswarm.config import Models, SwarmConfig

    monkeypatch.setenv("OPENAI_API_KEY", SECRET)

    def run(scenario: dict, repo: Path, *, request_timeout: float = 30.0, **options: Any) -> Drill:
        log = tmp_path / "requests.jsonl"
        with ModelServer(Scenario.from_data(scenario), log_path=log) as server:
            cfg = SwarmConfig(
                goal="Make the tests pass.",
                repo=repo,
                base_url=server.url,
                models=Models.single("offline-model"),
                home=tmp_path / "data",
                max_cycles=1,
                request_timeout=request_timeout,
                **options,
            )
            summary = run_swarm(cfg)
        # The server has stopped: every request it answered, timed out ones included, is logged.
        return Drill(summary, log, repo, tmp_path / "data", request_timeout)

    def check(d: Drill, **extra: Any) -> dict:
        out, err = capfd.readouterr()
        return checker.assert_sound(
            repo=d.repo,
            branch=d.summary["branch"],
            home=d.home,
            secret=SECRET,
            requests=d.requests,
            request_timeout=d.request_timeout,
            run_ids=[d.summary["run_id"]],
            output=out + err + caplog.text,
            scan=[Path(os.environ["PREFECT_RESULTS_LOCAL_STORAGE_PATH"])],
            prefect=True,
            **extra,
        )

    run.check = check  # type: ignore[attr-defined]
    return run


# -- 1. model faults ------------------------------------------------------------------------------


@pytest.mark.drill
@pytest.mark.slow
def binomial_plausible(k: int, n: int, p: float, alpha: float = 1e-3) -> bool:
    """Whether k successes in n tries are plausible at rate p: neither tail below alpha."""
    pmf = [math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(n + 1)]
    return sum(pmf[: k + 1]) >= alpha and sum(pmf[k:]) >= alpha


def test_binomial_plausible_refuses_what_a_rate_cannot_explain() -> None:
    assert binomial_plausible(4, 21, 0.2) and binomial_plausible(8, 21, 0.2)
    assert not binomial_plausible(12, 21, 0.2) and not binomial_plausible(0, 100, 0.2)


def test_run_completes_through_model_faults_and_malformed_tool_arguments(
    drill, tmp_path: Path
) -> None:
    """20 % of model calls fail (429 with Retry-After, 500, timeouts), 5 % carry malformed tool
    arguments: the run completes and every task is landed or reported with a reason."""
    repo = make_repo(tmp_path / "user", {"README.md": "faults\n"})
    names = [f"t{i}" for i in range(8)]
    scenario = scenario_for(
        [worker_script(n, probe=n == "t0") for n in names],
        latency=0.05,
        faults={
            "seed": "drill-faults",
            "rate": 0.25,
            "max_attempt": 3,  # attempts 4 and 5 (of 5) always get through
            "kinds": [
                {"type": "status", "status": 429, "retry_after": 1, "weight": 7},
                {"type": "status", "status": 500, "weight": 7},
                {"type": "timeout", "delay": 4.0, "weight": 6},
                {"type": "malformed_arguments", "weight": 5},
            ],
        },
    )
    scenario["agents"] += [
        {"match": "planner/*", "steps": [plan_reply(*[task(n, [f"{n}.txt"]) for n in names])]},
        JUDGE_DONE,
    ]
    d = drill(scenario, repo, request_timeout=2.0, run_id="drill-faults", max_workers=4)
    assert d.summary["status"] == "done"

    reqs = d.requests
    # The agents' first attempts (the capability probe's one request is a sample apart).
    first = [r for r in reqs if r["attempt"] == 1 and not r["agent"].startswith("preflight/")]
    faults = Counter(r["fault"] for r in reqs if r["fault"])
    failing = sum(1 for r in first if r["fault"] and r["fault"] != "malformed_arguments")
    assert faults["status:429"] and faults["status:500"] and faults["timeout"], faults
    assert faults["malformed_arguments"], faults  # some tool call's JSON was cut in half
    # About 20 % fail (rate 0.25 × 20 of 25 weights): each request's fault is seeded by its
    # content, which moves with the commit times, so the count is a binomial sample of ~21.
    assert binomial_plausible(failing, len(first), 0.25 * 20 / 25), (failing, len(first))

    db = d.home / "devswarm.duckdb"
    statuses = dict(rows(db, "SELECT task_key, status FROM tasks"))
    assert len(statuses) == len(names)
    # The scripted model recovers from every fault, so all land; the checker would accept a
    # task reported with a reason, but here none needs one.
    assert set(statuses.values()) == {"landed"}, statuses
    retried = rows(db, "SELECT count(*) FROM model_calls WHERE attempt > 1")[0][0]
    assert retried >= faults["status:429"] + faults["status:500"] + faults["timeout"]
    assert rows(db, "SELECT count(*) FROM tool_calls WHERE error_type = 'invalid_json'")[0][0] >= 1
    facts = drill.check(d)
    print("drill facts:", facts, dict(faults))
    assert facts["landed"] == len(names) and facts["env_probes"] >= 1


# -- 2. a worker killed mid-task, in-process ------------------------------------------------------


class WorkerKilled(BaseException):
    """A kill, not an error: nothing in the worker may catch it and carry on."""


def _thread_running(marker: str) -> int | None:
    """The thread whose stack is inside run_command() for a command containing `marker`."""
    for ident, frame in sys._current_frames().items():
        f = frame
        while f is not None:
            if f.f_code.co_name == "run_command" and marker in str(f.f_locals.get("command")):
                return ident
            f = f.f_back
    return None


def _processes(marker: str) -> list[int]:
    """Pids of live processes whose command line contains `marker`."""
    found = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit() or int(p.name) == os.getpid():
            continue
        try:
            if marker.encode() in (p / "cmdline").read_bytes():
                found.append(int(p.name))
        except OSError:
            continue
    return found


def _kill_groups(pids: list[int]) -> int:
    groups = set()
    for pid in pids:
        try:
            groups.add(os.getpgid(pid))
        except ProcessLookupError:
            continue
    for group in groups:
        try:
            os.killpg(group, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return len(groups)


def _killer(done: threading.Event, did: dict[str, Any]) -> None:
    """Kill the sleeper's command; kill the victim's command and its subflow (its thread)."""
    pending = {"sleep 3171": "command", "sleep 3172": "subflow"}
    while pending and not done.wait(0.05):
        for marker, what in list(pending.items()):
            thread, pids = _thread_running(marker), _processes(marker)
            if thread is None or not pids:
                continue
            if what == "subflow":  # raised as soon as the thread runs Python again
                did["async_exc"] = ctypes.pythonapi.PyThreadState_SetAsyncExc(
                    ctypes.c_ulong(thread), ctypes.py_object(WorkerKilled)
                )
            did[what] = _kill_groups(pids)
            del pending[marker]


@pytest.mark.drill
@pytest.mark.slow
def test_worker_killed_mid_task_loses_nothing(drill, tmp_path: Path) -> None:
    """In-process: one worker's running command is SIGKILLed (the agent sees it and goes on);
    another worker's command and subflow are killed (its task runs again from a fresh worktree)."""
    repo = make_repo(tmp_path / "user", {"README.md": "kill\n"})
    write = {"tool_calls": [tc("write_file", path="{n}.txt", content="{n}\n")]}

    def steps(n: str, *first: dict) -> list[dict]:
        w = json.loads(json.dumps(write).replace("{n}", n))
        return [*first, w, {"tool_calls": [tc("finish", summary=f"{n} done")]}]

    scenario = {
        "latency": 0.05,
        "agents": [
            NO_FOLLOWUPS,
            {
                "match": "planner/*",
                "steps": [plan_reply(*[task(n, [f"{n}.txt"]) for n in ("sleeper", "victim", "probe")])],
            },
            {"match": "worker/*/sleeper/*",
             "steps": steps("sleeper", {"tool_calls": [tc("run", command="sleep 3171")]})},
            {"match": "worker/*/victim/a1",
             "steps": steps("victim", {"tool_calls": [tc("run", command="sleep 3172")]})},
            {"match": "worker/*/victim/*", "steps": steps("victim")},
            {"match": "worker/*/probe/*",
             "steps": steps("probe", {"tool_calls": [tc("run", command="env")]})},
            JUDGE_DONE,
        ],
    }  # fmt: skip
    done, did = threading.Event(), {}
    killer = threading.Thread(target=_killer, args=(done, did), daemon=True)
    killer.start()
    try:
        d = drill(scenario, repo, run_id="drill-kill", max_workers=3)
    finally:
        done.set()
        killer.join(5)
    assert did.get("command") and did.get("subflow") and did.get("async_exc") == 1, did
    assert d.summary["status"] == "done"
    assert not _processes("sleep 317")  # no orphan of either command

    db = d.home / "devswarm.duckdb"
    run = d.summary["run_id"]
    assert dict(rows(db, "SELECT task_key, status FROM tasks")) == {
        "c1.root.sleeper": "landed",
        "c1.root.victim": "landed",
        "c1.root.probe": "landed",
    }
    # The sleeper's agent saw its command killed and carried on in the same subflow.
    killed = rows(db, "SELECT output_excerpt FROM tool_calls WHERE tool_name = 'run' "
                      "AND agent_id LIKE '%/sleeper/a1'")  # fmt: skip
    assert killed and "SIGKILL" in killed[0][0]
    # The victim's killed subflow ran again as attempt 2, which landed it.
    victims = dict(rows(db, "SELECT agent_id, status FROM agents WHERE agent_id LIKE '%/victim/%'"))
    assert victims[f"worker/{run}/c1/root/victim/a2"] == "landed"
    assert victims[f"worker/{run}/c1/root/victim/a1"] != "landed"
    assert rows(db, "SELECT attempts FROM tasks WHERE task_key = 'c1.root.victim'")[0][0] == 2
    assert not [p for p in (d.home / "repos").glob("*/worktrees/*") if p.is_dir()]
    print("drill facts:", drill.check(d))


# -- subprocess drills: what a user runs ----------------------------------------------------------


def _user_env(tmp_path: Path, home: Path) -> dict[str, str]:
    """A user's shell: their own data folder and Prefect home, the key in the environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "OPENAI_"))}
    env.update(
        DEVSWARM_HOME=str(home),
        OPENAI_API_KEY=SECRET,
        PREFECT_HOME=str(tmp_path / "prefect"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
    )
    return env


def _run_cmd(url: str, repo: Path, name: str, *extra: str) -> list[str]:
    return [EXE, "run", "--repo", str(repo), "--goal", "write the files", "--base-url", url,
            "--model", "offline-model", "--run-id", name, *extra]  # fmt: skip


# -- 3. the orchestrator killed with SIGKILL, then resumed ----------------------------------------


@pytest.mark.drill
@pytest.mark.slow
def test_orchestrator_sigkilled_then_resumed_loses_and_repays_nothing(tmp_path: Path) -> None:
    """tests/test_resume.py's kill, with two workers mid-flight at the kill and the checker after
    the resume (it also reads the dead process's Prefect database for the key)."""
    repo = make_repo(tmp_path / "user", {"README.md": "resume\n"})
    names = ["a", "b", "c", "d", "e"]
    slow = [{"tool_calls": [tc("write_file", path=f"{n}.txt", content=f"{n} 1\n")]} for n in names]
    scenario = {
        "latency": 1.0,
        "agents": [
            NO_FOLLOWUPS,
            {"match": "planner/*", "steps": [plan_reply(*[task(n, [f"{n}.txt"]) for n in names])]},
            *[
                {
                    "match": f"worker/*/{n}/*",
                    "steps": [
                        slow[i],
                        *([{"tool_calls": [tc("run", command="env")]}] if n == "a" else []),
                        {"tool_calls": [tc("finish", summary=f"{n} done")]},
                    ],
                }
                for i, n in enumerate(names)
            ],
            JUDGE_DONE,
        ],
    }
    home = tmp_path / "data"
    env = _user_env(tmp_path, home)
    log = tmp_path / "requests.jsonl"
    outputs = tmp_path / "out"
    outputs.mkdir()
    with ModelServer(Scenario.from_data(scenario), log_path=log) as server:
        with (outputs / "run.txt").open("w") as out:
            proc = subprocess.Popen(
                _run_cmd(server.url, repo, "drill-resume", "--workers", "2"),
                env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
            deadline = time.monotonic() + 240
            while time.monotonic() < deadline:
                answered = [r for r in checker.read_request_log(log) if r["status"] == 200] \
                    if log.exists() else []  # fmt: skip
                if len(answered) >= 6:  # the planner and about half of the workers' calls
                    break
                assert proc.poll() is None, (outputs / "run.txt").read_text()
                time.sleep(0.05)
            time.sleep(0.5)
            killed_at = time.time()
            os.killpg(proc.pid, signal.SIGKILL)  # the orchestrator and its temporary Prefect server
            proc.wait()
        time.sleep(1.5)  # calls in flight finish at the server, for a dead client
        at_kill = checker.read_request_log(log)
        resumed_at = time.time()
        out = subprocess.run(
            [EXE, "resume", "drill-resume"], env=env, capture_output=True, text=True, timeout=300
        )
    assert out.returncode == 0, out.stdout + out.stderr
    reqs = checker.read_request_log(log)
    # Seen by the dead orchestrator: answered well before the kill; a call answered within
    # 0.2 s of it may or may not have been recorded before the process died.
    before = [r for r in at_kill if _answered(r) < killed_at - 0.2]
    maybe = [r for r in at_kill if killed_at - 0.2 <= _answered(r) <= killed_at]
    after = [r for r in reqs if _when(r) >= resumed_at]
    assert len(before) >= 5 and after

    answered_before = {_key(r) for r in before + maybe if r["status"] == 200}
    assert [r for r in after if _key(r) in answered_before] == []  # no answered call paid twice

    facts = checker.assert_sound(
        repo=repo,
        branch="devswarm/drill-resume",
        home=home,
        secret=SECRET,
        requests=before + after,
        optional_requests=maybe,
        request_timeout=120.0,
        output=(outputs / "run.txt").read_text() + out.stdout + out.stderr,
        scan=[tmp_path / "prefect"],  # both processes' Prefect database, logs and artifacts
    )
    assert facts["landed"] == len(names)
    assert rows(home / "devswarm.duckdb", "SELECT status FROM runs")[0][0] == "done"


# -- 4. two swarms landing on the same branch at once ---------------------------------------------


@pytest.mark.drill
@pytest.mark.slow
def test_two_swarms_on_one_branch_lose_nothing(tmp_path: Path) -> None:
    """Two `devswarm run` processes, same data folder, same repository, same --branch, at once:
    compare-and-swap holds, both runs' tasks land once each, a shared file's conflict resolves."""
    repo = make_repo(tmp_path / "user", {"README.md": "twins\n", "shared.txt": "base\n"})
    branch = "devswarm/twins"
    runs = {"twin-a": "A", "twin-b": "B"}
    agents, rules = [NO_FOLLOWUPS], []
    for run, mark in runs.items():
        other = runs["twin-b" if run == "twin-a" else "twin-a"]
        names = [f"{mark.lower()}{i}" for i in range(6)]
        agents.append(
            {
                "match": f"planner/{run}/*",
                "steps": [
                    plan_reply(
                        *[task(n, [f"{n}.txt"]) for n in names], task("shared", ["shared.txt"])
                    )
                ],
            }  # fmt: skip
        )
        for n in names:
            agents.append(
                {"match": f"worker/{run}/*/{n}/*",
                 "steps": [{"tool_calls": [tc("write_file", path=f"{n}.txt", content=f"{n}\n")]},
                           {"tool_calls": [tc("finish", summary=f"{n} done")]}]}
            )  # fmt: skip
        probe = [{"tool_calls": [tc("run", command="env")]}] if mark == "A" else []
        agents.append(
            {"match": f"worker/{run}/*/shared/*",
             # An edit, not a rewrite: a run that starts after the other landed keeps its line.
             "steps": [{"tool_calls": [tc("edit_file", path="shared.txt", old="base\n", new=f"base\n{mark}\n")]},
                       *probe, {"tool_calls": [tc("finish", summary="shared done")]}]}
        )  # fmt: skip
        # Whoever lands second resolves: keep the other run's line, then its own.
        rules.append(
            {"match": f"worker/{run}/*/shared/*", "contains": "hit conflicts",
             "steps": [{"tool_calls": [tc("write_file", path="shared.txt",
                                          content=f"base\n{other}\n{mark}\n")]},
                       {"tool_calls": [tc("finish", summary="shared resolved")]}]}
        )  # fmt: skip
    agents.append(JUDGE_DONE)
    scenario = {"latency": 0.2, "agents": agents, "rules": rules}

    home = tmp_path / "data"
    env = _user_env(tmp_path, home)
    log = tmp_path / "requests.jsonl"
    with ModelServer(Scenario.from_data(scenario), log_path=log) as server:
        procs = {
            run: subprocess.Popen(
                _run_cmd(server.url, repo, run, "--branch", branch, "--workers", "4"),
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,
            )  # fmt: skip
            for run in runs
        }
        outs = {}
        for run, proc in procs.items():
            try:
                outs[run], _ = proc.communicate(timeout=300)
            finally:
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGKILL)
    for run, proc in procs.items():
        assert proc.returncode == 0, f"{run}:\n{outs[run]}"

    facts = checker.assert_sound(
        repo=repo,
        branch=branch,
        home=home,
        secret=SECRET,
        requests=checker.read_request_log(log),
        request_timeout=120.0,
        output="".join(outs.values()),
        scan=[tmp_path / "prefect"],
    )
    assert facts["runs"] == 2 and facts["landed"] == 14  # 6 + shared, twice
    shared = checker.git(repo, "show", f"{branch}:shared.txt")
    assert shared in ("base\nA\nB\n", "base\nB\nA\n"), shared  # both changes kept
    db = home / "devswarm.duckdb"
    # Whether the two shared landings met in a rebase conflict depends on timing (a twin that
    # plans after the other landed edits the new tip); either way both lines are kept above.
    for run in runs:
        assert rows(db, "SELECT status FROM runs WHERE run_id = ?", run)[0][0] == "done"


# -- the checker itself catches what it is for (fast; no swarm) -----------------------------------


def _fake_run(tmp_path: Path, *, duplicate: bool = False, lost: bool = False,
              missing_row: bool = False, leak: str | None = None) -> dict[str, Any]:  # fmt: skip
    """A hand-made 'finished run': a branch with trailers, a store, a request log, a transcript."""
    import duckdb

    from tests.conftest import git

    repo = make_repo(tmp_path / "user", {"README.md": "x\n"})
    git(repo, "switch", "-q", "-c", "devswarm/r")
    landed = []
    for n in ["t1", "t2", "t1"] if duplicate else ["t1", "t2"]:
        (repo / f"{n}.txt").write_text(n + str(len(landed)))
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "-m", f"do {n}\n\nDevswarm-Run: r\nDevswarm-Task: c1.{n}")
        landed.append(git(repo, "rev-parse", "HEAD"))
    git(repo, "switch", "-q", "main")
    if lost:  # a landing reported, then the branch moved back over it
        git(repo, "update-ref", "refs/heads/devswarm/r", landed[-2])
    home = tmp_path / "data"
    (home / "runs" / "r" / "transcripts").mkdir(parents=True)
    con = duckdb.connect(str(home / "devswarm.duckdb"))
    con.execute("CREATE TABLE runs (run_id VARCHAR, tip_commit VARCHAR, status VARCHAR)")
    con.execute("CREATE TABLE tasks (run_id VARCHAR, task_key VARCHAR, status VARCHAR, "
                "reason VARCHAR, commit_sha VARCHAR)")  # fmt: skip
    con.execute("CREATE TABLE landings (run_id VARCHAR, status VARCHAR, commit_sha VARCHAR, "
                "new_tip VARCHAR)")  # fmt: skip
    con.execute("CREATE TABLE model_calls (run_id VARCHAR, agent_id VARCHAR, step INT, attempt INT,"
                " error_type VARCHAR, http_status INT, input_tokens BIGINT, output_tokens BIGINT)")  # fmt: skip
    con.execute("INSERT INTO runs VALUES ('r', ?, 'done')", [landed[-1]])
    for i, n in enumerate(["t1", "t2"]):
        con.execute("INSERT INTO tasks VALUES ('r', ?, 'landed', NULL, ?)", [f"c1.{n}", landed[i]])
        con.execute("INSERT INTO landings VALUES ('r', 'landed', ?, ?)", [landed[i], landed[i]])
    log = [
        {"agent": "worker/r/c1/t1/a1", "step": 0, "attempt": 1, "status": 429, "usage": None,
         "latency_ms": 5, "path": "/v1/chat/completions"},
        {"agent": "worker/r/c1/t1/a1", "step": 0, "attempt": 2, "status": 200, "latency_ms": 5,
         "usage": {"prompt_tokens": 100, "completion_tokens": 7}, "path": "/v1/chat/completions"},
        {"agent": "worker/r/c1/t2/a1", "step": 0, "attempt": 1, "status": 200, "latency_ms": 9000,
         "usage": {"prompt_tokens": 90, "completion_tokens": 5}, "path": "/v1/chat/completions"},
        {"agent": "worker/other/c1/t2/a1", "step": 0, "attempt": 1, "status": 200, "latency_ms": 1,
         "usage": {"prompt_tokens": 1, "completion_tokens": 1}, "path": "/v1/chat/completions"},
    ]  # fmt: skip
    recorded = [("worker/r/c1/t1/a1", 0, 1, "rate_limit_exceeded", 429, None, None),
                ("worker/r/c1/t1/a1", 0, 2, None, 200, 100, 7),
                ("worker/r/c1/t2/a1", 0, 1, "timeout", None, None, None)]  # fmt: skip
    for r in recorded[: 2 if missing_row else 3]:
        con.execute("INSERT INTO model_calls VALUES ('r', ?, ?, ?, ?, ?, ?, ?)", list(r))
    if leak == "duckdb":
        con.execute("UPDATE tasks SET reason = ? WHERE task_key = 'c1.t2'", [f"key {SECRET}"])
    con.close()
    env_out = "PATH=/usr/bin\nHOME=/root\n" + (
        f"OPENAI_API_KEY={SECRET}\n" if leak == "env" else ""
    )
    transcript = [
        {"message": {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function",
             "function": {"name": "run", "arguments": json.dumps({"command": "env"})}}]}},
        {"message": {"role": "tool", "tool_call_id": "c1", "content": env_out}},
    ]  # fmt: skip
    (home / "runs" / "r" / "transcripts" / "w.jsonl").write_text(
        "".join(json.dumps(t) + "\n" for t in transcript)
    )
    if leak == "file":
        (home / "runs" / "r" / "report.html").write_text(f"<p>{SECRET}</p>")
    return dict(repo=repo, branch="devswarm/r", home=home, secret=SECRET, requests=log,
                request_timeout=2.0, output="")  # fmt: skip


@pytest.mark.parametrize(
    "fault, expected",
    [
        ({}, None),
        ({"duplicate": True}, "landed more than once"),
        ({"lost": True}, "not reachable"),
        ({"missing_row": True}, "have no model_calls row"),
        ({"leak": "duckdb"}, "in DuckDB: devswarm.duckdb:tasks.reason"),
        ({"leak": "file"}, "report.html"),
        ({"leak": "env"}, "agent's command saw the API key"),
    ],
)
def test_checker_finds_each_kind_of_damage(
    tmp_path: Path, fault: dict, expected: str | None
) -> None:
    found = checker.check(**_fake_run(tmp_path, **fault))
    if expected is None:
        assert (
            found.problems == [] and found.facts["landed"] == 2 and found.facts["model_calls"] == 3
        )
    else:
        assert any(expected in p for p in found.problems), found.problems


# -- 5. a worker's process killed mid-task (--executor deployment) --------------------------------


def _flow_run_process(marker: str, worker_pid: int) -> tuple[int, list[int]] | None:
    """(the flow-run process running a command with `marker`, the command's pids): the
    command's ancestor that the Prefect worker started."""
    import psutil

    pids = _processes(marker)
    for pid in pids:
        try:
            for parent in psutil.Process(pid).parents():
                if parent.ppid() == worker_pid:
                    return parent.pid, pids
        except psutil.NoSuchProcess:
            continue
    return None


@pytest.mark.drill
@pytest.mark.slow
def test_deployment_worker_process_killed_mid_task_loses_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd
) -> None:
    """--executor deployment: a worker's flow-run process is SIGKILLed while its command runs;
    Prefect marks the flow run crashed, the swarm runs the task again, nothing is lost."""
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_RESULTS_LOCAL_STORAGE_PATH,
        temporary_settings,
    )

    from devswarm.commands.runtime import run_swarm
    from devswarm.config import Models, SwarmConfig
    from flows.worker_deployment import deploy_worker
    from tests.conftest import git
    from tests.test_scaleout import POOL, _start_prefect_server, _start_process_worker, _stop

    victim_a1 = {
        "match": "worker/*/victim/a1",
        "steps": [
            {"tool_calls": [tc("run", command="sleep 3173")]},
            *worker_script("victim")[0]["steps"],
        ],
    }
    scenario = scenario_for(
        [[victim_a1], worker_script("victim"), worker_script("probe", probe=True)], latency=0.05
    )
    plan = plan_reply(task("victim", ["victim.txt"]), task("probe", ["probe.txt"]))
    scenario["agents"] += [{"match": "planner/*", "steps": [plan]}, JUDGE_DONE]
    api_url, server = _start_prefect_server(tmp_path / "server")
    worker = None
    try:
        worker, worker_log = _start_process_worker(tmp_path, api_url, SECRET)
        repo = make_repo(tmp_path / "user", {"README.md": "deployment\n"})
        remote = tmp_path / "shared" / "remote.git"
        git(tmp_path, "init", "-q", "--bare", str(remote))
        log = tmp_path / "requests.jsonl"
        monkeypatch.setenv("OPENAI_API_KEY", SECRET)
        settings = {
            PREFECT_API_URL: api_url,
            PREFECT_RESULTS_LOCAL_STORAGE_PATH: tmp_path / "results",
        }
        did: dict[str, Any] = {}
        done = threading.Event()

        def kill() -> None:
            while not done.wait(0.05):
                found = _flow_run_process("sleep 3173", worker.pid)
                if found:
                    os.kill(found[0], signal.SIGKILL)  # the worker's process, mid-task
                    did["process"], did["command"] = found[0], _kill_groups(found[1])
                    return

        with (
            temporary_settings(settings),
            ModelServer(Scenario.from_data(scenario), log_path=log) as ms,
        ):
            deploy_worker(POOL)
            killer = threading.Thread(target=kill, daemon=True)
            killer.start()
            try:
                summary = run_swarm(
                    SwarmConfig(
                        goal="Write the files.", repo=repo, base_url=ms.url,
                        models=Models.single("offline-model"), home=tmp_path / "data",
                        max_cycles=1, max_workers=2, executor="deployment", remote=str(remote),
                        run_id="drill-deploy",
                    )
                )  # fmt: skip
            finally:
                done.set()
                killer.join(5)
            ms.stop()
            out, err = capfd.readouterr()
            assert did.get("process"), worker_log.read_text()[-3000:]
            assert summary["status"] == "done", worker_log.read_text()[-3000:]
            db = tmp_path / "data" / "devswarm.duckdb"
            agents = dict(rows(db, "SELECT agent_id, status FROM agents WHERE role = 'worker'"))
            assert agents["worker/drill-deploy/c1/root/victim/a2"] == "landed", agents
            assert not _processes("sleep 3173")
            facts = checker.assert_sound(
                repo=repo,
                branch=summary["branch"],
                home=tmp_path / "data",
                secret=SECRET,
                requests=checker.read_request_log(log),
                request_timeout=120.0,
                run_ids=[summary["run_id"]],
                output=out + err + worker_log.read_text(),
                scan=[tmp_path / "results", tmp_path / "worker-home", tmp_path / "server"],
                prefect=True,
            )
        assert facts["landed"] == 2
    finally:
        if worker is not None:
            _stop(worker)
        _stop(server)


def test_clone_reopens_after_a_kill_inside_worktree_add(tmp_path: Path) -> None:
    """Found by bench/resume.py: a SIGKILL inside `git worktree add` left a worktree whose HEAD
    is all zeros, and the resume failed ("cannot refresh ...: bad object worktrees/.../HEAD")."""
    import shutil

    from devswarm.git.workspace import Workspace

    repo = make_repo(tmp_path / "user", {"a.txt": "a\n"})
    ws = Workspace(repo, tmp_path / "home", "devswarm/x")
    wt = ws.add_worktree("w1", ws.tip())
    meta = ws.clone / ".git" / "worktrees" / "w1"
    (meta / "HEAD").write_text("0" * 40 + "\n")  # what git writes first, before the commit
    (meta / "HEAD.lock").write_text("")
    (meta / "locked").write_text(f"devswarm pid {2**22 + 1} on {os.uname().nodename}")  # dead
    for child in wt.iterdir():
        if child.name != ".git":
            shutil.rmtree(child) if child.is_dir() else child.unlink()
    again = Workspace(repo, tmp_path / "home", "devswarm/x")  # raised UserError before the fix
    assert again.tip() == ws.tip()
    assert not meta.exists() and not wt.exists()
