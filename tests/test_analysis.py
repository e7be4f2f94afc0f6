"""Post-run analysis: views against what a real offline run did, Prefect history, migrations,
Parquet, the HTML report, the README's queries, and two runs writing at once."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import statistics
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from types import SimpleNamespace

import duckdb
import pytest

from devswarm.config import KNOWN_PRICES
from devswarm.history import flow_run_record, task_run_record
from devswarm.store.attach import fingerprint
from devswarm.store.migrations import SCHEMA_VERSION
from devswarm.store.schema import TABLES
from devswarm.store.store import Store
from devswarm.store.warehouse import open_readonly, publish_run, run_store_files, run_store_path
from tests.conftest import chat_requests, git, make_repo

REPO = Path(__file__).resolve().parents[1]
DEVSWARM = Path(sys.executable).parent / "devswarm"
CHARTS = [
    "chart-landings",
    "chart-tip",
    "chart-tokens-role",
    "chart-cost-role",
    "chart-tokens-agent",
    "chart-cost-agent",
    "chart-outcomes",
    "chart-hot-files",
    "chart-latency",
]


@pytest.fixture(scope="session")
def demo(prefect_server: None, tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """The demo scenario run through real Prefect, git and HTTP, as `devswarm demo` runs it,
    with two faults injected so errors show: a 429 on the root planner's first call and a
    read_file of a missing file."""
    from devswarm.commands.runtime import run_swarm
    from devswarm.config import Models, SwarmConfig
    from devswarm.demo import CHECK, DEMO, make_demo_repo
    from devswarm.offline.server import ModelServer, Scenario

    base = tmp_path_factory.mktemp("demo")
    repo = make_demo_repo(base / "textkit")
    scenario = json.loads((DEMO / "scenario.json").read_text())
    root = next(a for a in scenario["agents"] if a["match"] == "planner/*/root")
    root["steps"][0]["fail"] = {"status": 429, "retry_after": 0, "attempts": 1}
    root["steps"][0]["tool_calls"].append({"name": "read_file", "arguments": {"path": "NOPE.md"}})
    log = base / "model-requests.jsonl"
    os.environ["OPENAI_API_KEY"] = "sk-offline-demo-key"
    with ModelServer(Scenario.from_data(scenario), log_path=log) as server:
        cfg = SwarmConfig(
            goal=(repo / "GOAL.md").read_text(),
            repo=repo,
            branch="devswarm/demo",
            check=CHECK,
            base_url=server.url,
            models=Models.single("offline-model"),
            max_cycles=2,
            max_workers=4,
            home=base / "data",
        )
        summary = run_swarm(cfg)
    assert summary["status"] == "done", summary
    return SimpleNamespace(
        summary=summary,
        run_id=summary["run_id"],
        db=Path(summary["db"]),
        home=base / "data",
        repo=repo,
        requests=chat_requests(log),
    )


def query(db: Path, sql: str, params=None) -> list[dict]:
    with open_readonly(db) as store:
        cols, rows = store.query(sql, params)
    return [dict(zip(cols, r, strict=True)) for r in rows]


def cost(usage: dict) -> float:
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    return KNOWN_PRICES["offline-model"].cost(
        usage["prompt_tokens"], cached, usage["completion_tokens"]
    )


def landed_commits(demo: SimpleNamespace) -> dict[str, str]:
    """Task key -> commit on the landing branch, from git's trailers alone."""
    out = git(
        demo.repo,
        "log",
        "--format=%H%x00%(trailers:key=Devswarm-Task,valueonly)%x00",
        "main..devswarm/demo",
    )
    pairs = [chunk.strip().split("\x00") for chunk in out.split("\x00\n") if chunk.strip()]
    return {task.strip(): sha for sha, task, *_ in pairs if task.strip()}


# --- views against the request log and git


