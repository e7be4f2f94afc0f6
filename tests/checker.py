"""An independent checker for the fault drills: did a swarm lose, duplicate or leak anything?

It shares no code with devswarm's landing or workspace logic on purpose: git is read with plain
`git` subprocesses, the run store with `duckdb`, the offline model server's request log with
`json`, and Prefect's records with Prefect's own client. A bug in devswarm's landing code cannot
hide itself by being used to check its own work.

What it verifies (`check` lists every problem; `assert_sound` fails with all of them):
- every commit reported landed (tasks, landings, runs) is reachable from the branch tip, in the
  user's repository and in devswarm's private clone, and the two tips agree;
- no task landed twice (the `Devswarm-Run` / `Devswarm-Task` trailers on the branch), except
  after its own revert (a commit with `Devswarm-Revert: <its last landing>`);
- DuckDB matches git: the tasks a run says landed are exactly the tasks whose trailers are on
  the branch; every task ended landed or with a reason;
- DuckDB matches the model server: one model_calls row per HTTP attempt the orchestrator saw,
  with the same agent, step, attempt, status and token counts;
- the API key appears nowhere: DuckDB (every column of every table of every file), files under
  the data folder (transcripts, records, reports, cached results), git history, the captured
  output, extra folders (e.g. a Prefect home with its SQLite database), and — when asked —
  Prefect's artifacts, logs and flow-run parameters;
- agents' commands did not see it: each `env` an agent ran printed an environment (PATH=...)
  without the key or the name OPENAI_API_KEY.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb

SETTLED_WITHOUT_REASON = {"landed"}  # every other final status must say why
UNSETTLED = {"pending", "running"}


@dataclass
class Findings:
    """What the checker found: problems (empty = sound) and facts worth printing."""

    problems: list[str] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)

    def problem(self, text: str) -> None:
        self.problems.append(text)


# -- git, plainly ---------------------------------------------------------------------------------


def git(repo: Path, *args: str, check: bool = True) -> str:
    """Plain git in `repo`, with nothing from the caller's environment redirecting it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    proc = subprocess.run(
        ["git", "-C", str(repo), *args], env=env, capture_output=True, text=True, check=False
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} in {repo}: {proc.stderr.strip()}")
    return proc.stdout


def branch_tip(repo: Path, branch: str) -> str | None:
    out = git(
        repo, "rev-parse", "--verify", "--quiet", f"refs/heads/{branch}^{{commit}}", check=False
    )
    return out.strip() or None


def reachable(repo: Path, commit: str, tip: str) -> bool:
    """Whether `commit` exists in `repo` and is an ancestor of (or equal to) `tip`."""
    proc = subprocess.run(
        ["git", "-C", str(repo), "merge-base", "--is-ancestor", commit, tip],
        capture_output=True,
        check=False,
    )
    return proc.returncode == 0


def trailers(repo: Path, tip: str) -> list[tuple[str, str | None, str | None]]:
    """(commit, run, task) for every commit reachable from `tip` (None where a trailer is absent)."""
    return [(c, run, task) for c, run, task, _revert in trailers_with_reverts(repo, tip)]


def trailers_with_reverts(
    repo: Path, tip: str
) -> list[tuple[str, str | None, str | None, str | None]]:
    """(commit, run, task, reverted commit) for every commit reachable from `tip`, newest first;
    the last is the `Devswarm-Revert` trailer of a verifier's revert (None on other commits)."""
    fmt = (
        "%H%x1f%(trailers:key=Devswarm-Run,valueonly,separator=%x2C)%x1f"
        "%(trailers:key=Devswarm-Task,valueonly,separator=%x2C)%x1f"
        "%(trailers:key=Devswarm-Revert,valueonly,separator=%x2C)%x1e"
    )
    out = git(repo, "log", f"--format={fmt}", tip)
    found = []
    for record in out.split("\x1e"):
        parts = record.strip("\n").split("\x1f")
        if len(parts) != 4:
            continue
        commit, run, task, revert = (p.strip() for p in parts)
        found.append((commit, run or None, task or None, revert or None))
    return found


def landings_per_task(
    on_branch: list[tuple[str, str | None, str | None, str | None]],
) -> tuple[dict[tuple[str | None, str], bool], list[str]]:
    """From trailers_with_reverts (newest first): whether each (run, task) stands landed at the
    tip, and the tasks that landed twice without their own revert in between."""
    standing: dict[tuple[str | None, str], str | None] = {}  # -> its standing landing, or None
    twice = []
    for commit, run, task, revert in reversed(on_branch):
        if not task:
            continue
        key = (run, task)
        if revert:
            if standing.get(key) != revert:
                twice.append(f"{run}/{task} (a revert of {revert[:12]}, not its landing)")
            standing[key] = None
        elif standing.get(key):
            twice.append(f"{run}/{task}")
        else:
            standing[key] = commit
    return {k: v is not None for k, v in standing.items()}, sorted(twice)


