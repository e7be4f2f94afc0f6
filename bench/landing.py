"""Bench: W concurrent workers each landing small commits on one branch.

    python bench/landing.py                       # W=32, 4 rounds, both file layouts, product too
    python bench/landing.py --workers 8 --rounds 2 --no-product
    python bench/landing.py --product-only --server postgres --product-tasks 64
    python bench/landing.py --profile             # where the landing path's time goes, per git command
    python bench/landing.py --verify              # the verifier on vs off (bench/landing_verify.py)

Three ways to land, in the same run, on the same kind of repository:
- lane:    devswarm's landing path alone (devswarm.git.workspace.Workspace: worktree at the tip →
           commit → land: replay onto the tip + compare-and-swap inside the process's landing
           lane + publish to the user's repository → remove the worktree);
- naive:   the plain-git optimistic loop (worktree at the tip → commit → {rebase onto the tip →
           `git update-ref` compare-and-swap, retry on a moved tip} → remove the worktree);
- product: the whole swarm through Prefect (flows, `land` Prefect tasks, model calls to the
           offline server with no latency), scripted workers that each write one file.
Layouts: `disjoint` (each commit adds its own file) and `shared` (each commit changes its own
line of one shared file, lines apart, so every rebase is a real three-way merge of that file).

Prints landed commits per hour, conflicts, compare-and-swap retries per landing and lost commits
(a commit reported landed that the branch tip does not hold: must be 0), then one ratio line:
lane ÷ naive landings per hour (disjoint files).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as c  # noqa: E402
import landing_verify  # noqa: E402

BRANCH = "devswarm/bench"


@dataclass
class Outcome:
    """One way of landing, measured."""

    way: str
    layout: str
    landed: int = 0
    seconds: float = 0.0
    conflicts: int = 0
    cas_retries: list[int] = field(default_factory=list)
    lost: int = 0
    errors: int = 0
    note: str = ""

    @property
    def per_hour(self) -> float:
        return self.landed / self.seconds * 3600 if self.seconds else 0.0

    def line(self) -> str:
        retries = statistics.mean(self.cas_retries) if self.cas_retries else 0.0
        worst = max(self.cas_retries, default=0)
        return (
            f"{self.way:8} {self.layout:8} landed {self.landed:4}  in {self.seconds:6.1f} s  "
            f"{c.fmt_rate(self.per_hour):>7}/h  conflicts {self.conflicts:3}  "
            f"CAS retries/landing {retries:5.2f} (max {worst:2})  lost {self.lost}  "
            f"errors {self.errors}" + (f"  {self.note}" if self.note else "")
        )


def base_files(workers: int) -> dict[str, str]:
    """The repository: a README and a shared file with one line per worker, lines apart."""
    return {
        "README.md": "bench\n",
        "shared.txt": "".join(f"slot {i}\n--\n" for i in range(workers)),
    }


def edit(root: Path, layout: str, worker: int, round_: int) -> str:
    """One worker's change in `root`; returns what the tip must show for it afterwards."""
    if layout == "disjoint":
        path = root / f"w{worker:03}" / f"r{round_}.txt"
        path.parent.mkdir(exist_ok=True)
        path.write_text(f"worker {worker} round {round_}\n")
        return f"{path.relative_to(root)}"
    shared = root / "shared.txt"
    lines = shared.read_text().split("\n")
    lines[2 * worker] = f"slot {worker} round {round_}"
    shared.write_text("\n".join(lines))
    return f"slot {worker} round {round_}"


def verify(repo: Path, layout: str, expect: list[str], commits: list[str]) -> int:
    """Lost commits: reported landed but not reachable from the tip, or their change missing."""
    tip = git(repo, "rev-parse", f"refs/heads/{BRANCH}")
    lost = sum(
        1 for sha in commits if run_git(repo, "merge-base", "--is-ancestor", sha, tip).returncode
    )
    if layout == "disjoint":
        files = set(git(repo, "ls-tree", "-r", "--name-only", tip).split("\n"))
        lost += sum(1 for e in expect if e not in files)
    else:
        shared = git(repo, "show", f"{tip}:shared.txt")
        finals: dict[str, str] = {}
        for e in expect:  # each slot must show its worker's last round
            finals[e.split(" round ")[0]] = e
        lost += sum(1 for e in finals.values() if e not in shared.split("\n"))
    return lost


