"""Run records (JSONL) and the DuckDB run store: idempotent import, views, locking, speed."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest

from devswarm.errors import UserError
from devswarm.records import RecordLog, now, read_records, span_id
from devswarm.store import migrations as store_module
from devswarm.store.failures import is_busy
from devswarm.store.migrations import MIGRATIONS, SCHEMA_VERSION, Migration
from devswarm.store.store import Store, open_writer
from devswarm.store.warehouse import open_readonly

REPO = Path(__file__).resolve().parents[1]
RUN = "run-1"


def count(store: Store, table: str) -> int:
    return store.query(f"SELECT count(*) FROM {table}")[1][0][0]


def one(store: Store, sql: str, params=None) -> dict:
    cols, rows = store.query(sql, params)
    assert len(rows) == 1, rows
    return dict(zip(cols, rows[0], strict=True))


def write_agent(path: Path, agent_id: str, *, calls: int, tools: int, task_status: str) -> None:
    """What one worker writes during its life (final status line excluded)."""
    with RecordLog(path) as log:
        log.write(
            "agents",
            agent_id=agent_id,
            run_id=RUN,
            cycle=1,
            role="worker",
            task_key=f"task-{agent_id}",
            request_model="m-small",
            status="running",
            started_at="2026-01-01T10:00:00.000000Z",
            span_id=span_id(RUN, agent_id),
        )
        for step in range(calls):
            log.write(
                "model_calls",
                call_id=f"{agent_id}-{step}",
                run_id=RUN,
                agent_id=agent_id,
                step=step,
                attempt=0,
                operation_name="chat",
                request_model="m-small",
                input_tokens=100 + step,
                output_tokens=10 + step,
                cache_read_input_tokens=step,
                cost_usd=0.001 * (step + 1),
                error_type="RateLimitError" if step % 3 == 2 else None,
                http_status=429 if step % 3 == 2 else 200,
                started_at=now(),
                ended_at=now(),
                duration_ms=12.5,
                finish_reasons=["tool_calls"],
            )
        for step in range(tools):
            log.write(
                "tool_calls",
                run_id=RUN,
                agent_id=agent_id,
                step=step,
                tool_call_id=f"call_{step}",
                tool_name="read_file",
                arguments={"path": "a.py"},
                output_excerpt="x = 1",
                error_type="ToolError" if step == 0 else None,
                duration_ms=1.0,
                started_at=now(),
            )
        log.write(
            "tasks",
            run_id=RUN,
            task_key=f"task-{agent_id}",
            cycle=1,
            worker_agent_id=agent_id,
            title="do it",
            files=["a.py", "b.py"],
            depends_on=[],
            status=task_status,
            attempts=1,
        )
        log.write(
            "landings",
            landing_id=f"land-{agent_id}",
            run_id=RUN,
            cycle=1,
            task_key=f"task-{agent_id}",
            agent_id=agent_id,
            status="conflict",
            conflict_files=["a.py"],
            resolved=False,
        )


@pytest.fixture
def two_agents(tmp_path: Path) -> tuple[Path, Path]:
    a, b = tmp_path / "rec" / "w1.jsonl", tmp_path / "rec" / "w2.jsonl"
    # Written from two threads at once, as agents do.
    threads = [
        threading.Thread(
            target=write_agent,
            args=(a, "w1"),
            kwargs={"calls": 7, "tools": 4, "task_status": "landed"},
        ),
        threading.Thread(
            target=write_agent,
            args=(b, "w2"),
            kwargs={"calls": 5, "tools": 2, "task_status": "failed"},
        ),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return a, b


def test_import_is_idempotent(tmp_path: Path, two_agents: tuple[Path, Path]) -> None:
    a, b = two_agents
    with Store(tmp_path / "runs.duckdb") as store:
        assert store.import_jsonl(a) == 1 + 7 + 4 + 1 + 1
        assert store.import_jsonl(b) == 1 + 5 + 2 + 1 + 1
        expected = {"agents": 2, "model_calls": 12, "tool_calls": 6, "tasks": 2, "landings": 2}
        assert {t: count(store, t) for t in expected} == expected
        store.import_jsonl(a)
        store.import_jsonl(b)
        assert {t: count(store, t) for t in expected} == expected
        # JSON-text columns hold JSON, whichever path (VALUES or read_json) imported them.
        row = one(store, "SELECT files FROM tasks WHERE task_key = 'task-w1'")
        assert json.loads(row["files"]) == ["a.py", "b.py"]
        reasons = store.query("SELECT DISTINCT finish_reasons FROM model_calls")[1]
        assert reasons == [('["tool_calls"]',)]


def test_a_later_status_line_updates_the_row(tmp_path: Path, two_agents: tuple[Path, Path]) -> None:
    a, _ = two_agents
    with Store(tmp_path / "runs.duckdb") as store:
        store.import_jsonl(a)
        # The agent ends: it re-emits its row with only what changed.
        with RecordLog(a) as log:
            log.write("agents", agent_id="w1", status="done", steps=7, ended_at=now())
        store.import_jsonl(a)
        row = one(store, "SELECT * FROM agents WHERE agent_id = 'w1'")
        assert row["status"] == "done" and row["steps"] == 7
        assert row["role"] == "worker" and row["run_id"] == RUN  # fields it did not name stay
        assert count(store, "agents") == 1


def test_newest_record_wins_in_any_import_order(tmp_path: Path) -> None:
    planner, worker = tmp_path / "planner.jsonl", tmp_path / "worker.jsonl"
    with RecordLog(planner) as log:
        log.write("tasks", run_id=RUN, task_key="t1", title="Add x", status="pending", attempts=0)
    with RecordLog(worker) as log:
        log.write("tasks", run_id=RUN, task_key="t1", status="landed", commit_sha="abc", attempts=1)
    results = []
    for order in ([planner, worker], [worker, planner], [planner, worker, planner]):
        with Store(tmp_path / f"s{len(results)}.duckdb") as store:
            for path in order:
                store.import_jsonl(path)
            results.append(one(store, "SELECT title, status, commit_sha, attempts FROM tasks"))
    assert results[0] == {"title": "Add x", "status": "landed", "commit_sha": "abc", "attempts": 1}
    assert results[1] == results[0] and results[2] == results[0]


def test_torn_last_line_is_skipped_and_a_resumed_writer_is_not_glued_to_it(tmp_path: Path) -> None:
    path = tmp_path / "w.jsonl"
    with RecordLog(path) as log:
        log.write("model_calls", call_id="c1", agent_id="w", input_tokens=1)
        log.write("model_calls", call_id="c2", agent_id="w", input_tokens=2)
    with path.open("ab") as f:  # the process was killed mid-line
        f.write(b'{"kind": "model_calls", "call_id": "c3", "input_tok')
    assert [r["call_id"] for r in read_records(path)] == ["c1", "c2"]
    with Store(tmp_path / "runs.duckdb") as store:
        assert store.import_jsonl(path) == 2
        with RecordLog(path) as log:  # the resumed agent appends to the same file
            log.write("model_calls", call_id="c4", agent_id="w", input_tokens=4)
        assert [r["call_id"] for r in read_records(path)] == ["c1", "c2", "c4"]
        store.import_jsonl(path)
        assert store.query("SELECT call_id FROM model_calls ORDER BY call_id")[1] == [
            ("c1",),
            ("c2",),
            ("c4",),
        ]


def test_agent_metrics_equal_sums_of_the_records(
    tmp_path: Path, two_agents: tuple[Path, Path]
) -> None:
    records = [r for p in two_agents for r in read_records(p)]
    with Store(tmp_path / "runs.duckdb") as store:
        for p in two_agents:
            store.import_jsonl(p)
        for p in two_agents:  # both agents end 90 s after they started
            with RecordLog(p) as log:
                agent = p.stem
                log.write("agents", agent_id=agent, status="done", ended_at="2026-01-01T10:01:30Z")
            store.import_jsonl(p)
        # An extra landing that did land must not count as a conflict (nor multiply rows).
        store.add("landings", landing_id="land-w1-b", run_id=RUN, agent_id="w1", status="landed")
        for agent in ("w1", "w2"):
            calls = [r for r in records if r["kind"] == "model_calls" and r["agent_id"] == agent]
            tools = [r for r in records if r["kind"] == "tool_calls" and r["agent_id"] == agent]
            tasks = [r for r in records if r["kind"] == "tasks" and r["worker_agent_id"] == agent]
            m = one(store, "SELECT * FROM agent_metrics WHERE agent_id = ?", [agent])
            assert m["calls"] == len(calls)
            assert m["failed_calls"] == sum(r["error_type"] is not None for r in calls)
            assert m["input_tokens"] == sum(r["input_tokens"] for r in calls)
            assert m["output_tokens"] == sum(r["output_tokens"] for r in calls)
            assert m["cache_read_input_tokens"] == sum(r["cache_read_input_tokens"] for r in calls)
            assert m["cost_usd"] == pytest.approx(sum(r["cost_usd"] for r in calls))
            assert m["tool_calls"] == len(tools)
            assert m["tool_errors"] == sum(r["error_type"] is not None for r in tools)
            assert m["tasks_landed"] == sum(r["status"] == "landed" for r in tasks)
            assert m["tasks_failed"] == sum(r["status"] in ("failed", "abandoned") for r in tasks)
            assert m["conflicts"] == 1
            assert m["wall_seconds"] == 90.0
            assert (m["role"], m["status"], m["run_id"]) == ("worker", "done", RUN)
        assert count(store, "agent_metrics") == 2

        store.add("runs", run_id=RUN, goal="demo", status="done")
        s = one(store, "SELECT * FROM run_summary")
        calls = [r for r in records if r["kind"] == "model_calls"]
        assert (s["agents"], s["tasks"], s["tasks_landed"], s["tasks_failed"]) == (2, 2, 1, 1)
        assert s["model_calls"] == len(calls) == 12
        assert s["input_tokens"] == sum(r["input_tokens"] for r in calls)
        assert s["cost_usd"] == pytest.approx(sum(r["cost_usd"] for r in calls))
        assert (s["tool_calls"], s["landings"], s["conflicts"]) == (6, 1, 2)


def test_timestamps_are_utc_timestamp_columns(tmp_path: Path) -> None:
    with Store(tmp_path / "runs.duckdb") as store:
        types = {
            (table, name): kind
            for table in ("agents", "model_calls")
            for name, kind, *_ in store.query(f"DESCRIBE {table}")[1]
        }
        assert types["agents", "started_at"] == types["agents", "ended_at"] == "TIMESTAMP"
        assert types["model_calls", "started_at"] == "TIMESTAMP"
        assert types["agents", "steps"] == "INTEGER"
        assert types["model_calls", "input_tokens"] == "BIGINT"
        stamp = now()
        store.add(
            "agents",
            agent_id="a",
            started_at=stamp,
            ended_at="2026-01-01T12:00:00.5+02:00",  # an offset is converted to UTC
        )
        row = one(store, "SELECT started_at, ended_at FROM agents")
        assert row["started_at"] == datetime.fromisoformat(stamp).replace(tzinfo=None)
        assert row["ended_at"] == datetime(2026, 1, 1, 10, 0, 0, 500000)
        assert datetime.fromisoformat(stamp).tzinfo == UTC and len(stamp) == 27


HOLDER = """
import sys, time
from pathlib import Path
from devswarm.store.store import Store
store = Store(Path(sys.argv[1]))
store.add("runs", run_id="held", status="running")
print("ready", flush=True)
time.sleep(60)
"""


@contextmanager
def holding(db: Path) -> Iterator[subprocess.Popen]:
    """Another process writing the store at ``db`` (a row "held"), until killed or the end."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(db)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "ready", holder.stderr.read()
        yield holder
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
        holder.stderr.close()