# -- the request log ------------------------------------------------------------------------------


def read_request_log(path: Path) -> list[dict]:
    """Chat-completion lines of the offline server's request log (torn last lines skipped)."""
    lines = []
    for text in Path(path).read_text().splitlines():
        try:
            line = json.loads(text)
        except json.JSONDecodeError:
            continue
        if str(line.get("path", "")).endswith("/chat/completions"):
            lines.append(line)
    return lines


def _log_key(line: dict, request_timeout: float) -> tuple:
    """What the orchestrator must have recorded for one request the server answered."""
    if line["latency_ms"] >= request_timeout * 1000:  # the client had given up before the answer
        outcome: tuple = ("timeout",)
    else:
        usage = line.get("usage") or {}
        outcome = (
            line["status"],
            usage.get("prompt_tokens") or 0,
            usage.get("completion_tokens") or 0,
        )
    return (line["agent"], line["step"], line["attempt"], *outcome)


def _row_key(
    agent: str,
    step: int,
    attempt: int,
    error_type: str | None,
    status: int | None,
    input_tokens: int | None,
    output_tokens: int | None,
) -> tuple:
    if error_type == "timeout":
        return (agent, step, attempt, "timeout")
    return (agent, step, attempt, status, input_tokens or 0, output_tokens or 0)


# -- the store ------------------------------------------------------------------------------------


def _connect(path: Path) -> duckdb.DuckDBPyConnection:
    return duckdb.connect(str(path), read_only=True)


def _tables(con: duckdb.DuckDBPyConnection) -> list[str]:
    return [
        r[0]
        for r in con.execute(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_type = 'BASE TABLE' AND table_schema = 'main'"
        ).fetchall()
    ]


def secret_in_duckdb(path: Path, secret: str) -> list[str]:
    """`table.column` of every value in the file that contains `secret` (all columns, as text)."""
    hits = []
    con = _connect(path)
    try:
        for table in _tables(con):
            cols = [r[0] for r in con.execute(f'DESCRIBE "{table}"').fetchall()]
            for col in cols:
                n = con.execute(
                    f'SELECT count(*) FROM "{table}" WHERE CAST("{col}" AS VARCHAR) LIKE ?',
                    [f"%{secret}%"],
                ).fetchone()[0]
                if n:
                    hits.append(f"{path.name}:{table}.{col} ({n} rows)")
    finally:
        con.close()
    return hits


# -- files, Prefect -------------------------------------------------------------------------------


def secret_in_files(roots: Iterable[Path], secret: str) -> list[str]:
    """Files under `roots` whose bytes contain `secret` (text files, SQLite, JSONL, HTML...)."""
    needle = secret.encode()
    hits = []
    for root in roots:
        root = Path(root)
        paths = [root] if root.is_file() else (p for p in root.rglob("*") if p.is_file())
        for p in paths:
            if p.is_symlink():
                continue
            try:
                if needle in p.read_bytes():
                    hits.append(str(p))
            except OSError:
                continue
    return hits


def prefect_flow_runs(run_ids: list[str]) -> list[Any]:
    """Flow runs named `swarm: <run id>` (or an older devswarm's `swarm · <run id>`) and all their descendants, through Prefect's client."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterName,
        FlowRunFilterParentFlowRunId,
    )

    with get_client(sync_client=True) as client:
        frontier = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                name=FlowRunFilterName(
                    any_=[n for r in run_ids for n in (f"swarm: {r}", f"swarm · {r}")]
                )
            )
        )
        found = {fr.id: fr for fr in frontier}
        while frontier:
            children = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[f.id for f in frontier])
                ),
                limit=200,
            )
            frontier = [c for c in children if c.id not in found]
            found.update((c.id, c) for c in frontier)
    return list(found.values())


def prefect_texts(flow_runs: list[Any]) -> dict[str, list[str]]:
    """Everything Prefect keeps about these flow runs as text: artifacts, logs, parameters."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        LogFilter,
        LogFilterFlowRunId,
    )

    ids = [fr.id for fr in flow_runs]
    texts: dict[str, list[str]] = {"artifacts": [], "logs": [], "parameters": []}
    with get_client(sync_client=True) as client:
        for offset in range(0, 100_000, 200):
            page = client.read_artifacts(
                artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=ids)),
                limit=200,
                offset=offset,
            )
            texts["artifacts"] += [f"{a.key} {a.description} {a.data}" for a in page]
            if len(page) < 200:
                break
        for offset in range(0, 100_000, 200):
            logs = client.read_logs(
                log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=ids)),
                limit=200,
                offset=offset,
            )
            texts["logs"] += [f"{entry.name} {entry.message}" for entry in logs]
            if len(logs) < 200:
                break
    texts["parameters"] = [json.dumps(fr.parameters, default=str) for fr in flow_runs]
    return texts


