"""`bench/landing.py --verify`: the verifier's cost and effect, through the whole product.

One invocation, swarm runs of the same scenario on one Prefect server: the verifier off, then on
with each policy asked for (`--verify-policies`, default revert). The repository check takes ~1 s (`python check.py`: a sleep, then the
repository's invariant) and the landing rate is fixed by the scripted model's latency. A share
of the tasks (`--verify-break-rate`, 5 %) are the later half of a pair that passes alone and
breaks together (pairs/a<k>.txt and pairs/b<k>.txt with "B-old" break the check). Printed:

- landings per hour during the work phase (first worker start to last landing), on and off,
  and their ratio (target >= 0.8): tasks whose landing stands at the end, per hour;
- from ground truth, computed after the run (the check run again on every first-parent commit
  of the branch, not the verifier's records): the share of wall time the tip was green (target
  >= 95 %, from the first landing to the run's end, landing times from the landings table),
  breaks, and mean landings between a break and green again.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as c  # noqa: E402

BRANCH = "devswarm/bench-verify"
CHECK_PY = """import pathlib, sys, time

if "--fast" not in sys.argv:
    time.sleep({seconds})  # a suite that takes about this long
for a in pathlib.Path("pairs").glob("a*.txt"):
    b = a.with_name("b" + a.name[1:])
    if b.exists() and b.read_text().strip() == "B-old":
        sys.exit(f"{{a.name}} and {{b.name}} do not work together")
