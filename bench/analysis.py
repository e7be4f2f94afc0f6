"""Bench: the analysis views on a big warehouse (1 M synthetic model_calls rows by default).

    python bench/analysis.py                 # 1,000,000 model calls in 20 runs, 5,000 agents
    python bench/analysis.py --calls 5000000

Prints the time of `agent_metrics` (the whole warehouse and one run), the other views for one
run, and the same read with a live run file attached beside the warehouse; exits non-zero if
agent_metrics takes longer than the target (1 s). Rows are made in SQL (not imported from
JSONL: that is tests/test_store.py's import benchmark).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from devswarm.store.store import Store  # noqa: E402
from devswarm.store.warehouse import open_readonly, run_store_path  # noqa: E402

TARGET_S = 1.0


def fill(store: Store, calls: int, runs: int, agents_per_run: int, prefix: str = "r") -> None:
    """Synthetic rows shaped like a swarm's: agents, tasks, calls, tool calls, landings."""
    agents = runs * agents_per_run
    store.query(
        f"""
INSERT INTO runs (run_id, goal, status, started_at, ended_at, cycles)
SELECT '{prefix}' || i, '{prefix}' || i, 'done', TIMESTAMP '2026-01-01' + INTERVAL (i) HOUR,
    TIMESTAMP '2026-01-01' + INTERVAL (i) HOUR + INTERVAL 50 MINUTE, 3
FROM range({runs}) t(i)"""
    )
    store.query(
        f"""
INSERT INTO agents (agent_id, run_id, cycle, role, task_key, request_model, status, steps,
    started_at, ended_at)
SELECT 'worker/{prefix}' || (i % {runs}) || '/c1/root/t' || i || '/a1', '{prefix}' || (i % {runs}),
    1 + i % 3,
    CASE (i // {runs}) % 10 WHEN 0 THEN 'planner' WHEN 1 THEN 'judge' ELSE 'worker' END,
    'c1.root.t' || i, 'gpt-4.1-mini', 'landed', 20,
    TIMESTAMP '2026-01-01' + INTERVAL (i % {runs}) HOUR + INTERVAL (i % 600) SECOND,
    TIMESTAMP '2026-01-01' + INTERVAL (i % {runs}) HOUR + INTERVAL (i % 600 + 300) SECOND
FROM range({agents}) t(i)"""
    )
    store.query(
        """
INSERT INTO tasks (run_id, task_key, cycle, worker_agent_id, title, files, status, attempts,
    started_at, ended_at)
SELECT run_id, task_key, cycle, agent_id, 'task ' || task_key, '["src/a.py", "src/b.py"]',
    CASE WHEN hash(agent_id) % 5 = 0 THEN 'failed' ELSE 'landed' END, 1, started_at, ended_at
FROM agents WHERE role = 'worker'"""
    )
    store.query(
        f"""
INSERT INTO model_calls (call_id, run_id, agent_id, step, attempt, request_model, input_tokens,
    output_tokens, cache_read_input_tokens, cost_usd, error_type, http_status, started_at,
    duration_ms)
SELECT 'c' || i, '{prefix}' || (a % {runs}), 'worker/{prefix}' || (a % {runs}) || '/c1/root/t' || a || '/a1',
    i // {agents}, 1, 'gpt-4.1-mini', 2000 + i % 3000, 100 + i % 400, i % 1500,
    0.0004 + (i % 100) * 1e-6, CASE WHEN i % 97 = 0 THEN 'RateLimitError' END,
    CASE WHEN i % 97 = 0 THEN 429 ELSE 200 END,
    TIMESTAMP '2026-01-01' + INTERVAL (i % 3000) SECOND, 200 + (i % 1000)
FROM (SELECT i, i % {agents} AS a FROM range({calls}) t(i))"""
    )
    store.query(
        f"""
INSERT INTO tool_calls (run_id, agent_id, step, tool_call_id, tool_name, error_type, duration_ms,
    started_at)
SELECT run_id, agent_id, step, 'call_' || call_id,
    CASE i % 4 WHEN 0 THEN 'read_file' WHEN 1 THEN 'edit_file' WHEN 2 THEN 'run' ELSE 'search' END,
    CASE WHEN i % 31 = 0 THEN 'not_found' END, 3.5, started_at
FROM (SELECT *, row_number() OVER () AS i FROM model_calls WHERE call_id LIKE 'c%' LIMIT {calls // 2})"""
    )
    store.query(
        """
INSERT INTO landings (landing_id, run_id, cycle, task_key, agent_id, status, conflict_files,
    started_at, ended_at)
SELECT 'l' || task_key || run_id, run_id, cycle, task_key, worker_agent_id,
    CASE WHEN hash(task_key) % 7 = 0 THEN 'conflict' ELSE 'landed' END,
    CASE WHEN hash(task_key) % 7 = 0 THEN '["src/a.py"]' ELSE '[]' END, ended_at, ended_at
FROM tasks WHERE status = 'landed'"""
    )


def timed(store: Store, sql: str, params: list | None = None, repeat: int = 5) -> tuple[float, int]:
    """(median seconds, rows) of a query, the first (cold) run included."""
    times, rows = [], 0
    for _ in range(repeat):
        started = time.perf_counter()
        rows = len(store.query(sql, params)[1])
        times.append(time.perf_counter() - started)
    return statistics.median(times), rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--agents-per-run", type=int, default=250)
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="devswarm-bench-"))
    try:
        warehouse = folder / "devswarm.duckdb"
        started = time.perf_counter()
        with Store(warehouse) as store:
            fill(store, args.calls, args.runs, args.agents_per_run)
        print(
            f"made {args.calls:,} model_calls rows ({args.runs} runs, "
            f"{args.runs * args.agents_per_run:,} agents) in {time.perf_counter() - started:.1f} s"
        )
        one_run = [f"r{args.runs // 2}"]
        results: list[tuple[str, float, int]] = []
        with open_readonly(warehouse) as store:
            results.append(
                ("agent_metrics, every run", *timed(store, "SELECT * FROM agent_metrics"))
            )
            results.append(
                (
                    "agent_metrics, one run",
                    *timed(store, "SELECT * FROM agent_metrics WHERE run_id = ?", one_run),
                )
            )
            for view in (
                "role_metrics",
                "task_outcomes",
                "model_latency",
                "hot_files",
                "tool_errors",
            ):
                results.append(
                    (
                        f"{view}, one run",
                        *timed(store, f"SELECT * FROM {view} WHERE run_id = ?", one_run),
                    )
                )
        # A running run's file beside the warehouse: readers attach (a copy of) it too.
        live = run_store_path(warehouse, "live")
        with Store(live) as store:
            fill(store, 50_000, 1, 100, prefix="live")
        started = time.perf_counter()
        with open_readonly(warehouse) as store:
            opened = time.perf_counter() - started
            results.append(("open with a live run file (50k calls)", opened, 0))
            results.append(
                (
                    "agent_metrics, every run + live run",
                    *timed(store, "SELECT * FROM agent_metrics"),
                )
            )
        width = max(len(name) for name, *_ in results)
        for name, seconds, rows in results:
            print(f"{name.ljust(width)}  {seconds * 1000:8.1f} ms  {rows:>7,} rows")
        worst = max(s for name, s, _ in results if name.startswith("agent_metrics"))
        verdict = "ok" if worst < TARGET_S else "TOO SLOW"
        print(f"agent_metrics worst {worst:.3f} s (target < {TARGET_S:.0f} s): {verdict}")
        return 0 if worst < TARGET_S else 1
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
