"""Planning and termination through real Prefect: scopes, validation, dependencies, follow-ups,
budgets, drains, red tips, cycles — and no barrier between workers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import chat_requests, git, make_repo
from tests.helpers import JUDGE_DONE, plan_reply, rows, task, tc, write_and_finish

FILES = {"README.md": "project\n", "tests/__init__.py": ""}
NO_FOLLOWUPS = {"match": "planner/*/followup-*", "steps": [plan_reply()]}


def worker(name: str, *steps_or_none, match: str | None = None, **finish) -> dict:
    return {
        "match": match or f"worker/*/{name}/*",
        "steps": list(steps_or_none) or write_and_finish(f"{name}.txt", f"{name}\n", **finish),
    }


def test_three_level_plan_maps_tasks_to_their_owning_planners(swarm_run, tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "user", {"a/x.txt": "", "b/y.txt": "", "b/c/z.txt": "", **FILES})
    scenario = {
        "agents": [
            {
                "match": "planner/*/root",
                "steps": [
                    plan_reply(
                        task("top", ["top.txt"]),
                        scopes=[{"name": "b", "goal": "do b", "paths": ["b"]}],
                    )
                ],
            },
            {
                "match": "planner/*/root.b",
                "steps": [
                    plan_reply(
                        task("mid", ["b/mid.txt"]),
                        scopes=[{"name": "c", "goal": "do c", "paths": ["b/c"]}],
                    )
                ],
            },
            {"match": "planner/*/root.b.c", "steps": [plan_reply(task("deep", ["b/c/deep.txt"]))]},
            worker("top"),
            worker("mid"),
            worker("deep"),
            JUDGE_DONE,
        ]
    }
    summary, _ = swarm_run(scenario, repo)
    owners = dict(
        rows(
            Path(summary["db"]),
            "SELECT task_key, planner_agent_id FROM tasks WHERE status = 'landed'",
        )
    )
    run = summary["run_id"]
    assert owners == {
        "c1.root.top": f"planner/{run}/c1/root",
        "c1.root.b.mid": f"planner/{run}/c1/root.b",
        "c1.root.b.c.deep": f"planner/{run}/c1/root.b.c",
    }


def test_invalid_plan_goes_back_once_with_the_errors(swarm_run, tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "user", FILES)
    bad = plan_reply(
        task("a", ["a.txt"]), task("a", ["a2.txt"]), task("b", ["b.txt"], depends_on=["nope"])
    )
    good = plan_reply(task("a", ["a.txt"]), task("b", ["b.txt"], depends_on=["a"]))
    scenario = {
        "agents": [
            NO_FOLLOWUPS,
            {"match": "planner/*", "steps": [bad, good]},
            worker("a"),
            worker("b"),
            JUDGE_DONE,
        ]
    }
    summary, log = swarm_run(scenario, repo)
    second = [r for r in chat_requests(log) if r["agent"].startswith("planner/")][1]
    text = json.dumps(second["request"]["messages"])
    assert "That plan is invalid" in text and "repeated: a" in text and "nope" in text
    assert sorted(rows(Path(summary["db"]), "SELECT task_key, status FROM tasks")) == [
        ("c1.root.a", "landed"),
        ("c1.root.b", "landed"),
    ]


def test_dependency_chain_lands_in_order_and_a_failed_dependency_skips_its_dependant(
    swarm_run, tmp_path: Path
) -> None:
    repo = make_repo(tmp_path / "user", FILES)
    plan = plan_reply(
        task("first", ["first.txt"]),
        task("second", ["second.txt"], depends_on=["first"]),
        task("broken", ["broken.txt"], check="false"),
        task("after-broken", ["after.txt"], depends_on=["broken"]),
    )
    finish = {"tool_calls": [tc("finish", summary="x")]}
    scenario = {
        "agents": [
            NO_FOLLOWUPS,
            {"match": "planner/*/root", "steps": [plan]},
            worker("first"),
            # second reads first.txt: it exists only if second started from a tip holding first
            worker(
                "second",
                {"tool_calls": [tc("read_file", path="first.txt")]},
                *write_and_finish("second.txt", "2\n"),
            ),
            worker(
                "broken",
                {"tool_calls": [tc("write_file", path="broken.txt", content="b")]},
                finish,
                finish,
                finish,
            ),
            worker("after-broken"),
            JUDGE_DONE,
        ]
    }
    summary, log = swarm_run(scenario, repo)
    db = Path(summary["db"])
    status = dict(rows(db, "SELECT task_key, status FROM tasks"))
    assert status == {
        "c1.root.first": "landed",
        "c1.root.second": "landed",
        "c1.root.broken": "failed",
        "c1.root.after-broken": "skipped",
    }
    depends = {k: json.loads(v) for k, v in rows(db, "SELECT task_key, depends_on FROM tasks")}
    assert depends == {
        "c1.root.first": [],
        "c1.root.second": ["c1.root.first"],
        "c1.root.broken": [],
        "c1.root.after-broken": ["c1.root.broken"],
    }
    order = [
        r[0]
        for r in rows(db, "SELECT task_key FROM landings WHERE status = 'landed' ORDER BY ended_at")
    ]
    assert order == ["c1.root.first", "c1.root.second"]
    second = [r for r in chat_requests(log) if "/second/" in r["agent"]]
    assert "not_found" not in json.dumps(second[1]["request"]["messages"][-1])
    reason = rows(db, "SELECT reason FROM tasks WHERE task_key = 'c1.root.after-broken'")[0][0]
    assert "c1.root.broken" in reason
    assert not [r for r in chat_requests(log) if "/after-broken/" in r["agent"]]


def test_followup_task_from_a_handoff_runs_in_the_same_cycle(swarm_run, tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "user", FILES)
    scenario = {
        "agents": [
            {
                "match": "planner/*/root/followup-part",
                "steps": [plan_reply(task("rest", ["rest.txt"]))],
            },
            {"match": "planner/*/root", "steps": [plan_reply(task("part", ["part.txt"]))]},
            worker("part", not_done="rest.txt is still missing"),
            worker("rest"),
            JUDGE_DONE,
        ]
    }
    summary, log = swarm_run(scenario, repo)
    db = Path(summary["db"])
    assert dict(rows(db, "SELECT task_key, status FROM tasks")) == {
        "c1.root.part": "landed",
        "c1.root.rest": "landed",
    }
    followup = [r for r in chat_requests(log) if r["agent"].endswith("followup-part")][0]
    assert "rest.txt is still missing" in json.dumps(followup["request"]["messages"])
    assert rows(db, "SELECT planner_agent_id, cycle FROM tasks WHERE task_key = 'c1.root.rest'")[
        0
    ] == (
        f"planner/{summary['run_id']}/c1/root/followup-part",
        1,
    )
    assert git(repo, "show", f"{summary['branch']}:rest.txt") == "rest"


def _spend(db: Path) -> tuple[int, float]:
    return rows(
        db,
        "SELECT coalesce(sum(input_tokens + output_tokens), 0), coalesce(sum(cost_usd), 0) FROM model_calls",
    )[0]


def _many_workers(n: int) -> dict:
    return {
        "agents": [
            NO_FOLLOWUPS,
            {
                "match": "planner/*",
                "steps": [plan_reply(*[task(f"t{i}", [f"t{i}.txt"]) for i in range(n)])],
            },
            *[worker(f"t{i}") for i in range(n)],
            JUDGE_DONE,
        ]
    }


def test_token_budget_drains_the_swarm_without_overspending(swarm_run, tmp_path: Path) -> None:
    from devswarm.config import Budget

    repo = make_repo(tmp_path / "user", FILES)
    cap = 12_000
    summary, log = swarm_run(_many_workers(6), repo, budget=Budget(max_tokens=cap), max_workers=2)
    db = Path(summary["db"])
    assert summary["status"] == "budget_exhausted"
    tokens, _ = _spend(db)
    assert 0 < tokens <= cap
    statuses = dict(rows(db, "SELECT task_key, status FROM tasks"))
    assert "budget_exhausted" in statuses.values() or "skipped" in statuses.values()
    # nothing lost: every task is accounted for, every landed commit is on the branch
    assert len(statuses) == 6
    for sha in [r[0] for r in rows(db, "SELECT commit_sha FROM tasks WHERE status = 'landed'")]:
        git(repo, "merge-base", "--is-ancestor", sha, summary["branch"])
    assert rows(db, "SELECT count(*) FROM model_calls")[0][0] == len(chat_requests(log))


def test_dollar_budget_drains_the_swarm_without_overspending(swarm_run, tmp_path: Path) -> None:
    from devswarm.config import Budget

    repo = make_repo(tmp_path / "user", FILES)
    cap = 0.02
    summary, _ = swarm_run(_many_workers(6), repo, budget=Budget(max_cost_usd=cap), max_workers=2)
    assert summary["status"] == "budget_exhausted"
    _, cost = _spend(Path(summary["db"]))
    assert 0 < cost <= cap


def test_wall_seconds_budget_drains_the_swarm(swarm_run, tmp_path: Path) -> None:
    from devswarm.config import Budget

    repo = make_repo(tmp_path / "user", FILES)
    scenario = _many_workers(4)
    scenario["latency"] = 1.0
    summary, _ = swarm_run(scenario, repo, budget=Budget(max_wall_seconds=4), max_workers=1)
    assert summary["status"] == "budget_exhausted"
    statuses = [r[0] for r in rows(Path(summary["db"]), "SELECT status FROM tasks")]
    assert "skipped" in statuses or "budget_exhausted" in statuses


def test_cycle_budget_ends_a_run_the_judge_would_continue(swarm_run, tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "user", FILES)
    scenario = _many_workers(1)
    scenario["agents"][-1] = {
        "match": "judge/*",
        "steps": [{"json": {"decision": "continue", "reasons": "more", "score": 0.5}}],
    }
    summary, _ = swarm_run(scenario, repo, max_cycles=1)
    assert summary["status"] == "budget_exhausted"
    assert summary["cycles"] == 1


def test_red_tip_is_repaired_first_and_cycle_two_starts_from_the_new_tip(
    swarm_run, tmp_path: Path
) -> None:
    repo = make_repo(tmp_path / "user", {**FILES, "ok.txt": "no\n"})
    check = "grep -q yes ok.txt"
    scenario = {
        "agents": [
            {"match": "planner/*/c1/root", "steps": [plan_reply(task("side", ["side.txt"]))]},
            {
                "match": "planner/*/c2/root",
                "steps": [
                    {"tool_calls": [tc("read_file", path="side.txt")]},
                    plan_reply(task("fix", ["ok.txt"])),
                ],
            },
            worker("side"),
            worker("fix", *write_and_finish("ok.txt", "yes\n")),
            {
                "match": "judge/*/c1",
                "steps": [{"json": {"decision": "continue", "reasons": "check red", "score": 0.3}}],
            },
            JUDGE_DONE,
        ]
    }
    summary, log = swarm_run(scenario, repo, check=check, max_cycles=3)
    assert summary["status"] == "done" and summary["cycles"] == 2
    c2 = [
        r
        for r in chat_requests(log)
        if "/c2/root" in r["agent"] and r["agent"].startswith("planner/")
    ]
    first = json.dumps(c2[0]["request"]["messages"])
    assert "FIRST PRIORITY" in first and "grep -q yes ok.txt" in first and "c1.root.side" in first
    # cycle 2 planned from the tip cycle 1 left: side.txt exists there
    assert "not_found" not in json.dumps(c2[1]["request"]["messages"][-1])
    state = json.loads((tmp_path / "data" / "runs" / summary["run_id"] / "state.json").read_text())
    assert state["cycle_tips"]["2"] == state["cycles"][0]["tip"] != state["cycle_tips"]["1"]


def test_no_barrier_fast_workers_report_and_follow_up_before_the_slow_one_ends(
    swarm_run, tmp_path: Path
) -> None:
    repo = make_repo(tmp_path / "user", FILES)
    # Slow enough that the fast ones start, land and are followed up on a loaded machine too
    # (work flow runs have taken up to 15 s to start on the temporary server under load).
    slow = [{**s, "latency": 15.0} for s in write_and_finish("slow.txt", "slow\n")]
    scenario = {
        "agents": [
            {"match": "planner/*/root/followup-fast0", "steps": [plan_reply()]},
            {
                "match": "planner/*/root",
                "steps": [
                    plan_reply(
                        task("slow", ["slow.txt"]),
                        *[task(f"fast{i}", [f"fast{i}.txt"]) for i in range(3)],
                    )
                ],
            },
            worker("slow", *slow),
            worker("fast0", concerns="check the slow one"),
            worker("fast1"),
            worker("fast2"),
            JUDGE_DONE,
        ]
    }
    summary, _ = swarm_run(scenario, repo, max_workers=4)
    db = Path(summary["db"])
    ended = dict(rows(db, "SELECT task_key, ended_at FROM tasks"))
    slow_end = ended["c1.root.slow"]
    assert all(ended[f"c1.root.fast{i}"] < slow_end for i in range(3))
    fu_start = rows(db, "SELECT started_at FROM agents WHERE agent_id LIKE '%followup-fast0'")[0][0]
    assert fu_start < slow_end
    imported = rows(db, "SELECT min(recorded_at) FROM tool_calls WHERE agent_id LIKE '%/fast1/%'")
    assert imported[0][0] is not None


def test_no_planning_barrier_the_roots_tasks_land_while_a_slow_sub_planner_still_plans(
    swarm_run, tmp_path: Path
) -> None:
    repo = make_repo(tmp_path / "user", {**FILES, "slow/s.txt": "", "quick/q.txt": ""})
    scopes = [
        {"name": "slow", "goal": "do slow", "paths": ["slow"]},
        {"name": "quick", "goal": "do quick", "paths": ["quick"]},
    ]
    scenario = {
        "agents": [
            NO_FOLLOWUPS,
            {
                "match": "planner/*/root",
                "steps": [
                    plan_reply(task("top", ["top.txt"]), task("top2", ["top2.txt"]), scopes=scopes)
                ],
            },
            {
                "match": "planner/*/root.slow",
                "steps": [{**plan_reply(task("deep", ["slow/deep.txt"])), "latency": 8.0}],
            },
            {"match": "planner/*/root.quick", "steps": [plan_reply(task("near", ["quick/n.txt"]))]},
            worker("top"),
            worker("top2"),
            worker("deep"),
            worker("near"),
            JUDGE_DONE,
        ]
    }
    summary, _ = swarm_run(scenario, repo, max_workers=4)
    db = Path(summary["db"])
    assert summary["status"] == "done"
    landed = dict(rows(db, "SELECT task_key, ended_at FROM landings WHERE status = 'landed'"))
    assert set(landed) == {"c1.root.top", "c1.root.top2", "c1.root.slow.deep", "c1.root.quick.near"}
    planners = dict(rows(db, "SELECT plan_path, ended_at FROM agents WHERE role = 'planner'"))
    # The root's tasks landed, and the quick sibling's too, while the slow sub-planner planned.
    for key in ("c1.root.top", "c1.root.top2", "c1.root.quick.near"):
        assert landed[key] < planners["root.slow"]
    # The root's tasks went first (dispatched before any sub-planner started).
    started = rows(db, "SELECT task_key FROM agents WHERE role = 'worker' ORDER BY started_at")
    assert started[0][0] in {"c1.root.top", "c1.root.top2"}
    # A resumed run's planners replay: each planned against the cycle's recorded base.
    state = json.loads((tmp_path / "data" / "runs" / summary["run_id"] / "state.json").read_text())
    assert state["cycle_tips"]["1"] == git(repo, "rev-parse", "main")


@pytest.mark.parametrize("how", ["stop command", "SIGTERM", "SIGINT"])
def test_a_running_swarm_drains_on_stop_sigterm_and_ctrl_c(tmp_path: Path, how: str) -> None:
    from devswarm.offline.server import ModelServer, Scenario

    repo = make_repo(tmp_path / "user", FILES)
    scenario = _many_workers(6)
    scenario["latency"] = 0.5
    home = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env.update(
        DEVSWARM_HOME=str(home), OPENAI_API_KEY="sk-x", PREFECT_HOME=str(tmp_path / "prefect")
    )
    exe = str(Path(sys.executable).parent / "devswarm")
    with ModelServer(Scenario.from_data(scenario), log_path=tmp_path / "log.jsonl") as server:
        proc = subprocess.Popen(
            [
                exe,
                "run",
                "--repo",
                str(repo),
                "--goal",
                "g",
                "--base-url",
                server.url,
                "--model",
                "offline-model",
                "--workers",
                "1",
                "--run-id",
                "stopme",
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not list(
            (home / "runs" / "stopme" / "records").glob("worker_*")
        ):
            time.sleep(0.2)
        if how == "stop command":
            stop = subprocess.run([exe, "stop", "stopme"], env=env, capture_output=True, text=True)
            assert stop.returncode == 0, stop.stderr
        else:
            proc.send_signal(getattr(signal, how))
        out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, out + err
    assert "stopped after" in out
    assert "Traceback" not in err
    statuses = [r[0] for r in rows(home / "devswarm.duckdb", "SELECT status FROM tasks")]
    assert statuses.count("skipped") >= 3  # never started
    assert len(statuses) == 6  # every task accounted for


@pytest.mark.slow
def test_hot_files_from_earlier_landings_reach_the_next_runs_planners(
    swarm_run, tmp_path: Path
) -> None:
    from devswarm.demo import CHECK, DEMO, make_demo_repo

    repo = make_demo_repo(tmp_path / "textkit")
    scenario = json.loads((DEMO / "scenario.json").read_text())
    first, log1 = swarm_run(scenario, repo, check=CHECK)
    assert (
        rows(Path(first["db"]), "SELECT count(*) FROM landings WHERE status = 'conflict'")[0][0]
        == 1
    )
    planner1 = [r for r in chat_requests(log1) if r["agent"].endswith("/c1/root")][0]
    assert "Hot files" not in json.dumps(planner1["request"]["messages"])
    _, log2 = swarm_run(scenario, repo, check=CHECK)
    planner2 = [r for r in chat_requests(log2) if r["agent"].endswith("/c1/root")][0]
    assert "textkit/__init__.py: 1 conflicts" in json.dumps(planner2["request"]["messages"])