def test_role_and_agent_metrics_equal_the_request_log(demo: SimpleNamespace) -> None:
    per_role: dict[str, Counter] = defaultdict(Counter)
    per_agent: dict[str, Counter] = defaultdict(Counter)
    costs: dict[str, float] = defaultdict(float)
    for r in demo.requests:
        role = r["agent"].split("/")[0]
        for bucket in (per_role[role], per_agent[r["agent"]]):
            bucket["calls"] += 1
            bucket["failed"] += r["status"] != 200
            if r["usage"]:
                bucket["in"] += r["usage"]["prompt_tokens"]
                bucket["out"] += r["usage"]["completion_tokens"]
        if r["usage"]:
            costs[role] += cost(r["usage"])
    roles = {x["role"]: x for x in query(demo.db, "SELECT * FROM role_metrics")}
    # The capabilities probe at preflight is a model call too (it costs tokens): role preflight.
    assert set(roles) == {"preflight", "planner", "worker", "judge"}
    total_tokens = sum(c["in"] + c["out"] for c in per_role.values())
    for role, c in per_role.items():
        row = roles[role]
        assert (row["calls"], row["failed_calls"]) == (c["calls"], c["failed"])
        assert (row["input_tokens"], row["output_tokens"]) == (c["in"], c["out"])
        assert row["cost_usd"] == pytest.approx(costs[role], rel=1e-9)
        assert row["token_share"] == pytest.approx((c["in"] + c["out"]) / total_tokens)
    assert roles["planner"]["failed_calls"] == 1  # the injected 429
    assert sum(x["cost_share"] for x in roles.values()) == pytest.approx(1.0)
    agents = {x["agent_id"]: x for x in query(demo.db, "SELECT * FROM agent_metrics")}
    # The probe is no agent: agent_metrics holds the planners, workers and judges.
    assert set(agents) == {a for a in per_agent if not a.startswith("preflight/")}
    per_agent = {a: c for a, c in per_agent.items() if a in agents}
    for agent, c in per_agent.items():
        row = agents[agent]
        assert (row["calls"], row["input_tokens"], row["output_tokens"]) == (
            c["calls"],
            c["in"],
            c["out"],
        )


def test_task_outcomes_and_timeline_equal_git_and_the_log(demo: SimpleNamespace) -> None:
    commits = landed_commits(demo)
    assert len(commits) == 4
    tasks = {t["task_key"]: t for t in query(demo.db, "SELECT * FROM task_outcomes")}
    landed = {k: t["commit_sha"] for k, t in tasks.items() if t["status"] == "landed"}
    assert landed == commits
    # A worker's cost, from the log: agent worker/<run>/c1/<plan path>/<id>/a1 -> task c1.<path>.<id>
    worker_cost: dict[str, float] = defaultdict(float)
    for r in demo.requests:
        parts = r["agent"].split("/")
        if parts[0] == "worker" and r["usage"]:
            worker_cost[".".join(parts[2:5])] += cost(r["usage"])
    for key, t in tasks.items():
        assert t["cost_usd"] == pytest.approx(worker_cost[key], rel=1e-9)
        assert t["landed_cost_usd"] == pytest.approx(worker_cost[key], rel=1e-9)
        assert 0 < t["seconds_to_land"] <= t["wall_seconds"] + 1e-6
    summary = query(demo.db, "SELECT * FROM run_summary")[0]
    assert summary["cost_per_landed_task"] == pytest.approx(
        sum(cost(r["usage"]) for r in demo.requests if r["usage"]) / len(commits)
    )
    timeline = query(demo.db, "SELECT * FROM landing_timeline ORDER BY minute")
    assert sum(m["landings"] for m in timeline) == len(commits)
    assert timeline[-1]["landed_total"] == len(commits)


def test_hot_files_count_the_conflicts_the_workers_were_told_about(demo: SimpleNamespace) -> None:
    # A conflict goes back to the worker as a message listing the conflicted files; the last
    # request of each worker holds all the messages it was sent.
    last: dict[str, dict] = {}
    for r in demo.requests:
        last[r["agent"]] = r
    told: Counter = Counter()
    for r in last.values():
        for m in r["request"]["messages"]:
            text = m.get("content") or ""
            if m["role"] == "user" and "hit conflicts" in text:
                listed = text.split("Conflicted files", 1)[1].split("\n\n")[0]
                told.update(re.findall(r"^- (\S+)$", listed, re.M))
    assert told  # the demo has a conflict
    hot = {f["file"]: f for f in query(demo.db, "SELECT * FROM hot_files")}
    assert {f: h["conflicts"] for f, h in hot.items() if h["conflicts"]} == dict(told)
    assert hot["textkit/__init__.py"]["planned_tasks"] == 2