def env_probes(home: Path) -> list[str]:
    """Outputs of every `run` call whose command is `env`, from the agents' transcripts."""
    outputs = []
    for path in sorted(Path(home).glob("runs/*/transcripts/*.jsonl")):
        calls: dict[str, str] = {}
        for text in path.read_text().splitlines():
            try:
                message = json.loads(text)["message"]
            except (json.JSONDecodeError, KeyError):
                continue
            for call in message.get("tool_calls") or []:
                fn = call.get("function") or {}
                try:
                    args = json.loads(fn.get("arguments") or "{}")
                except json.JSONDecodeError:
                    continue
                if fn.get("name") == "run" and str(args.get("command", "")).split()[:1] == ["env"]:
                    calls[call["id"]] = ""
            if message.get("role") == "tool" and message.get("tool_call_id") in calls:
                outputs.append(str(message.get("content") or ""))
    return outputs


# -- the whole check ------------------------------------------------------------------------------


def check(
    *,
    repo: Path,
    branch: str,
    home: Path,
    secret: str,
    requests: list[dict],
    request_timeout: float,
    optional_requests: Iterable[dict] = (),
    run_ids: list[str] | None = None,
    db: Path | None = None,
    output: str = "",
    scan: Iterable[Path] = (),
    prefect: bool = False,
    env_probe: bool = True,
) -> Findings:
    """Check a finished drill; see the module docstring. `requests`: the request-log lines the
    orchestrator saw (each must be one model_calls row); `optional_requests`: lines it may or may
    not have seen (answered right at a kill)."""
    f = Findings()
    home = Path(home)
    db = Path(db) if db else home / "devswarm.duckdb"
    con = _connect(db)
    try:
        if run_ids is None:
            run_ids = [r[0] for r in con.execute("SELECT run_id FROM runs").fetchall()]
        f.facts["runs"] = len(run_ids)
        _check_git_and_store(f, con, Path(repo), branch, home, run_ids)
        _check_model_calls(f, con, run_ids, requests, optional_requests, request_timeout)
    finally:
        con.close()
    _check_secret(f, home, db, Path(repo), secret, output, scan, run_ids, prefect)
    if env_probe:
        probes = env_probes(home)
        f.facts["env_probes"] = len(probes)
        if not probes:
            f.problem("no agent ran `env`: the environment of agents' commands was not probed")
        for out in probes:
            if "PATH=" not in out:
                f.problem(f"an `env` probe printed no environment: {out[:200]!r}")
            if secret in out or "OPENAI_API_KEY" in out:
                f.problem("an agent's command saw the API key in its environment")
    return f


def _check_git_and_store(
    f: Findings,
    con: duckdb.DuckDBPyConnection,
    repo: Path,
    branch: str,
    home: Path,
    run_ids: list[str],
) -> None:
    tip = branch_tip(repo, branch)
    if tip is None:
        f.problem(f"branch {branch} does not exist in {repo}")
        return
    f.facts["tip"] = tip
    # devswarm's private clone(s) of this repository must hold the same tip (all published).
    for clone in Path(home).glob("repos/*/clone"):
        theirs = branch_tip(clone, branch)
        if theirs is not None and theirs != tip:
            f.problem(f"the clone's {branch} is {theirs[:12]}, the user's is {tip[:12]}")

    on_branch = trailers_with_reverts(repo, tip)
    standing, twice = landings_per_task(on_branch)
    if twice:
        f.problem(f"tasks landed more than once: {twice}")
    f.facts["commits_with_trailers"] = sum(1 for _c, _r, task, _v in on_branch if task)
    f.facts["reverts"] = sum(1 for *_x, revert in on_branch if revert)

    marks = ",".join("?" * len(run_ids)) or "NULL"
    reported: set[str] = set()
    for sql in (
        f"SELECT commit_sha FROM tasks WHERE status = 'landed' AND run_id IN ({marks})",
        f"SELECT commit_sha FROM landings WHERE status = 'landed' AND run_id IN ({marks})",
        f"SELECT new_tip FROM landings WHERE status = 'landed' AND run_id IN ({marks})",
        f"SELECT tip_commit FROM runs WHERE run_id IN ({marks})",
    ):
        reported |= {r[0] for r in con.execute(sql, run_ids).fetchall() if r[0]}
    lost = sorted(c[:12] for c in reported if not reachable(repo, c, tip))
    if lost:
        f.problem(f"commits reported landed but not reachable from {branch}: {lost}")
    f.facts["reported_commits"] = len(reported)

    for run_id in run_ids:
        landed_db = {
            r[0]
            for r in con.execute(
                "SELECT task_key FROM tasks WHERE run_id = ? AND status = 'landed'", [run_id]
            ).fetchall()
        }
        landed_git = {task for (run, task), up in standing.items() if run == run_id and up}
        if landed_db != landed_git:
            f.problem(
                f"run {run_id}: DuckDB says landed {sorted(landed_db - landed_git)} not on the "
                f"branch; on the branch but not landed in DuckDB {sorted(landed_git - landed_db)}"
            )
        for task_key, status, reason in con.execute(
            "SELECT task_key, status, reason FROM tasks WHERE run_id = ?", [run_id]
        ).fetchall():
            if status in UNSETTLED:
                f.problem(f"run {run_id}: task {task_key} never settled (status {status})")
            elif status not in SETTLED_WITHOUT_REASON and not (reason or "").strip():
                f.problem(f"run {run_id}: task {task_key} ended {status} without a reason")
        f.facts.setdefault("landed", 0)
        f.facts["landed"] += len(landed_db)
        f.facts.setdefault("tasks", 0)
        f.facts["tasks"] += con.execute(
            "SELECT count(*) FROM tasks WHERE run_id = ?", [run_id]
        ).fetchone()[0]