def test_open_readonly_while_another_process_writes(tmp_path: Path) -> None:
    db = tmp_path / "runs.duckdb"
    with Store(db) as store:
        store.add("runs", run_id="before", status="done")
    with holding(db):
        with pytest.raises(UserError, match="being written by another process"):
            Store(db)  # a second writer is refused with one line, not a traceback
        try:
            reader = open_readonly(db)
        except UserError as exc:  # allowed by design, but must be the clear message
            assert "being written by another process" in str(exc)
            return
        with reader:
            ids = reader.query("SELECT run_id FROM runs ORDER BY run_id")[1]
            snapshot = reader.path
            assert snapshot != db
        assert ids == [("before",), ("held",)]  # the holder's uncheckpointed row is in the copy
        assert not snapshot.exists()  # the snapshot is removed on close
    with open_readonly(db) as reader:  # the writer is gone: the file itself is opened
        assert reader.path == db
        with pytest.raises(UserError, match="read-only"):
            reader.add("runs", run_id="x")


def test_open_writer_waits_while_another_process_holds_the_store(tmp_path: Path) -> None:
    db = tmp_path / "runs.duckdb"
    Store(db).close()
    with holding(db) as holder:
        busy = pytest.raises(UserError, match="being written by another process")
        with busy as refused, open_writer(db, timeout=0.2):
            pass
        assert is_busy(refused.value)
        waited: list[object] = []

        def write() -> None:
            try:
                with open_writer(db, timeout=120) as store:
                    store.add("runs", run_id="after", status="done")
                waited.append("written")
            except Exception as exc:  # shown by the assertion below
                waited.append(exc)

        writer = threading.Thread(target=write)
        writer.start()
        writer.join(0.5)
        assert writer.is_alive(), waited  # it cannot get the file while the holder has it
        holder.kill()  # the holder goes away while the writer waits
        holder.wait()
        writer.join()
        assert waited == ["written"]
    with Store(db, read_only=True) as store:
        assert store.query("SELECT run_id FROM runs ORDER BY 1")[1] == [("after",), ("held",)]