def test_tool_errors_and_model_latency(demo: SimpleNamespace) -> None:
    errors = query(demo.db, "SELECT * FROM tool_errors")
    assert [(e["tool_name"], e["error_type"], e["errors"], e["agents"]) for e in errors] == [
        ("read_file", "not_found", 1, 1)
    ]
    assert "NOPE.md" in errors[0]["example"]
    tool_calls = sum(
        len(r["response"]["choices"][0]["message"].get("tool_calls") or [])
        for r in demo.requests
        if r["status"] == 200
    )
    assert query(demo.db, "SELECT count(*) AS n FROM tool_calls")[0]["n"] == tool_calls

    (lat,) = query(demo.db, "SELECT * FROM model_latency")
    answered = [r for r in demo.requests if r["status"] == 200]
    assert lat["calls"] == len(demo.requests) and lat["ok_calls"] == len(answered)
    assert lat["failed_calls"] == 1 and lat["retries"] == 1
    assert lat["p50_ms"] <= lat["p90_ms"] <= lat["p99_ms"] <= lat["max_ms"]
    # The client's time for a call includes the server's: its quantiles cannot be lower.
    server = sorted(r["latency_ms"] for r in answered)
    assert lat["p50_ms"] >= statistics.median(server) - 5
    assert lat["max_ms"] >= server[-1] - 5
    assert lat["p50_ms"] >= 50  # the demo server answers after 50 ms


# --- Prefect history


def test_prefect_history_joins_tasks_agents_and_calls(demo: SimpleNamespace) -> None:
    works = query(
        demo.db,
        "SELECT t.task_key, t.worker_agent_id, p.agent_id, p.state_type, p.name"
        " FROM tasks t JOIN prefect_flow_runs p USING (run_id, task_key)",
    )
    assert len(works) == 4
    for w in works:
        assert w["agent_id"] == w["worker_agent_id"] and w["state_type"] == "COMPLETED"
        assert w["name"] == f"work: {w['task_key']}"
    # Every agent recorded the flow run it ran in, and that flow run is the one joined to it.
    agents = query(
        demo.db,
        "SELECT a.agent_id, a.flow_run_id, p.flow_run_id AS joined FROM agents a"
        " LEFT JOIN prefect_flow_runs p USING (agent_id)",
    )
    assert agents and all(a["flow_run_id"] and a["flow_run_id"] == a["joined"] for a in agents)
    # One model-call task run per (agent, step); the 429 is a retry of the same task run.
    calls = query(
        demo.db,
        "SELECT p.agent_id, p.step, p.run_count, p.retries, count(l.call_id) AS attempts"
        " FROM prefect_task_runs p LEFT JOIN model_calls l USING (agent_id, step)"
        " WHERE p.task_name = 'model-call' GROUP BY ALL",
    )
    # The preflight probe runs before the swarm flow: a model call, not a Prefect task run.
    steps = {
        (r["agent"], r["step"]) for r in demo.requests if not r["agent"].startswith("preflight/")
    }
    assert len(steps) < len(demo.requests) and {(c["agent_id"], c["step"]) for c in calls} == steps
    assert all(c["run_count"] == c["attempts"] == c["retries"] + 1 for c in calls)
    assert sorted(c["attempts"] for c in calls)[-2:] == [1, 2]
    lands = query(
        demo.db,
        "SELECT count(*) AS n, count(agent_id) AS joined FROM prefect_task_runs"
        " WHERE task_name = 'land'",
    )[0]
    assert (
        lands["n"]
        == lands["joined"]
        == query(demo.db, "SELECT count(*) AS n FROM landings")[0]["n"]
    )


def test_each_model_call_row_records_the_cache_key_prefect_stored_its_answer_under(
    demo: SimpleNamespace,
) -> None:
    from prefect.settings import PREFECT_RESULTS_LOCAL_STORAGE_PATH

    keys = query(demo.db, "SELECT cache_key, http_status, agent_id FROM model_calls")
    assert len(keys) == len(demo.requests)
    # The capabilities probe is asked afresh each run (the server may have changed): no cache.
    probes = [k for k in keys if k["agent_id"].startswith("preflight/")]
    assert len(probes) == 1 and probes[0]["cache_key"] is None
    keys = [k for k in keys if k not in probes]
    assert keys and all(k["cache_key"] for k in keys)
    # Prefect names each cached answer's file by its cache key (the 429 and its retry share one).
    stored = {p.name for p in Path(PREFECT_RESULTS_LOCAL_STORAGE_PATH.value()).iterdir()}
    ours = {k for k in stored if k.startswith(f"devswarm-{demo.run_id}-")}
    assert {k["cache_key"] for k in keys if k["http_status"] == 200} == ours


