"""Bench: kill the orchestrator at about half of a run, resume it, count what was paid twice.

    python bench/resume.py                         # 8 tasks × 4 calls, 1 s each, 4 workers
    python bench/resume.py --tasks 20 --calls 6 --workers 8 --server postgres

Runs `devswarm run` as a user would (its own process; Prefect's temporary server, or
`devswarm server` when --server postgres), SIGKILLs its whole process group once half of the
expected model calls are answered, then runs `devswarm resume`. A call is "paid twice" when the
resumed run sends a request the server had already answered before the kill (same agent, step
and request body). Prints tokens re-spent ÷ tokens answered before the kill (target 0), the
calls sent again, the time to resume, and whether every task landed exactly once.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as c  # noqa: E402

EXE = str(Path(sys.executable).parent / "devswarm")


def scenario(tasks: int, calls: int, latency: float) -> dict:
    specs, agents = [], [c.NO_FOLLOWUPS]
    for i in range(tasks):
        name = f"t{i:02}"
        specs.append(c.task_spec(name, [f"{name}.txt"]))
        steps = [
            {"tool_calls": [c.tool_call("write_file", path=f"{name}.txt", content=f"{name} {j}\n")]}
            for j in range(calls - 1)
        ]
        steps.append({"tool_calls": [c.tool_call("finish", summary=f"{name} done")]})
        agents.append({"match": f"worker/*/{name}/*", "steps": steps})
    agents.insert(1, {"match": "planner/*", "steps": [c.plan_reply(specs)]})
    agents.append(c.JUDGE_DONE)
    return {"latency": latency, "agents": agents}


def _key(r: dict) -> tuple:
    body = json.dumps(r["request"], sort_keys=True)
    return r["agent"], r["step"], hashlib.sha256(body.encode()).hexdigest()


def _sent(r: dict) -> float:
    return datetime.fromisoformat(r["time"].replace("Z", "+00:00")).timestamp()


def _answered(r: dict) -> float:
    return _sent(r) + r["latency_ms"] / 1000


def _tokens(r: dict) -> int:
    u = r.get("usage") or {}
    return (u.get("prompt_tokens") or 0) + (u.get("completion_tokens") or 0)


def measure(args: argparse.Namespace, server: c.PrefectServer) -> dict:
    work = c.scratch("resume")
    repo = c.make_repo(work / "user", {"README.md": "resume\n"})
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "OPENAI_"))}
    env.update(server.env, DEVSWARM_HOME=str(work / "home"), OPENAI_API_KEY="sk-bench",
               PREFECT_HOME=str(work / "prefect"))  # fmt: skip
    expected = 1 + args.tasks * args.calls + 1  # planner, workers, judge
    with c.model_server(scenario(args.tasks, args.calls, args.latency), work / "model") as (
        url,
        log,
    ):
        # The offline server takes many calls at once: as many as before loopback's default of 4.
        settings = work / "swarm.toml"
        settings.write_text("max_model_calls_at_once = 32\n")
        cmd = [EXE, "run", "--repo", str(repo), "--goal", "bench", "--base-url", url, "--model",
               "offline-model", "--workers", str(args.workers), "--run-id", "bench-resume",
               "--config", str(settings)]  # fmt: skip
        began = time.monotonic()
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                text=True, start_new_session=True)  # fmt: skip
        while proc.poll() is None:
            if sum(1 for r in c.chat_log(log) if r["status"] == 200) >= expected // 2:
                break
            time.sleep(0.05)
        else:
            return {"error": f"the run ended before the kill: {proc.stderr.read()[-500:]}"}
        killed_at = time.time()
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        first_run = time.monotonic() - began
        time.sleep(args.latency + 0.5)  # calls in flight finish at the server, for a dead client
        # Answered before the kill: the answer left the server at least 0.2 s before it, so the
        # orchestrator had received and stored it. Calls in flight at the kill are not counted:
        # their answers never reached the orchestrator, and sending them again is right.
        done = [r for r in c.chat_log(log) if r["status"] == 200]
        before = [r for r in done if _answered(r) < killed_at - 0.2]
        edge = [r for r in done if killed_at - 0.2 <= _answered(r) < killed_at]
        resumed_at, t0 = time.time(), time.monotonic()
        out = subprocess.run([EXE, "resume", "bench-resume"], env=env, capture_output=True,
                             text=True, timeout=3600)  # fmt: skip
        resume_seconds = time.monotonic() - t0
        after = [r for r in c.chat_log(log) if _sent(r) >= resumed_at]
    if out.returncode != 0:
        return {"error": f"resume exited {out.returncode}: {(out.stdout + out.stderr)[-800:]}"}
    answered = {_key(r): r for r in before}
    again = [r for r in after if _key(r) in answered]
    edge_keys = {_key(r) for r in edge}
    git = ["git", "-C", str(repo), "log", "--format=%(trailers:key=Devswarm-Task,valueonly)",
           "devswarm/bench-resume"]  # fmt: skip
    trailers = subprocess.run(git, capture_output=True, text=True).stdout.split()
    return {
        "answered_before": len(before),
        "tokens_before": sum(_tokens(r) for r in before),
        "calls_again": len(again),
        "tokens_again": sum(_tokens(answered[_key(r)]) for r in again),
        "calls_after": len(after),
        "edge": len(edge),
        "edge_again": sum(1 for r in after if _key(r) in edge_keys),
        "first_run": first_run,
        "resume": resume_seconds,
        "landed": len(trailers),
        "landed_once": len(trailers) == len(set(trailers)) == args.tasks,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=8)
    parser.add_argument("--calls", type=int, default=4, help="model calls per worker")
    parser.add_argument("--latency", type=float, default=1.0)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--server", choices=["both", "ephemeral", "postgres"], default="both")
    args = parser.parse_args()
    print(f"{args.tasks} tasks × {args.calls} calls × {args.latency:g} s, {args.workers} workers; "
          f"kill at half the model calls; machine: {os.cpu_count()} cores")  # fmt: skip
    ratios = {}
    for kind in c.server_kinds(args.server):
        with c.prefect_server(kind) as server:
            res = measure(args, server)
        if "error" in res:
            print(f"[{kind}] failed: {res['error']}")
            continue
        ratios[kind] = res["tokens_again"] / max(res["tokens_before"], 1)
        print(
            f"[{kind}] killed after {res['first_run']:.1f} s with {res['answered_before']} calls "
            f"answered ({res['tokens_before']:,} tokens); resume took {res['resume']:.1f} s and "
            f"sent {res['calls_after']} calls, {res['calls_again']} of them answered before "
            f"({res['tokens_again']:,} tokens); {res['landed']}/{args.tasks} tasks on the branch, "
            f"each once: {res['landed_once']} ({res['edge']} calls answered within 0.2 s of the "
            f"kill not counted; {res['edge_again']} of them sent again)"
        )
    if not ratios:
        return 1
    shown = "; ".join(f"{k} {v:.3f}" for k, v in ratios.items())
    print(f"ratio: {max(ratios.values()):.3f} (tokens re-spent ÷ tokens answered before the kill; "
          f"{shown}; target 0)")  # fmt: skip
    return 0 if max(ratios.values()) == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