def _check_model_calls(
    f: Findings,
    con: duckdb.DuckDBPyConnection,
    run_ids: list[str],
    requests: list[dict],
    optional: Iterable[dict],
    request_timeout: float,
) -> None:
    def ours(line: dict) -> bool:
        return any(f"/{r}/" in f"{line['agent']}/" for r in run_ids)

    marks = ",".join("?" * len(run_ids)) or "NULL"
    rows = con.execute(
        "SELECT agent_id, step, attempt, error_type, http_status, input_tokens, output_tokens "
        f"FROM model_calls WHERE run_id IN ({marks})",
        run_ids,
    ).fetchall()
    recorded = Counter(_row_key(*r) for r in rows)
    required = Counter(_log_key(line, request_timeout) for line in requests if ours(line))
    maybe = Counter(_log_key(line, request_timeout) for line in optional if ours(line))
    missing = required - recorded
    extra = recorded - required - maybe
    if missing:
        f.problem(
            f"{sum(missing.values())} model calls the server answered have no model_calls "
            f"row, e.g. {sorted(missing)[:3]}"
        )
    if extra:
        f.problem(
            f"{sum(extra.values())} model_calls rows match no request the server logged, "
            f"e.g. {sorted(extra, key=str)[:3]}"
        )
    f.facts["model_calls"] = len(rows)
    f.facts["input_tokens"] = sum(r[5] or 0 for r in rows)
    f.facts["output_tokens"] = sum(r[6] or 0 for r in rows)
    f.facts["failed_attempts"] = sum(1 for r in rows if r[3] or (r[4] or 200) >= 400)


def _check_secret(
    f: Findings,
    home: Path,
    db: Path,
    repo: Path,
    secret: str,
    output: str,
    scan: Iterable[Path],
    run_ids: list[str],
    prefect: bool,
) -> None:
    assert len(secret) >= 12, "use a distinctive key, or the search proves nothing"
    for path in sorted({db, *Path(home).rglob("*.duckdb")}):
        if path.exists():
            for hit in secret_in_duckdb(path, secret):
                f.problem(f"the API key is in DuckDB: {hit}")
    for hit in secret_in_files([home, *scan], secret):
        f.problem(f"the API key is in a file: {hit}")
    for where in [repo, *Path(home).glob("repos/*/clone")]:
        if secret in git(where, "log", "--all", "-p", "--format=%H %B"):
            f.problem(f"the API key is in the git history of {where}")
    if secret in output:
        f.problem("the API key is in the captured output")
    if prefect:
        flow_runs = prefect_flow_runs(run_ids)
        f.facts["prefect_flow_runs"] = len(flow_runs)
        if not flow_runs:
            f.problem(f"Prefect has no flow run named swarm: {run_ids}")
        texts = prefect_texts(flow_runs)
        f.facts["prefect_artifacts"] = len(texts["artifacts"])
        f.facts["prefect_logs"] = len(texts["logs"])
        for kind, items in texts.items():
            if any(secret in t for t in items):
                f.problem(f"the API key is in Prefect's {kind}")


def assert_sound(**kwargs: Any) -> dict[str, Any]:
    """`check`, failing with every problem at once; returns the facts when sound."""
    found = check(**kwargs)
    assert not found.problems, "the drill checker found problems:\n- " + "\n- ".join(found.problems)
    return found.facts