"""


def scenario(tasks: int, pairs: int, latency: float) -> tuple[dict, list[str]]:
    """Fillers, and `pairs` pairs spread evenly over the plan; the later of each pair breaks the
    tip, and its retry (attempt 2) writes the version that works with the other."""
    names = [f"t{n:03}" for n in range(tasks - pairs)]
    step = max(1, len(names) // max(1, pairs))
    plan: list[tuple[str, list[str], dict]] = [
        (n, [f"notes/{n}.txt"], {f"notes/{n}.txt": f"{n}\n"}) for n in names
    ]
    agents: list[dict] = [c.NO_FOLLOWUPS]
    for k in range(pairs):
        a, b = {f"pairs/a{k}.txt": "A\n"}, {f"pairs/b{k}.txt": "B-old\n"}
        fixed = {f"pairs/b{k}.txt": "B-new\n"}
        # The pair's two halves next to each other: they start together, both from the base.
        at = min(len(plan), k * step + step // 2)
        plan[at:at] = [(f"a{k}", list(a), a), (f"b{k}", list(b), b)]
        agents += [
            _worker(f"a{k}", a | fixed, "a[2-9]"),  # a retried `a` keeps b working
            _worker(f"b{k}", fixed, "a[2-9]"),
            _worker(f"repair-a{k}", fixed),  # --on-red repair: the culprit's repair task
            _worker(f"repair-b{k}", fixed),
        ]
    agents += [_worker(n, files) for n, _paths, files in plan]
    agents.insert(1, {"match": "planner/*", "steps": [c.plan_reply([
        c.task_spec(n, paths) for n, paths, _ in plan])]})  # fmt: skip
    agents.append(c.JUDGE_DONE)
    return {"latency": latency, "agents": agents}, [n for n, _, _ in plan]


def _worker(name: str, files: dict[str, str], attempt: str = "*") -> dict:
    writes = [c.tool_call("write_file", path=p, content=t) for p, t in files.items()]
    return {
        "match": f"worker/*/{name}/{attempt}",
        "steps": [{"tool_calls": writes}, {"tool_calls": [c.tool_call("finish", summary="ok")]}],
    }


def child(params: dict) -> None:
    """In the child: one swarm run (verifier on or off), then its figures."""
    import duckdb

    from devswarm.config import Models, SwarmConfig

    work = Path(params["work"])
    repo = c.make_repo(
        work / "user",
        {"README.md": "bench\n", "check.py": CHECK_PY.format(seconds=params["check_seconds"]),
         "pairs/.keep": ""},
    )  # fmt: skip
    base = _git(repo, "rev-parse", "HEAD")
    cfg = SwarmConfig(
        goal="land", repo=repo, base_url=params["url"], models=Models.single("offline-model"),
        home=work / "home", max_cycles=1, max_workers=params["workers"],
        max_tasks_per_plan=params["tasks"], max_model_calls_at_once=max(32, params["workers"]),
        run_id=f"bench-verify-{params['mode']}", branch=BRANCH, check="python check.py",
        verify=params["mode"] != "off", on_red=params["mode"] if params["mode"] != "off"
        else "revert", request_timeout=600,
    )  # fmt: skip
    os.environ["OPENAI_API_KEY"] = "sk-bench"
    summary, meter, _started = c.run_swarm_measured(cfg)
    con = duckdb.connect(str(cfg.db_path), read_only=True)
    try:
        first, last = con.execute(
            "SELECT (SELECT min(started_at) FROM agents WHERE role = 'worker'), max(ended_at)"
            " FROM landings WHERE status = 'landed' AND agent_id LIKE 'worker/%'"
        ).fetchone()
        tips = con.execute(
            "SELECT new_tip, ended_at FROM landings WHERE status = 'landed'"
            " AND new_tip IS DISTINCT FROM old_tip ORDER BY ended_at"
        ).fetchall()
        (run_end,) = con.execute("SELECT max(ended_at) FROM runs").fetchone()
        health = con.execute("SELECT green_share, breaks FROM tip_health").fetchall()
    finally:
        con.close()
    truth = ground_truth(repo, base)
    standing = _standing_tasks(repo, base)
    c.child_result(
        {
            "status": summary["status"],
            "landed": len([t for t in standing if ".repair-" not in t]),  # planned tasks only
            "work_seconds": (last - first).total_seconds(),
            "run_seconds": meter.wall,
            "cpu": meter.cpu,
            **figures(truth, [(t, at) for t, at in tips], tips[0][1] if tips else None, run_end),
            "verifier_says": health[0] if health else None,
        }
    )


def ground_truth(repo: Path, base: str) -> list[tuple[str, bool]]:
    """(commit, the check passes) for the base and every first-parent commit after it."""
    tip = _git(repo, "rev-parse", f"refs/heads/{BRANCH}")
    commits = [
        base,
        *_git(repo, "rev-list", "--first-parent", "--reverse", f"{base}..{tip}").split(),
    ]
    out = []
    for commit in commits:
        with tempfile.TemporaryDirectory(prefix="truth-") as folder:
            tar = subprocess.run(
                ["git", "-C", str(repo), "archive", "--format=tar", commit],
                capture_output=True, check=True,
            ).stdout  # fmt: skip
            (Path(folder) / "t.tar").write_bytes(tar)
            with tarfile.open(Path(folder) / "t.tar") as archive:
                archive.extractall(Path(folder) / "tree", filter="data")
            passed = subprocess.run(
                [sys.executable, "check.py", "--fast"], cwd=Path(folder) / "tree",
                capture_output=True, check=False,
            ).returncode == 0  # fmt: skip
        out.append((commit, passed))
    return out


def figures(
    truth: list[tuple[str, bool]], tips: list[tuple[str, Any]], first: Any, end: Any
) -> dict[str, Any]:
    """Green share of wall time (first landing to the run's end), breaks, landings to green."""
    green = dict(truth)
    line = [commit for commit, _ in truth]
    breaks = [i for i in range(1, len(line)) if green[line[i - 1]] and not green[line[i]]]
    to_green = []
    for i in breaks:
        later = [j for j in range(i + 1, len(line)) if green[line[j]]]
        if later:
            to_green.append(later[0] - i)
    green_s = total_s = 0.0
    for (commit, at), nxt in zip(tips, [*tips[1:], (None, end)], strict=True):
        span = max(0.0, ((nxt[1] or at) - at).total_seconds())
        total_s += span
        green_s += span if green.get(commit, True) else 0.0
    return {
        "commits": len(line) - 1,
        "breaks": len(breaks),
        "green_share": green_s / total_s if total_s else None,
        "landings_to_green": sum(to_green) / len(to_green) if to_green else None,
        "still_red": len(breaks) - len(to_green),
        "window_seconds": total_s,
        "tip_green": green[line[-1]],
    }


def _standing_tasks(repo: Path, base: str) -> set[str]:
    """Tasks whose landing stands at the tip (a verifier's revert takes one off until it lands
    again), from the trailers, oldest first."""
    fmt = "%(trailers:key=Devswarm-Task,valueonly)%x1f%(trailers:key=Devswarm-Revert,valueonly)"
    out = _git(repo, "log", "--reverse", f"--format={fmt}%x1e", f"{base}..refs/heads/{BRANCH}")
    standing: set[str] = set()
    for record in out.split("\x1e"):
        task, _, revert = (p.strip() for p in record.strip("\n").partition("\x1f"))
        if task:
            (standing.discard if revert else standing.add)(task)
    return standing


def _git(repo: Path, *args: str) -> str:
    proc = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"git {' '.join(args[:2])}: {proc.stderr.strip()}")
    return proc.stdout.strip()