def test_history_import_command_is_idempotent(demo: SimpleNamespace) -> None:
    from prefect.settings import PREFECT_API_URL

    before = query(
        demo.db,
        "SELECT (SELECT count(*) FROM prefect_flow_runs) AS f,"
        " (SELECT count(*) FROM prefect_task_runs) AS t",
    )[0]
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
    proc = subprocess.run(
        [str(DEVSWARM), "history", "import", "--run", demo.run_id, "--db", str(demo.db)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert f"{before['f']} flow runs and {before['t']} task runs imported" in proc.stdout
    after = query(
        demo.db,
        "SELECT (SELECT count(*) FROM prefect_flow_runs) AS f,"
        " (SELECT count(*) FROM prefect_task_runs) AS t",
    )[0]
    assert after == before


def test_flow_runs_without_parameters_join_by_name_and_time(tmp_path: Path) -> None:
    db = tmp_path / "w.duckdb"
    with Store(db) as store:
        for i, (task, start) in enumerate([("c1.root.a", "10:00:01"), ("c2.root.a", "10:05:01")]):
            store.add(
                "agents",
                agent_id=f"worker/r/c{i + 1}/root/a/a1",
                run_id="r",
                role="worker",
                task_key=task,
                started_at=f"2026-01-01T{start}Z",
            )
        flows = [
            {
                "id": f"00000000-0000-0000-0000-00000000000{i}",
                "name": "work · a",
                "start_time": s,
                "end_time": e,
            }
            for i, (s, e) in enumerate(
                [("2026-01-01T10:00:00Z", "2026-01-01T10:01:00Z"), ("2026-01-01T10:05:00Z", None)]
            )
        ]
        task = {
            "id": "10000000-0000-0000-0000-000000000000",
            "name": "land · x",
            "flow_run_id": flows[1]["id"],
            "run_count": 1,
        }
        records = [flow_run_record(f, "work", "r") for f in flows] + [task_run_record(task, "r")]
        assert all(r.get("agent_id") is None for r in records)  # neither parameters nor step
        store.add_many(records)
        store.link_history("r")
        rows = store.query("SELECT agent_id, task_key FROM prefect_flow_runs ORDER BY flow_run_id")[
            1
        ]
        assert rows == [
            ("worker/r/c1/root/a/a1", "c1.root.a"),
            ("worker/r/c2/root/a/a1", "c2.root.a"),
        ]
        assert store.query("SELECT agent_id FROM prefect_task_runs")[1] == [
            ("worker/r/c2/root/a/a1",)
        ]


# --- schema


V1_DDL = [
    "CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at TIMESTAMP)",
    "CREATE TABLE runs (run_id VARCHAR, run_name VARCHAR, goal VARCHAR, repo_path VARCHAR,"
    " branch VARCHAR, base_commit VARCHAR, tip_commit VARCHAR, status VARCHAR, started_at TIMESTAMP,"
    " ended_at TIMESTAMP, cycles INTEGER, flow_run_id VARCHAR, config VARCHAR,"
    " recorded_at TIMESTAMP, PRIMARY KEY (run_id))",
    "CREATE TABLE cycles (run_id VARCHAR, cycle INTEGER, started_at TIMESTAMP, ended_at TIMESTAMP,"
    " tip_before VARCHAR, tip_after VARCHAR, decision VARCHAR, reasons VARCHAR, score DOUBLE,"
    " label VARCHAR, check_passed BOOLEAN, span_id VARCHAR, parent_span_id VARCHAR,"
    " recorded_at TIMESTAMP, PRIMARY KEY (run_id, cycle))",
    "CREATE TABLE agents (agent_id VARCHAR, run_id VARCHAR, cycle INTEGER, role VARCHAR,"
    " plan_path VARCHAR, task_id VARCHAR, parent_agent_id VARCHAR, request_model VARCHAR,"
    " status VARCHAR, steps INTEGER, started_at TIMESTAMP, ended_at TIMESTAMP, handoff VARCHAR,"
    " flow_run_id VARCHAR, span_id VARCHAR, parent_span_id VARCHAR, recorded_at TIMESTAMP,"
    " PRIMARY KEY (agent_id))",
    "CREATE TABLE tasks (run_id VARCHAR, task_id VARCHAR, cycle INTEGER, planner_agent_id VARCHAR,"
    " worker_agent_id VARCHAR, title VARCHAR, description VARCHAR, acceptance VARCHAR,"
    " files VARCHAR, check_command VARCHAR, depends_on VARCHAR, status VARCHAR, reason VARCHAR,"
    " attempts INTEGER, base_commit VARCHAR, commit_sha VARCHAR, started_at TIMESTAMP,"
    " ended_at TIMESTAMP, recorded_at TIMESTAMP, PRIMARY KEY (run_id, task_id))",
    "CREATE TABLE llm_calls (call_id VARCHAR, run_id VARCHAR, agent_id VARCHAR, step INTEGER,"
    " attempt INTEGER, operation_name VARCHAR, provider_name VARCHAR, request_model VARCHAR,"
    " response_model VARCHAR, response_id VARCHAR, input_tokens BIGINT, output_tokens BIGINT,"
    " cache_read_input_tokens BIGINT, cost_usd DOUBLE, finish_reasons VARCHAR,"
    " error_type VARCHAR, http_status INTEGER, started_at TIMESTAMP, ended_at TIMESTAMP,"
    " duration_ms DOUBLE, cache_key VARCHAR, span_id VARCHAR, parent_span_id VARCHAR,"
    " recorded_at TIMESTAMP, PRIMARY KEY (call_id))",
    "CREATE TABLE tool_calls (run_id VARCHAR, agent_id VARCHAR, step INTEGER,"
    " tool_call_id VARCHAR, tool_name VARCHAR, arguments VARCHAR, output_excerpt VARCHAR,"
    " error_type VARCHAR, duration_ms DOUBLE, started_at TIMESTAMP, span_id VARCHAR,"
    " parent_span_id VARCHAR, recorded_at TIMESTAMP, PRIMARY KEY (agent_id, step, tool_call_id))",
    "CREATE TABLE landings (landing_id VARCHAR, run_id VARCHAR, cycle INTEGER, task_id VARCHAR,"
    " agent_id VARCHAR, branch VARCHAR, commit_sha VARCHAR, old_tip VARCHAR, new_tip VARCHAR,"
    " status VARCHAR, cas_retries INTEGER, conflict_files VARCHAR, resolved BOOLEAN,"
    " started_at TIMESTAMP, ended_at TIMESTAMP, duration_ms DOUBLE, span_id VARCHAR,"
    " parent_span_id VARCHAR, recorded_at TIMESTAMP, PRIMARY KEY (landing_id))",
    "INSERT INTO schema_version VALUES (1, now())",
    "INSERT INTO runs (run_id, status, started_at) VALUES ('old', 'done', '2026-01-01 10:00:00')",
    "INSERT INTO agents (agent_id, run_id, role) VALUES ('worker/old/c1/root/a/a1', 'old', 'worker')",
    "INSERT INTO llm_calls (call_id, run_id, agent_id, input_tokens, output_tokens, cost_usd,"
    " duration_ms, request_model) VALUES ('c1', 'old', 'worker/old/c1/root/a/a1', 10, 2, 0.5, 7.0, 'm')",
    "INSERT INTO landings (landing_id, run_id, task_id, status, conflict_files, ended_at)"
    " VALUES ('l1', 'old', 't', 'conflict', '[\"a.py\"]', '2026-01-01 10:01:00')",
]


def make_v1(path: Path) -> Path:
    con = duckdb.connect(str(path))
    for statement in V1_DDL:
        con.execute(statement)
    con.close()
    return path


def columns(db: Path) -> dict[str, list[tuple[str, str]]]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        rows = con.execute(
            "SELECT table_name, column_name, data_type FROM information_schema.columns"
            " WHERE table_schema = 'main' AND table_name IN"
            " (SELECT table_name FROM information_schema.tables WHERE table_type = 'BASE TABLE')"
            " ORDER BY table_name, ordinal_position"
        ).fetchall()
    finally:
        con.close()
    out: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for table, column, kind in rows:
        out[table].append((column, kind))
    return dict(out)


def test_a_version_1_store_is_readable_then_migrated_on_open(tmp_path: Path) -> None:
    old = make_v1(tmp_path / "old.duckdb")
    con = duckdb.connect(str(old), read_only=True)
    old_keys = con.execute("SELECT task_id FROM landings").fetchall()
    con.close()
    assert old_keys and old_keys[0][0]
    # Read-only (not migrated): this release's views and empty Prefect tables still work.
    with open_readonly(old) as reader:
        assert reader.query("SELECT role, calls, cost_usd FROM role_metrics")[1] == [
            ("worker", 1, 0.5)
        ]
        assert reader.query("SELECT file, conflicts FROM hot_files")[1] == [("a.py", 1)]
        assert reader.query("SELECT count(*) FROM prefect_task_runs")[1] == [(0,)]
    with Store(old, read_only=True) as direct:  # opening the file itself: the same views
        assert direct.query("SELECT role, calls FROM role_metrics")[1] == [("worker", 1)]
        assert direct.query("SELECT count(*) FROM prefect_flow_runs")[1] == [(0,)]
    with Store(old) as store:
        versions = store.query("SELECT version FROM schema_version ORDER BY version")[1]
        assert versions == [(v,) for v in range(1, SCHEMA_VERSION + 1)]
        assert store.query("SELECT run_id, status FROM runs")[1] == [("old", "done")]
        assert store.query("SELECT sum(input_tokens) FROM model_calls")[1] == [(10,)]
        # task_id held the key: it is task_key now, the values kept
        assert store.query("SELECT task_key FROM landings")[1] == old_keys
        store.add("prefect_task_runs", task_run_id="t1", run_id="old", retries=1)
    fresh = tmp_path / "fresh.duckdb"
    Store(fresh).close()
    assert columns(old) == columns(fresh)  # the migration makes exactly today's shape
    with Store(old) as store:  # a second open applies nothing again
        assert len(store.query("SELECT * FROM schema_version")[1]) == SCHEMA_VERSION
        assert store.query("SELECT retries FROM prefect_task_runs")[1] == [(1,)]


def test_export_to_parquet_and_read_it_back(demo: SimpleNamespace, tmp_path: Path) -> None:
    out = tmp_path / "parquet"
    proc = subprocess.run(
        [str(DEVSWARM), "export", "--parquet", str(out), "--db", str(demo.db)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    con = duckdb.connect()
    with open_readonly(demo.db) as store:
        for name in [*TABLES, "agent_metrics", "role_metrics", "hot_files"]:
            path = out / f"{name}.parquet"
            assert path.exists(), name
            ours = store.query(f"SELECT * FROM {name} ORDER BY ALL")[1]
            theirs = con.execute(f"SELECT * FROM read_parquet('{path}') ORDER BY ALL").fetchall()
            # Floats from a SUM over threads may differ in the last digit between two queries.
            assert _rounded(theirs) == _rounded(ours), name
            assert f"{path}  {len(ours)} rows" in proc.stdout
    assert con.execute(
        f"SELECT sum(input_tokens) FROM read_parquet('{out / 'model_calls.parquet'}')"
    ).fetchall()[0][0] == sum(r["usage"]["prompt_tokens"] for r in demo.requests if r["usage"])


# --- the report


def assert_self_contained(page: str) -> None:
    for chart in CHARTS:
        assert f'id="{chart}"' in page, chart
    refs = re.findall(r"""(?:src|href)\s*=\s*["']?([^"'\s>]+)""", page, re.I)
    assert not [r for r in refs if re.match(r"(https?:)?//", r)], refs
    lowered = page.lower()
    assert "<script" not in lowered and "<link" not in lowered
    assert "@import" not in lowered and "url(" not in lowered
    assert "<svg" in lowered and page.count("<svg") == len(CHARTS)


def test_the_run_writes_an_html_report_with_every_chart(demo: SimpleNamespace) -> None:
    report = Path(demo.summary["report"])
    assert report == demo.home / "runs" / demo.run_id / "report.html"
    page = report.read_text()
    assert_self_contained(page)
    assert "4 of 4" in page and "textkit/__init__.py" in page
    assert "Prefect" in page  # the history import refreshed it


def test_report_command_prints_a_summary_and_writes_html(
    demo: SimpleNamespace, tmp_path: Path
) -> None:
    out = tmp_path / "r" / "report.html"
    proc = subprocess.run(
        [str(DEVSWARM), "report", "--run", demo.run_id, "--html", str(out), "--db", str(demo.db)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert f"run {demo.run_id}: done" in proc.stdout
    assert "4 landed of 4" in proc.stdout
    assert "textkit/__init__.py: 1 conflict(s)" in proc.stdout
    assert "read_file not_found: 1 of" in proc.stdout
    assert_self_contained(out.read_text())
    bad = subprocess.run(
        [str(DEVSWARM), "report", "--run", "nope", "--db", str(demo.db)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "no run 'nope'" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1


# --- devswarm sql and the README's queries


def test_sql_command_prints_csv_and_json(demo: SimpleNamespace) -> None:
    sql = "SELECT role, calls, round(cost_usd, 6) AS cost FROM role_metrics ORDER BY role"
    expected = query(demo.db, sql)

    def run(*flags: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(DEVSWARM), "sql", sql, "--db", str(demo.db), *flags],
            capture_output=True,
            text=True,
            timeout=60,
        )

    as_csv = list(csv.DictReader(io.StringIO(run("--csv").stdout)))
    assert [r["role"] for r in as_csv] == [e["role"] for e in expected]
    assert [int(r["calls"]) for r in as_csv] == [e["calls"] for e in expected]
    assert json.loads(run("--json").stdout) == expected
    both = run("--csv", "--json")
    assert both.returncode == 2 and "exclude each other" in both.stderr
    bad = subprocess.run(
        [str(DEVSWARM), "sql", "SELECT nope FROM runs", "--db", str(demo.db)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
    assert "Traceback" not in bad.stderr


def readme_queries() -> list[str]:
    text = (REPO / "README.md").read_text()
    section = text.split("## SQL after the run", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sql\n(.*?)```", section, re.S)


def test_the_readme_has_ten_queries_that_run_on_the_demo_database(demo: SimpleNamespace) -> None:
    queries = readme_queries()
    assert len(queries) == 10
    for sql in queries:
        rows = query(demo.db, sql)
        assert rows, sql.splitlines()[0]  # each answers something on the demo's data


# --- the warehouse and runs' own files


def add_run(store_path: Path, run_id: str, calls: int, *, status: str = "done") -> None:
    with Store(store_path) as store:
        store.add("runs", run_id=run_id, status=status, started_at="2026-01-01T10:00:00Z")
        store.add_many(
            {"kind": "model_calls", "call_id": f"{run_id}-{i}", "run_id": run_id, "agent_id": "a"}
            for i in range(calls)
        )


def calls_per_run(db: Path) -> dict[str, int]:
    with open_readonly(db) as reader:
        return dict(reader.query("SELECT run_id, count(*) FROM model_calls GROUP BY ALL")[1])


def test_readers_see_the_warehouse_and_unmerged_runs_once(tmp_path: Path) -> None:
    warehouse = tmp_path / "devswarm.duckdb"
    a, b = run_store_path(warehouse, "a"), run_store_path(warehouse, "b")
    add_run(a, "a", 3)
    assert publish_run(warehouse, a)
    add_run(b, "b", 2, status="running")  # running: not merged yet
    assert calls_per_run(warehouse) == {"a": 3, "b": 2}
    add_run(a, "a", 5)  # run a resumed and wrote more: its file is newer than the warehouse
    assert calls_per_run(warehouse) == {"a": 5, "b": 2}  # from the file, not added twice
    assert publish_run(warehouse, b)  # merges every run file that changed
    con = duckdb.connect(str(warehouse), read_only=True)
    assert dict(
        con.execute("SELECT run_id, count(*) FROM model_calls GROUP BY ALL").fetchall()
    ) == {
        "a": 5,
        "b": 2,
    }
    merged = dict(con.execute("SELECT source, fingerprint FROM merged_stores").fetchall())
    con.close()
    assert merged == {str(p.resolve()): fingerprint(p) for p in run_store_files(warehouse)}
    assert calls_per_run(warehouse) == {"a": 5, "b": 2}


HOLDER = """
import sys, time
import duckdb
con = duckdb.connect(sys.argv[1])
print("ready", flush=True)
time.sleep(60)
"""


def test_a_busy_warehouse_delays_the_merge_but_loses_nothing(tmp_path: Path) -> None:
    warehouse = tmp_path / "devswarm.duckdb"
    Store(warehouse).close()
    run_file = run_store_path(warehouse, "r")
    add_run(run_file, "r", 4)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(warehouse)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "ready"
        started = time.monotonic()
        assert publish_run(warehouse, run_file, timeout=0.5) is False
        assert time.monotonic() - started < 5
        assert calls_per_run(warehouse) == {"r": 4}  # from a copy of the warehouse + the run file
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
    assert publish_run(warehouse, run_file)
    assert calls_per_run(warehouse) == {"r": 4}


WRITER = """
import sys, time
from pathlib import Path
from devswarm.config import SwarmConfig
from devswarm.run.run import Run

repo, home, name = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
batches, calls = int(sys.argv[4]), int(sys.argv[5])
run = Run(SwarmConfig(goal="g", repo=repo, home=home, run_id=name))
run.record_run("running", 0)
for b in range(batches):
    agent = f"worker/{name}/c1/root/t{b}/a1"
    log = run.agent_log(agent)
    log.write("agent", agent_id=agent, run_id=name, cycle=1, role="worker",
              task_key=f"c1.root.t{b}", status="finished", steps=calls)
    for s in range(calls):
        log.write("model_call", call_id=f"{agent}-{s}", run_id=name, agent_id=agent, step=s,
                  attempt=1, request_model="m", input_tokens=100, output_tokens=10,
                  cost_usd=0.001, duration_ms=5.0)
    run.records.import_now([run.dir / "records" / "swarm.jsonl", log.path])  # as on a report
    time.sleep(0.03)
run.record_run("done", 1)
run.records.import_now()
report = run.publish()
run.close()
print("report", report, flush=True)
"""

READER = """
import json, sys, time
from pathlib import Path
from devswarm.errors import UserError
from devswarm.store.warehouse import open_readonly

db, stop = Path(sys.argv[1]), Path(sys.argv[2])
while not stop.exists():
    try:
        with open_readonly(db) as store:
            rows = store.query("SELECT run_id, count(*) FROM model_calls GROUP BY ALL")[1]
        print(json.dumps(dict(rows)), flush=True)
    except UserError as exc:
        print("message", exc, flush=True)
    time.sleep(0.02)
"""


def test_two_runs_at_once_keep_every_record_while_a_reader_reads(tmp_path: Path) -> None:
    home = tmp_path / "data"
    warehouse = home / "devswarm.duckdb"
    batches, calls = 10, 20
    repos = [make_repo(tmp_path / f"repo{i}", {"a.txt": "a\n"}) for i in range(2)]
    names = ["run-one", "run-two"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    stop = tmp_path / "stop"
    reader = subprocess.Popen(
        [sys.executable, "-c", READER, str(warehouse), str(stop)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(repo), str(home), name, str(batches), str(calls)],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for repo, name in zip(repos, names, strict=True)
    ]
    try:
        outputs = [w.communicate(timeout=180) for w in writers]
    finally:
        stop.touch()
        reader_out, reader_err = reader.communicate(timeout=60)
    for w, (out, err) in zip(writers, outputs, strict=True):
        assert w.returncode == 0, err
        assert "Traceback" not in err and "report " in out
    assert reader.returncode == 0 and "Traceback" not in reader_err, reader_err
    seen = [json.loads(line) for line in reader_out.splitlines() if line.startswith("{")]
    messages = [line for line in reader_out.splitlines() if line.startswith("message")]
    assert len(seen) >= 10, (seen, messages)
    assert all("no store" in m or "being written" in m for m in messages), messages
    full = batches * calls
    for name in names:
        counts = [s.get(name, 0) for s in seen]
        assert counts == sorted(counts)  # a reader never sees a run go backwards
        assert counts[-1] == full
    # Readers saw running runs as far as they got, not only finished ones.
    assert any(0 < c < full for s in seen for c in s.values())
    # Every record of both runs is in the warehouse itself, and nothing is left to merge.
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        got = dict(con.execute("SELECT run_id, count(*) FROM model_calls GROUP BY ALL").fetchall())
        assert got == dict.fromkeys(names, full)
        status = dict(con.execute("SELECT run_id, status FROM runs").fetchall())
        assert status == dict.fromkeys(names, "done")
        merged = dict(con.execute("SELECT source, fingerprint FROM merged_stores").fetchall())
    finally:
        con.close()
    assert merged == {str(p.resolve()): fingerprint(p) for p in run_store_files(warehouse)}
    assert len(merged) == 2
    for name in names:
        assert (home / "runs" / name / "report.html").exists()


def _rounded(rows: list[tuple]) -> list[tuple]:
    return [tuple(round(v, 9) if isinstance(v, float) else v for v in row) for row in rows]
