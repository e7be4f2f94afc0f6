"""Bench: many agents at once on one machine — errors, orchestration CPU, memory.

    python bench/scale.py                                   # 40 agents × 5 calls × 5 s, both servers
    python bench/scale.py -N 200 -k 10 -L 10 --server postgres    # the issue's target
    python bench/scale.py -N 200 -k 10 -L 10 --server postgres --baseline   # and Prefect alone

N workers all at once (C = N), each making k model calls of latency L at the offline server and
landing one commit (the efficiency bench's scripted workers). Prints errors (model calls that
failed, tasks that did not land, Prefect flow runs of the swarm that did not complete — target
0), the orchestration CPU averaged over the run (this process, its git commands, the Prefect
server and PostgreSQL — target ≤ 1 core), and the peak resident memory of all those processes
(target ≤ 4 GiB; the offline model server's own memory is printed apart). Prefect's temporary
SQLite server is known to fail with 200 concurrent subflows; this prints what it does.

`--baseline` first measures Prefect alone in the same shape on a fresh server of the same kind:
N subflows at once, each making k task runs that wait L s and return a completion-sized result
(persisted, with a cache key, as devswarm's model calls are) — no model server, git, agent or
DuckDB. Its CPU is the floor any product pays for one Prefect task per model call; the swarm's
CPU above it is devswarm's own.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as c  # noqa: E402
import efficiency  # noqa: E402


def child(params: dict) -> None:
    """Run the efficiency child, then ask Prefect how the swarm's flow runs ended."""
    import io
    from contextlib import redirect_stdout

    buf = io.StringIO()
    with redirect_stdout(buf):
        efficiency.child(params)
    result = json.loads(buf.getvalue().strip().splitlines()[-1][len(c.RESULT) :])
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterName,
        FlowRunFilterParentFlowRunId,
    )

    from devswarm.ids import swarm_run_names

    states: dict[str, int] = {}
    with get_client(sync_client=True) as client:
        frontier = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                name=FlowRunFilterName(any_=swarm_run_names("bench-efficiency"))
            )
        )
        while frontier:  # the whole tree, page by page (hundreds of worker subflows)
            for fr in frontier:
                name = fr.state.type.value if fr.state else "NONE"
                states[name] = states.get(name, 0) + 1
            parents, frontier = [fr.id for fr in frontier], []
            for offset in range(0, 100_000, 200):
                page = client.read_flow_runs(
                    flow_run_filter=FlowRunFilter(
                        parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=parents)
                    ),
                    limit=200,
                    offset=offset,
                )
                frontier += page
                if len(page) < 200:
                    break
    result["flow_run_states"] = states
    c.child_result(result)


def baseline_child(params: dict) -> None:
    """Prefect alone, in the swarm's shape (see the module's docstring), metered the same way."""
    import contextvars
    import time
    import uuid
    from concurrent.futures import ThreadPoolExecutor

    from prefect import flow, task
    from prefect.utilities.annotations import quote

    from tasks.subflows import subflows_without_heartbeats

    n, k, latency = params["n"], params["k"], params["latency"]
    tag = uuid.uuid4().hex[:8]
    answer = {"choices": [{"index": 0, "finish_reason": "stop",
                           "message": {"role": "assistant", "content": "x" * 600}}],
              "usage": {"prompt_tokens": 900, "completion_tokens": 150}}  # fmt: skip

    @task(name="model-call", retries=4, retry_delay_seconds=0, persist_result=True,
          cache_key_fn=lambda _ctx, p: f"baseline-{tag}-{p['agent']}-{p['step']}")  # fmt: skip
    def call(agent: int, step: int, request: dict) -> dict:
        time.sleep(latency)
        return answer

    @flow(name="baseline-agent", persist_result=False)
    def agent(i: int) -> None:
        messages = [{"role": "system", "content": "s" * 2000}]
        for step in range(k):
            messages.append({"role": "user", "content": f"step {step} " + "u" * 400})
            call(i, step, quote({"model": "m", "messages": list(messages)}))

    @flow(name="baseline-root", persist_result=False)
    def root() -> None:
        with subflows_without_heartbeats(), ThreadPoolExecutor(n) as pool:
            futures = [pool.submit(contextvars.copy_context().run, agent, i) for i in range(n)]
            for f in futures:
                f.result()

    c.warm_up_prefect()
    servers = c.server_pids()
    meter = c.Meter([os.getpid(), *servers], servers)
    with meter:
        root()
    c.child_result({"wall": meter.wall, "cpu": meter.cpu, "server_cpu": meter.server_cpu,
                    "peak_rss": meter.peak_rss})  # fmt: skip