def main(script: str, kind: str, workers: int, tasks: int, rate: float, latency: float,
         check_seconds: float, policies: list[str]) -> int:  # fmt: skip
    """The runs on one server (off, then each policy); prints the figures and one ratio line
    (the first policy against off); 1 if a verified run ended red."""
    pairs = max(1, round(tasks * rate))
    scen, _ = scenario(tasks, pairs, latency)
    results = {}
    with c.prefect_server(kind) as server:
        workers = c.worker_cap(kind, workers)
        for mode in ("off", *policies):
            work = c.scratch(f"verify-{mode}")
            with c.model_server(scen, work / "model") as (url, _log):
                params = {"work": str(work), "url": url, "workers": workers, "tasks": tasks,
                          "mode": mode, "check_seconds": check_seconds}  # fmt: skip
                res = c.run_child(script, {"verify": True, **params}, server)
            results[mode] = res
            if "error" in res:
                print(f"verifier {mode}: {res['error']}")
                return 1
            per_hour = res["landed"] / res["work_seconds"] * 3600 if res["work_seconds"] else 0
            res["per_hour"] = per_hour
            share = res["green_share"]
            print(
                f"verifier {mode:6} [{kind}, W={workers}, {tasks} tasks, {pairs} breaking pairs,"
                f" check {check_seconds:g} s, model latency {latency:g} s]: {res['landed']} tasks"
                f" standing in {res['work_seconds']:.1f} s = {c.fmt_rate(per_hour)}/h;"
                f" ground truth: {res['commits']} commits, {res['breaks']} breaks, green"
                f" {'n/a' if share is None else f'{share:.1%}'} of {res['window_seconds']:.0f} s,"
                f" landings to green {res['landings_to_green']}, still red {res['still_red']},"
                f" tip green {res['tip_green']}; verifier says {res['verifier_says']};"
                f" status {res['status']}, CPU {res['cpu']:.0f} s",
                flush=True,
            )
    on, off = results[policies[0]], results["off"]
    ratio = on["per_hour"] / off["per_hour"] if off["per_hour"] else 0.0
    print(
        f"ratio: {ratio:.2f} (landings/h verifier on, --on-red {policies[0]}, ÷ off; target >= 0.8)"
        " · green"
        f" {on['green_share']:.1%} of the time with the verifier (target >= 95 %), off"
        f" {off['green_share']:.1%} · mean landings from a break to green"
        f" {on['landings_to_green']}"
    )
    verified = [results[p] for p in policies]
    return 0 if all(r["tip_green"] and r["still_red"] == 0 for r in verified) else 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """bench/landing.py's flags for this bench."""
    parser.add_argument("--verify", action="store_true", help="the verifier on vs off")
    parser.add_argument("--verify-tasks", type=int, default=40)
    parser.add_argument("--verify-workers", type=int, default=4)
    parser.add_argument("--verify-break-rate", type=float, default=0.05)
    parser.add_argument("--verify-latency", type=float, default=10.0, help="s per model reply")
    parser.add_argument("--check-seconds", type=float, default=1.0)
    parser.add_argument("--verify-policies", default="revert", help="e.g. revert,repair")


def main_from(script: str, args: argparse.Namespace) -> int:
    """main() with bench/landing.py's parsed flags (PostgreSQL where installed, with --server
    both)."""
    return main(
        script, c.server_kinds(args.server)[-1], args.verify_workers, args.verify_tasks,
        args.verify_break_rate, args.verify_latency, args.check_seconds,
        args.verify_policies.split(","),
    )  # fmt: skip
