"""Bench: how close a swarm comes to the latency-bound ideal, and what orchestration costs.

    python bench/efficiency.py                              # N=8 k=4 L=2 C=4, both servers
    python bench/efficiency.py -N 100 -k 10 -L 10 -C 50 --server postgres   # the issue's target
    python bench/efficiency.py --planner-latency 5 --sub-planners 3          # planning latency

N workers, each making k model calls of latency L seconds at the offline server, at most C
model calls in flight (the swarm's max_model_calls_at_once) and W workers at once (--workers,
the swarm's max_workers; default C). With W > C, workers beyond C start while others' calls are
in flight and wait for a slot, oldest worker first (devswarm.model.client.ModelSlots). Each
worker's calls are k − 1 `list_files` steps and a last step that writes its file and finishes,
so every worker also commits and lands. The planner, the judge and the capability probe answer
at once (latency 0), unless `--planner-latency P`: then every planner answers after P s, and with `--sub-planners S`
the root planner keeps 1/(S+1) of the tasks and hands the rest to S sub-planners (one scope
each). It also prints the time from the run's start to the first worker start: P when the
root's tasks need not wait for the sub-planners, 2 P when they do. The ideal is the model
latency alone: ⌈N/C⌉ × k × L (planning not counted). Prints the wall time of the whole swarm
run (Prefect's server already up; planning, landings, judge, records and Prefect's history
included) ÷ the ideal, the orchestration CPU seconds per model call (this process, its git
commands and the Prefect server — PostgreSQL included; not the model server), and where the
wall time went.

What the sandbox costs (docs/sandbox.md): `--run-step CMD` makes each worker's first step a
`run` of CMD, `--check CMD` is the repository check (run before each landing and on the tip),
and `--sandbox both` runs the swarm with the sandbox off and on, alternately (`--repeat R`
times each), on the same server:

    python bench/efficiency.py --server ephemeral --sandbox both --repeat 2 \
        --run-step "python -m unittest -q" --check "python -m unittest -q"

It prints the median `run` command's time with and without (from tool_calls.duration_ms: the
per-command overhead in ms) and the whole run's wall time on ÷ off.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as c  # noqa: E402

# A small real test suite for the repository, so `--check`/`--run-step` have work to do.
SUITE = {
    "README.md": "efficiency\n",
    "test_ok.py": "import unittest\n\n\nclass T(unittest.TestCase):\n"
    "    def test_ok(self):\n        self.assertTrue(True)\n",
}


def scenario(
    n: int,
    k: int,
    latency: float,
    run_step: str | None = None,
    planner_latency: float = 0.0,
    subs: int = 0,
) -> dict:
    specs, agents = [], [c.NO_FOLLOWUPS]
    for i in range(n):
        name = f"w{i:03}"
        specs.append(c.task_spec(name, [f"{name}.txt"]))
        # Distinct steps: the same action with the same result 4 times would count as stuck.
        steps = [
            {"tool_calls": [c.tool_call("list_files", path=".", pattern=f"*{j}*")]}
            for j in range(k - 1)
        ]
        if run_step and steps:  # the first step runs a command instead
            steps[0] = {"tool_calls": [c.tool_call("run", command=run_step)]}
        steps.append(
            {"tool_calls": [c.tool_call("write_file", path=f"{name}.txt", content=f"{name}\n"),
                            c.tool_call("finish", summary="done")]}
        )  # fmt: skip
        agents.append({"match": f"worker/*/{name}/*", "steps": steps})
    agents[1:1] = planners(specs, planner_latency, subs)
    agents.append(c.JUDGE_DONE)
    # The capability probe at the run's start is a one-token answer: at once, like the judge's
    # (with the workers' L it would add L seconds to the run's start that no real server takes).
    agents.append({"match": "preflight/*", "steps": [{"content": "ok", "latency": 0}]})
    return {"latency": latency, "agents": agents}


def planners(specs: list[dict], latency: float, subs: int) -> list[dict]:
    """The root planner (and its `subs` sub-planners, one scope each), answering after `latency`
    s; the root keeps the first share of the tasks."""
    shares = [specs[i :: subs + 1] for i in range(subs + 1)]
    scopes = [
        {"name": f"s{j}", "goal": f"part {j}", "paths": [f"s{j}"]} for j in range(1, subs + 1)
    ]
    root = {**c.plan_reply(shares[0]), "latency": latency}
    root["json"] = {**root["json"], "scopes": scopes}
    return [{"match": "planner/*/root", "steps": [root]}] + [
        {
            "match": f"planner/*/root.s{j}",
            "steps": [{**c.plan_reply(shares[j]), "latency": latency}],
        }
        for j in range(1, subs + 1)
    ]


def child(params: dict) -> None:
    import duckdb

    from devswarm.config import Models, SwarmConfig

    work = Path(params["work"])
    n, conc, workers = params["n"], params["c"], params["workers"]
    repo = c.make_repo(work / "user", SUITE)
    cfg = SwarmConfig(
        goal="bench", repo=repo, base_url=params["url"], models=Models.single("offline-model"),
        home=work / "home", max_cycles=1, max_workers=workers, max_tasks_per_plan=n,
        max_model_calls_at_once=max(conc, 1), run_id="bench-efficiency",
        request_timeout=max(params["latency"], params.get("planner_latency", 0)) + 60,
        check=params.get("check"), sandbox=params.get("sandbox", True),
        max_scopes=max(4, params.get("subs", 0)), max_planners=max(4, params.get("subs", 0)),
    )  # fmt: skip
    os.environ["OPENAI_API_KEY"] = "sk-bench"
    summary, meter, started = c.run_swarm_measured(cfg)
    where = c.phases(cfg.db_path, started, c.utcnow())
    con = duckdb.connect(str(cfg.db_path), read_only=True)
    calls, failed = con.execute(
        "SELECT count(*), count(*) FILTER (WHERE http_status IS NULL OR http_status >= 400) "
        "FROM model_calls"
    ).fetchone()
    landed = con.execute("SELECT count(*) FROM tasks WHERE status = 'landed'").fetchone()[0]
    run_ms = con.execute(
        "SELECT median(duration_ms) FROM tool_calls WHERE tool_name = 'run'"
    ).fetchone()[0]
    # From the run's start (the swarm flow's) to the first worker's start.
    first_worker = con.execute(
        "SELECT epoch(min(a.started_at)) - epoch((SELECT min(started_at) FROM runs))"
        " FROM agents a WHERE a.role = 'worker'"
    ).fetchone()[0]
    con.close()
    c.child_result(
        {
            "status": summary["status"],
            "wall": meter.wall,
            "cpu": meter.cpu,
            "server_cpu": meter.server_cpu,
            "peak_rss": meter.peak_rss,
            "calls": calls,
            "failed_calls": failed,
            "landed": landed,
            "run_ms": run_ms,
            "first_worker": first_worker,
            "phases": where,
        }
    )


def measure(
    n: int,
    k: int,
    latency: float,
    conc: int,
    workers: int,
    server: c.PrefectServer,
    **options: object,
) -> dict:
    """One swarm run in a child process; `options`: sandbox, check, run_step, planner_latency,
    subs."""
    work = c.scratch("efficiency")
    params = {"n": n, "k": k, "latency": latency, "c": conc, "workers": workers, **options}
    plan = scenario(
        n, k, latency, options.get("run_step"),  # type: ignore[arg-type]
        float(options.get("planner_latency") or 0), int(options.get("subs") or 0),  # type: ignore[arg-type]
    )  # fmt: skip
    with c.model_server(plan, work / "model") as (url, log):
        res = c.run_child(__file__, {"work": str(work), "url": url, **params}, server)
        res["server_calls"] = len(c.chat_log(log))
    return res


def _report(kind: str, ideal: float, n: int, sandbox: bool, res: dict) -> None:
    ratio = res["wall"] / ideal
    print(
        f"[{kind}, sandbox {'on' if sandbox else 'off'}] wall {res['wall']:.1f} s = {ratio:.2f} × "
        f"ideal; {res['calls']} model calls ({res['failed_calls']} failed), {res['landed']}/{n} "
        f"landed, status {res['status']}; orchestration CPU {res['cpu']:.1f} s = "
        f"{res['cpu'] / max(res['calls'], 1) * 1000:.0f} ms per model call "
        f"({res['cpu'] / res['wall']:.2f} cores on average; Prefect's server "
        f"{res['server_cpu'] / res['cpu']:.0%} of it); peak RSS "
        f"{res['peak_rss'] / 2**20:.0f} MiB"
        + (f"; median `run` {res['run_ms']:.0f} ms" if res.get("run_ms") is not None else "")
    )
    print("  phases (s): " + "; ".join(f"{k} {v}" for k, v in res["phases"].items()))


def _compare(kind: str, results: list[tuple[bool, dict]]) -> None:
    """The sandbox's cost: per `run` command (median of the runs' medians) and on the whole run
    (mean wall time on ÷ off)."""
    ok = [(s, r) for s, r in results if "error" not in r]
    walls = {s: [r["wall"] for t, r in ok if t == s] for s in (True, False)}
    runs = {s: sorted(r["run_ms"] for t, r in ok if t == s and r.get("run_ms")) for s in walls}
    if not walls[True] or not walls[False]:
        print(f"[{kind}] sandbox on vs off: not both measured")
        return
    on, off = (sum(walls[s]) / len(walls[s]) for s in (True, False))
    line = f"[{kind}] sandbox on vs off: whole run {on:.1f} s vs {off:.1f} s = {on / off:.3f}"
    if runs[True] and runs[False]:
        med_on, med_off = (runs[s][len(runs[s]) // 2] for s in (True, False))
        line += (
            f"; per `run` command {med_on:.0f} ms vs {med_off:.0f} ms "
            f"({med_on - med_off:+.0f} ms with the sandbox)"
        )
    print(line + " (target: whole run ≤ 1.05)")


def _ideal(n: int, conc: int, k: int, latency: float) -> float:
    return math.ceil(n / conc) * k * latency


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-N", type=int, default=8, help="workers (tasks)")
    parser.add_argument("-k", type=int, default=4, help="model calls per worker")
    parser.add_argument("-L", type=float, default=2.0, help="latency of each model call, seconds")
    parser.add_argument("-C", type=int, default=4, help="model calls in flight")
    parser.add_argument("--workers", type=int, help="workers at once (default: C)")
    parser.add_argument("--server", choices=["both", "ephemeral", "postgres"], default="both")
    parser.add_argument("--run-step", help="a `run` command as each worker's first step")
    parser.add_argument("--check", help="the repository check (before each landing, on the tip)")
    parser.add_argument(
        "--sandbox", choices=["on", "off", "both"], default="on",
        help="agents' commands in the sandbox, without (--no-sandbox), or both in turn",
    )  # fmt: skip
    parser.add_argument("--repeat", type=int, default=1, help="runs of each sandbox setting")
    parser.add_argument(
        "--planner-latency", type=float, default=0.0, help="each planner's answer, seconds"
    )
    parser.add_argument("--sub-planners", type=int, default=0, help="sub-planners of the root")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(json.loads(args.child))
        return 0
    workers = args.workers or args.C
    print(f"N={args.N} workers × k={args.k} calls × L={args.L:g} s, C={args.C} calls in flight, "
          f"W={workers} workers at once: ideal {_ideal(args.N, args.C, args.k, args.L):.1f} s; "
          f"machine: {os.cpu_count()} cores")  # fmt: skip
    ratios = {}
    modes = {"on": [True], "off": [False], "both": [False, True]}[args.sandbox] * args.repeat
    for kind in c.server_kinds(args.server):
        conc = c.worker_cap(kind, args.C)
        ideal = _ideal(args.N, conc, args.k, args.L)
        results: list[tuple[bool, dict]] = []
        with c.prefect_server(kind) as server:
            for sandbox in modes:
                res = measure(
                    args.N, args.k, args.L, conc, c.worker_cap(kind, workers), server,
                    sandbox=sandbox, check=args.check, run_step=args.run_step,
                    planner_latency=args.planner_latency, subs=args.sub_planners,
                )  # fmt: skip
                results.append((sandbox, res))
                if "error" in res:
                    print(f"[{kind}, sandbox {'on' if sandbox else 'off'}] failed: {res['error']}")
                else:
                    _report(kind, ideal, args.N, sandbox, res)
                    if args.planner_latency or args.sub_planners:
                        print(
                            f"  first worker started {res['first_worker']:.1f} s after the "
                            f"run's start (planners answer after {args.planner_latency:g} s; "
                            f"{args.sub_planners} sub-planner(s) of the root)"
                        )
        if args.sandbox == "both":
            _compare(kind, results)
        results = [(s, r) for s, r in results if "error" not in r]
        if not results:
            print(f"[{kind}] failed")
            continue
        res = results[-1][1]
        if conc < args.C:
            print(
                f"[{kind}] C capped at {conc} as devswarm run does on SQLite: ideal {ideal:.1f} s"
            )
        ratios[kind] = res["wall"] / ideal
    if not ratios:
        return 1
    shown = "; ".join(f"{k} {v:.2f}" for k, v in ratios.items())
    best = min(ratios.values())
    print(f"ratio: {best:.2f} (wall ÷ ideal ⌈N/C⌉×k×L; {shown}; target ≤ 1.10 at N=100 k=10 "
          f"L=10 C=50; W={workers})")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