def _baseline(kind: str, args: argparse.Namespace) -> float | None:
    """Prefect alone on a fresh server of this kind; its cores on average (None if it failed)."""
    with c.prefect_server(kind) as server:
        work = c.scratch("scale-baseline")
        params = {"work": str(work), "n": args.N, "k": args.k, "latency": args.L,
                  "baseline": True}  # fmt: skip
        res = c.run_child(__file__, params, server)
    if "error" in res:
        print(f"[{kind}] Prefect alone failed: {res['error']}")
        return None
    cores = res["cpu"] / res["wall"]
    print(f"[{kind}] Prefect alone ({args.N} subflows × {args.k} task runs of {args.L:g} s): wall "
          f"{res['wall']:.1f} s; CPU {res['cpu']:.1f} s = {cores:.2f} cores on average "
          f"(Prefect's server {res['server_cpu'] / max(res['cpu'], 1e-9):.0%}); peak RSS "
          f"{_gib(res['peak_rss']):.2f} GiB")  # fmt: skip
    return cores


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-N", type=int, default=40, help="agents, all at once")
    parser.add_argument("-k", type=int, default=5, help="model calls per agent")
    parser.add_argument("-L", type=float, default=5.0, help="latency of each call, seconds")
    parser.add_argument("--server", choices=["both", "ephemeral", "postgres"], default="both")
    parser.add_argument("--baseline", action="store_true",
                        help="first measure Prefect alone in the same shape")  # fmt: skip
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        params = json.loads(args.child)
        (baseline_child if params.get("baseline") else child)(params)
        return 0
    print(f"N={args.N} agents at once × k={args.k} calls × L={args.L:g} s; machine: "
          f"{os.cpu_count()} cores, {_gib(_total_memory()):.0f} GiB")  # fmt: skip
    verdicts, floors = {}, {}
    speed = [c.reference_loop()]
    for kind in c.server_kinds(args.server):
        if args.baseline:
            floors[kind] = _baseline(kind, args)
        with c.prefect_server(kind) as server:
            work = c.scratch("scale")
            scen = efficiency.scenario(args.N, args.k, args.L)
            with c.model_server(scen, work / "model") as (url, _log):
                model_meter = _ModelServerMemory()
                # All at once, even on SQLite (where devswarm run would cap them): this is the
                # measurement that shows why it caps.
                params = {"work": str(work), "url": url, "n": args.N, "k": args.k,
                          "latency": args.L, "c": args.N, "workers": args.N}  # fmt: skip
                res = c.run_child(__file__, params, server)
                model_meter.stop()
        if "error" in res:
            print(f"[{kind}] failed: {res['error']}")
            verdicts[kind] = None
            continue
        states = res["flow_run_states"]
        # The swarm, its planner, its judge and a work run per agent; a missing one is an error.
        missing = max(0, args.N + 3 - sum(states.values()))
        bad_flows = sum(n for s, n in states.items() if s != "COMPLETED") + missing
        errors = res["failed_calls"] + (args.N - res["landed"]) + bad_flows
        cores = res["cpu"] / res["wall"]
        verdicts[kind] = (errors, cores, res["peak_rss"])
        print(
            f"[{kind}] errors {errors} (failed model calls {res['failed_calls']}, tasks not landed "
            f"{args.N - res['landed']}, flow runs not completed {bad_flows}: {states}); wall "
            f"{res['wall']:.1f} s for an ideal {args.k * args.L:.0f} s; orchestration CPU "
            f"{res['cpu']:.1f} s = {cores:.2f} cores on average (Prefect's server "
            f"{res['server_cpu'] / max(res['cpu'], 1e-9):.0%}); peak RSS "
            f"{_gib(res['peak_rss']):.2f} GiB (model server apart: "
            f"{_gib(model_meter.peak):.2f} GiB)"
        )
        print("  phases (s): " + "; ".join(f"{k} {v}" for k, v in res["phases"].items()))
    speed.append(c.reference_loop())
    print(
        f"machine speed: a fixed Python loop took {speed[0]:.2f} s of CPU before and "
        f"{speed[-1]:.2f} s after (CPU figures move with it on a shared machine)"
    )
    done = {k: v for k, v in verdicts.items() if v}
    if not done:
        print("ratio: n/a (no server completed the run)")
        return 1
    best = "postgres" if "postgres" in done else next(iter(done))  # the targets are for it
    errors, cores, rss = done[best]
    floor = f"; Prefect alone {floors[best]:.2f} cores" if floors.get(best) else ""
    print(f"ratio: {cores:.2f} (orchestration cores on average, target ≤ 1; errors {errors}, "
          f"target 0; peak RSS {_gib(rss):.2f} GiB, target ≤ 4; [{best}] N={args.N}{floor})")  # fmt: skip
    return 0


class _ModelServerMemory:
    """Peak memory of the offline model server (this process's child), sampled in a thread."""

    def __init__(self) -> None:
        import psutil

        self.peak = 0
        self._stop = threading.Event()
        self._pids = [
            p.pid
            for p in psutil.Process().children()
            if "devswarm.offline" in " ".join(p.cmdline())
        ]
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            self.peak = max(self.peak, c.tree_rss(self._pids))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def _total_memory() -> int:
    import psutil

    return psutil.virtual_memory().total


def _gib(n: float) -> float:
    return n / 2**30


if __name__ == "__main__":
    sys.exit(main())