def run_git(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Plain git with a fixed identity, no hooks, no signing, no gc (as devswarm runs it)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(
        GIT_AUTHOR_NAME="bench", GIT_AUTHOR_EMAIL="b@localhost",
        GIT_COMMITTER_NAME="bench", GIT_COMMITTER_EMAIL="b@localhost",
    )  # fmt: skip
    return subprocess.run(
        ["git", "-c", "core.hooksPath=/dev/null", "-c", "commit.gpgsign=false", "-c", "gc.auto=0",
         *args],
        cwd=repo, env=env, capture_output=True, text=True,
    )  # fmt: skip


def git(repo: Path, *args: str) -> str:
    proc = run_git(repo, *args)
    if proc.returncode != 0:
        raise RuntimeError(f"git {' '.join(args[:3])}: {proc.stderr.strip()}")
    return proc.stdout.strip()


# -- devswarm's landing path alone ----------------------------------------------------------------


def lane(workdir: Path, workers: int, rounds: int, layout: str) -> Outcome:
    from devswarm.git.workspace import Workspace

    repo = c.make_repo(workdir / "user", base_files(workers))
    ws = Workspace(repo, workdir / "home", BRANCH)
    out = Outcome("lane", layout)
    expect: list[str] = []
    commits: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(workers + 1)

    def worker(i: int) -> None:
        start.wait()
        for r in range(rounds):
            wt = ws.add_worktree(f"w{i}-r{r}", ws.tip())
            try:
                what = edit(wt, layout, i, r)
                trailers = {"Devswarm-Run": "bench", "Devswarm-Task": f"w{i}-r{r}"}
                ws.commit(wt, f"w{i} r{r}", trailers)
                res = ws.land(wt)
                conflicts = 0
                while res.status == "conflict" and conflicts < 5:
                    conflicts += 1  # a worker's agent would resolve it; redo the edit on the tip
                    ws.abort_conflict(wt)
                    run_git(wt, "reset", "-q", "--hard", ws.tip())
                    edit(wt, layout, i, r)
                    ws.commit(wt, f"w{i} r{r}", trailers)
                    res = ws.land(wt)
            finally:
                ws.remove_worktree(wt)
            with lock:
                out.conflicts += conflicts
                if res.status == "landed":
                    out.landed += 1
                    out.cas_retries.append(res.cas_retries)
                    expect.append(what)
                    commits.append(res.new_tip or "")
                else:
                    out.errors += 1
                    out.note = res.reason or res.status

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(workers)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    out.seconds = time.perf_counter() - t0
    # What the user sees: the lane publishes to the user's repository as it lands.
    out.lost = verify(repo, layout, expect, commits)
    return out


# -- the naive plain-git loop ---------------------------------------------------------------------


def naive(workdir: Path, workers: int, rounds: int, layout: str) -> Outcome:
    repo = c.make_repo(workdir / "user", base_files(workers))
    git(repo, "branch", BRANCH)
    out = Outcome("naive", layout)
    expect: list[str] = []
    commits: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(workers + 1)
    ref = f"refs/heads/{BRANCH}"

    def commit(wt: Path, i: int, r: int) -> str:
        what = edit(wt, layout, i, r)
        git(wt, "add", "-A")
        git(wt, "commit", "-q", "-m", f"w{i} r{r}\n\nDevswarm-Task: w{i}-r{r}")
        return what

    def worker(i: int) -> None:
        start.wait()
        for r in range(rounds):
            wt = workdir / "wt" / f"w{i}-r{r}"
            for attempt in range(10):  # concurrent `worktree add` fails now and then
                if run_git(repo, "worktree", "add", "-q", "--detach", str(wt), ref).returncode == 0:
                    break
                run_git(repo, "worktree", "prune")
                time.sleep(0.01 * (attempt + 1))
            what = commit(wt, i, r)
            retries = conflicts = 0
            while True:
                tip = git(repo, "rev-parse", ref)
                if run_git(wt, "rebase", "-q", tip).returncode != 0:
                    conflicts += 1  # redo the change on the new tip, as a worker would
                    run_git(wt, "rebase", "--abort")
                    git(wt, "reset", "-q", "--hard", tip)
                    commit(wt, i, r)
                    continue
                new = git(wt, "rev-parse", "HEAD")
                if run_git(repo, "update-ref", ref, new, tip).returncode == 0:
                    break
                retries += 1  # the tip moved: read it again
            run_git(repo, "worktree", "remove", "--force", str(wt))
            with lock:
                out.landed += 1
                out.conflicts += conflicts
                out.cas_retries.append(retries)
                expect.append(what)
                commits.append(new)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(workers)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    out.seconds = time.perf_counter() - t0
    out.lost = verify(repo, layout, expect, commits)
    return out


# -- through the product --------------------------------------------------------------------------


def product_scenario(tasks: int, layout: str, workers: int) -> dict:
    agents = [c.NO_FOLLOWUPS]
    specs = []
    for n in range(tasks):
        slot, rnd = n % workers, n // workers
        name = f"t{n:03}"
        if layout == "disjoint":
            call = c.tool_call("write_file", path=f"{name}.txt", content=f"{name}\n")
            files = [f"{name}.txt"]
        else:
            old = f"slot {slot}\n" if rnd == 0 else f"slot {slot} round {rnd - 1}\n"
            call = c.tool_call("edit_file", path="shared.txt", old=old,
                               new=f"slot {slot} round {rnd}\n")  # fmt: skip
            files = ["shared.txt"]
        specs.append(c.task_spec(name, files))
        agents.append(
            {"match": f"worker/*/{name}/*",
             "steps": [{"tool_calls": [call, c.tool_call("finish", summary="done")]}]}
        )  # fmt: skip
    agents.insert(1, {"match": "planner/*", "steps": [c.plan_reply(specs)]})
    agents.append(c.JUDGE_DONE)
    return {"latency": 0.0, "agents": agents}


def product(
    workdir: Path, workers: int, tasks: int, layout: str, server: c.PrefectServer
) -> Outcome:
    slots, workers = workers, c.worker_cap(server.kind, workers)
    capped = f", W capped at {workers} as devswarm run does" if workers < slots else ""
    out = Outcome("product", layout, note=f"[{server.kind}{capped}]")
    if layout == "shared" and tasks > slots:
        tasks = slots  # a later round's edit needs the earlier one on the tip: one round only
    with c.model_server(product_scenario(tasks, layout, slots), workdir / "model") as (url, log):
        res = c.run_child(
            __file__,
            {
                "work": str(workdir),
                "url": url,
                "workers": workers,
                "slots": slots,
                "tasks": tasks,
                "layout": layout,
            },
            server,
        )
    if "error" in res:
        out.note += " " + res["error"][-300:]
        return out
    out.landed, out.seconds = res["landed"], res["work_seconds"]
    out.conflicts, out.cas_retries = res["conflicts"], res["cas_retries"]
    out.lost, out.errors = res["lost"], tasks - res["landed"]
    out.note += (
        f" whole run {res['run_seconds']:.1f} s; orchestration CPU {res['cpu']:.1f} s "
        f"(Prefect's server {res['server_cpu'] / max(res['cpu'], 1e-9):.0%})"
    )
    print("  phases (s): " + "; ".join(f"{k} {v}" for k, v in res["phases"].items()))
    return out


def child(params: dict) -> None:
    """In the child: run the swarm, then read DuckDB and git for the figures."""
    import duckdb

    from devswarm.config import Models, SwarmConfig

    work, workers, tasks = Path(params["work"]), params["workers"], params["tasks"]
    repo = c.make_repo(work / "user", base_files(params["slots"]))
    cfg = SwarmConfig(
        goal="land", repo=repo, base_url=params["url"], models=Models.single("offline-model"),
        home=work / "home", max_cycles=1, max_workers=workers, max_tasks_per_plan=tasks,
        max_model_calls_at_once=max(32, workers), run_id="bench-landing", branch=BRANCH,
    )  # fmt: skip
    os.environ["OPENAI_API_KEY"] = "sk-bench"
    summary, meter, started = c.run_swarm_measured(cfg)
    where, seconds = c.phases(cfg.db_path, started, c.utcnow()), meter.wall
    con = duckdb.connect(str(cfg.db_path), read_only=True)
    landings = con.execute(
        "SELECT status, cas_retries, commit_sha FROM landings ORDER BY started_at"
    ).fetchall()
    first, last = con.execute(
        "SELECT min(started_at), max(ended_at) FROM agents WHERE role = 'worker'"
    ).fetchone()
    landed_tasks = con.execute("SELECT count(*) FROM tasks WHERE status = 'landed'").fetchone()[0]
    con.close()
    landed = [row for row in landings if row[0] == "landed"]
    tip = git(repo, "rev-parse", f"refs/heads/{BRANCH}")
    lost = sum(
        1 for row in landed if run_git(repo, "merge-base", "--is-ancestor", row[2], tip).returncode
    )
    trailers = git(repo, "log", "--format=%(trailers:key=Devswarm-Task,valueonly)", tip).split()
    lost += landed_tasks - len(set(trailers))
    c.child_result(
        {
            "landed": landed_tasks,
            "work_seconds": (last - first).total_seconds(),
            "run_seconds": seconds,
            "conflicts": sum(1 for row in landings if row[0] == "conflict"),
            "cas_retries": [row[1] for row in landed],
            "lost": lost + (len(trailers) - len(set(trailers))),
            "status": summary["status"],
            "phases": where,
            "cpu": meter.cpu,
            "server_cpu": meter.server_cpu,
        }
    )


# -- where the time goes --------------------------------------------------------------------------


def profile_lane(workdir: Path, workers: int, rounds: int, layout: str) -> None:
    """Time every git command devswarm runs during the landing-path bench, by subcommand."""
    from devswarm.git import plumbing

    spent: dict[str, list[float]] = defaultdict(list)
    original = plumbing.run_git
    lock = threading.Lock()

    def timed(cwd, args, input, env=None, **options):  # noqa: A002 - the original's signature
        t0 = time.perf_counter()
        try:
            return original(cwd, args, input, env, **options)
        finally:
            with lock:
                spent[" ".join(args[:2]) if args[0] == "worktree" else args[0]].append(
                    time.perf_counter() - t0
                )

    plumbing.run_git = timed
    try:
        out = lane(workdir, workers, rounds, layout)
    finally:
        plumbing.run_git = original
    total = sum(sum(v) for v in spent.values())
    print(f"\nwhere the landing path's time goes ({layout}, W={workers}): {out.line()}")
    print(f"{'git command':24} {'calls':>6} {'total s':>9} {'mean ms':>8} {'share':>6}")
    for name, times in sorted(spent.items(), key=lambda kv: -sum(kv[1])):
        print(f"{name:24} {len(times):6} {sum(times):9.2f} {1000 * statistics.mean(times):8.1f} "
              f"{sum(times) / total:6.1%}")  # fmt: skip
    print(f"(git time summed over {workers} threads: {total:.1f} s in {out.seconds:.1f} s of wall)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", "-W", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=4, help="commits per worker (lane, naive)")
    parser.add_argument("--product-tasks", type=int, default=None, help="default 2 × workers")
    parser.add_argument("--server", choices=["both", "ephemeral", "postgres"], default="both")
    parser.add_argument("--no-product", action="store_true")
    parser.add_argument("--product-only", action="store_true")
    parser.add_argument("--profile", action="store_true")
    landing_verify.add_arguments(parser)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        params = json.loads(args.child)
        (landing_verify.child if params.pop("verify", False) else child)(params)
        return 0
    if args.verify:
        return landing_verify.main_from(__file__, args)
    W = args.workers  # noqa: N806
    results: list[Outcome] = []
    print(f"W={W} concurrent workers; lane and naive: {args.rounds} commits each; "
          f"machine: {os.cpu_count()} cores")  # fmt: skip
    if args.profile:
        profile_lane(c.scratch("profile"), W, args.rounds, "disjoint")
        return 0
    if not args.product_only:
        for layout in ("disjoint", "shared"):
            for way in (lane, naive):
                results.append(way(c.scratch(way.__name__), W, args.rounds, layout))
                print(results[-1].line(), flush=True)
    if not args.no_product:
        tasks = args.product_tasks or 2 * W
        for kind in c.server_kinds(args.server):
            with c.prefect_server(kind) as server:
                for layout in ("disjoint", "shared"):
                    results.append(product(c.scratch("product"), W, tasks, layout, server))
                    print(results[-1].line(), flush=True)
    lost = sum(r.lost for r in results)
    by = {(r.way, r.layout): r for r in results}
    if ("lane", "disjoint") in by and ("naive", "disjoint") in by:
        lane_r, naive_r = by[("lane", "disjoint")], by[("naive", "disjoint")]
        retries = statistics.mean(lane_r.cas_retries) if lane_r.cas_retries else 0
        print(f"ratio: {lane_r.per_hour / max(naive_r.per_hour, 1e-9):.2f} "
              f"(lane ÷ naive landings per hour, disjoint files, W={W}; target ≥ 2 with ≤ 1 CAS "
              f"retry per landing: {retries:.2f}; lost commits {lost})")  # fmt: skip
    else:
        best = max((r for r in results if r.way == "product"), key=lambda r: r.per_hour)
        print(f"ratio: {best.per_hour / 10_000:.2f} (product landings per hour ÷ 10,000 target, "
              f"{best.layout} {best.note.strip()}; lost commits {lost})")  # fmt: skip
    return 1 if lost else 0


if __name__ == "__main__":
    sys.exit(main())