def test_reopening_keeps_data_and_schema_version(tmp_path: Path) -> None:
    db = tmp_path / "runs.duckdb"
    with Store(db) as store:
        store.add("runs", run_id="r1", goal="first", config={"workers": 4})
    with Store(db) as store:
        assert store.query("SELECT version FROM schema_version")[1] == [
            (m.version,)
            for m in MIGRATIONS  # a new store replays every migration
        ]
        row = one(store, "SELECT goal, config FROM runs")
        assert row == {"goal": "first", "config": '{"workers": 4}'}
        store.query("INSERT INTO schema_version (version, applied_at) VALUES (99, now())")
    with pytest.raises(UserError, match="schema version 99"):
        Store(db)
    with pytest.raises(UserError, match="schema version 99"):
        open_readonly(db)


def test_migrations_apply_once_on_open(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "runs.duckdb"
    Store(db).close()
    nxt = SCHEMA_VERSION + 1
    monkeypatch.setattr(store_module, "SCHEMA_VERSION", nxt)
    note = Migration(nxt, "runs.note", ("ALTER TABLE runs ADD COLUMN note VARCHAR",))
    monkeypatch.setattr(store_module, "MIGRATIONS", (*MIGRATIONS, note))
    for _ in range(2):
        with Store(db) as store:
            versions = store.query("SELECT version FROM schema_version ORDER BY version")[1]
            assert versions == [*((m.version,) for m in MIGRATIONS), (nxt,)]
            assert "note" in store.query("SELECT * FROM runs")[0]


def test_bad_input_is_ignored_or_nulled_not_fatal(tmp_path: Path) -> None:
    path = tmp_path / "w.jsonl"
    path.write_text(
        "\n".join(
            json.dumps(r)
            for r in [
                {"kind": "mystery", "x": 1},
                {"kind": "model_calls", "input_tokens": 5},  # no key
                {"kind": "model_call", "call_id": "c", "input_tokens": "lots", "surprise": 1},
                [1, 2],
            ]
        )
        + "\nnot json\n"
    )
    with Store(tmp_path / "runs.duckdb") as store:
        assert store.import_jsonl(path) == 1
        assert one(store, "SELECT call_id, input_tokens FROM model_calls") == {
            "call_id": "c",
            "input_tokens": None,
        }
        assert store.import_jsonl(tmp_path / "never-written.jsonl") == 0
        with pytest.raises(UserError, match="Catalog Error"):
            store.query("SELECT * FROM no_such_table")
    with pytest.raises(UserError, match="no store"):
        open_readonly(tmp_path / "missing.duckdb")


def test_record_log_validates_kind_and_truncates_tool_text(tmp_path: Path) -> None:
    path = tmp_path / "w.jsonl"
    with RecordLog(path) as log:
        with pytest.raises(ValueError, match="unknown record kind"):
            log.write("transcript", text="hi")
        log.write("tool_call", agent_id="a", step=1, tool_call_id="t", arguments="é" * 5000)
    (record,) = read_records(path)
    assert record["kind"] == "tool_call"  # written as given; the store maps it
    assert len(record["arguments"].encode()) <= 4096 and record["arguments"] == "é" * 2048
    assert span_id("run", "agent") == span_id("run", "agent") != span_id("run", "agent2")
    assert len(span_id("x")) == 16 and int(span_id("x"), 16) >= 0


def test_import_store_merges_a_finished_run(tmp_path: Path, two_agents: tuple[Path, Path]) -> None:
    run_db, warehouse = tmp_path / "run.duckdb", tmp_path / "warehouse.duckdb"
    with Store(run_db) as store:
        for p in two_agents:
            store.import_jsonl(p)
    with Store(warehouse) as store:
        store.add("runs", run_id="older-run")
        assert store.import_store(run_db) == 24
        assert store.import_store(run_db) == 24
        assert count(store, "model_calls") == 12 and count(store, "agents") == 2
        assert count(store, "runs") == 1


def test_import_of_50k_model_calls_is_fast(tmp_path: Path) -> None:
    path = tmp_path / "many.jsonl"
    stamp = now()
    # Written in one go (RecordLog's flush per line is not what this measures); same line shape.
    lines = (
        json.dumps(
            {
                "kind": "model_calls",
                "recorded_at": stamp,
                "call_id": f"c{i}",
                "run_id": RUN,
                "agent_id": f"a{i % 50}",
                "step": i // 50,
                "attempt": 0,
                "operation_name": "chat",
                "provider_name": "openai",
                "request_model": "m",
                "response_model": "m-2026",
                "response_id": f"resp-{i}",
                "input_tokens": 1000,
                "output_tokens": 100,
                "cache_read_input_tokens": 500,
                "cost_usd": 0.0001,
                "finish_reasons": ["stop"],
                "http_status": 200,
                "started_at": stamp,
                "ended_at": stamp,
                "duration_ms": 5.0,
                "cache_key": f"k{i}",
                "span_id": span_id(str(i)),
                "parent_span_id": span_id("a"),
            }
        )
        for i in range(50_000)
    )
    path.write_text("\n".join(lines) + "\n")
    with Store(tmp_path / "runs.duckdb") as store:
        started = time.perf_counter()
        assert store.import_jsonl(path) == 50_000
        first = time.perf_counter() - started
        started = time.perf_counter()
        assert store.import_jsonl(path) == 50_000
        again = time.perf_counter() - started
        print(f"import 50k model_calls: {first:.2f} s, re-import (all updates) {again:.2f} s")
        assert count(store, "model_calls") == 50_000
        assert store.query("SELECT sum(input_tokens) FROM model_calls")[1] == [(50_000_000,)]
    assert first < 10 and again < 10
