"""The swarm's plain-Python core: a Run and the three jobs of a cycle (plan, work, judge).

Prefect wraps these in flows (flows/) and the model call in a task (tasks/); everything here can
be called directly by a test with a plain model function.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import secrets
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, SecretStr

from devswarm.agent.loop import Agent, ModelFn, Outcome
from devswarm.config import SwarmConfig
from devswarm.errors import UserError
from devswarm.git.workspace import (
    ConflictError,
    LandResult,
    RemoteWorkspace,
    Workspace,
    check_branch_name,
)
from devswarm.model.client import ModelCallError, ModelClient
from devswarm.model.ledger import Ledger
from devswarm.records import RecordLog, current_flow_run_id, now, span_id
from devswarm.roles import prompts
from devswarm.sandbox.command import run_command
from devswarm.sandbox.env import command_env
from devswarm.sandbox.probe import require_sandbox
from devswarm.schemas import (
    CheckResult,
    Plan,
    PlannedTask,
    Verdict,
    WorkerReport,
    slug,
    validate_plan,
)
from devswarm.store.store import Store, is_busy, publish_run, run_store_path
from devswarm.tools.toolbox import Toolbox

CallFactory = Callable[["Run", str], ModelFn]  # (run, agent_id) -> model function
LandFn = Callable[[Workspace, Path], LandResult]

_RUNS: dict[str, Run] = {}
_LISTENERS: list[Callable[[str], None]] = []  # the CLI's live panel / event printer
_RUNS_LOCK = threading.Lock()
_log = logging.getLogger("devswarm")
_SANDBOX_NOTICED: set[str] = set()  # run ids told "no bubblewrap" (the CLI builds a probe Run too)


class RunState(BaseModel):
    """What a run must remember across a crash: the tips it planned from and finished cycles."""

    cycle_tips: dict[int, str] = {}
    cycles: list[dict[str, Any]] = []
    last_green: str | None = None
    hot_files: dict[str, int] = {}

    @classmethod
    def load(cls, path: Path) -> RunState:
        return cls.model_validate_json(path.read_text()) if path.exists() else cls()

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(self.model_dump_json(indent=1))
        os.replace(tmp, path)


@contextlib.contextmanager
def drain_on_signals(announce: Callable[[str], None] | None = None):
    """SIGINT/SIGTERM drain every run of this process (no new workers, running ones stop at their
    next step, everything recorded); a second signal aborts. Main thread only (signals' rule).

    Inside a flow this replaces Prefect's SIGTERM bridge, so cancelling a deployment's run from
    the UI (the runner sends SIGTERM) drains the swarm instead of killing it mid-landing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    hits = 0

    def handler(signum: int, _frame: Any) -> None:
        nonlocal hits
        hits += 1
        if hits > 1:
            raise KeyboardInterrupt
        for run in list(_RUNS.values()):
            run.stop(f"stopped by {signal.Signals(signum).name}")
        if announce:
            announce("draining: running workers stop at their next step; signal again to abort")

    old = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, previous in old.items():
            signal.signal(sig, previous)


_KEYS: dict[str, SecretStr] = {}  # API keys handed from the CLI to the flow in this process


def hand_over_key(run_name: str | None, key: SecretStr) -> None:
    """Give a run's API key to its flow without making it a (stored) flow parameter."""
    if run_name and key.get_secret_value():
        _KEYS[run_name] = key


def take_key(run_name: str | None) -> SecretStr | None:
    return _KEYS.pop(run_name, None) if run_name else None


def get_run(run_id: str) -> Run:
    """The live Run of this process (flows pass run ids, not objects, between runs)."""
    try:
        return _RUNS[run_id]
    except KeyError:
        raise RuntimeError(f"run {run_id} is not active in this process") from None


def new_run_name(repo: Path) -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return f"{slug(repo.name, 24)}-{stamp}-{secrets.token_hex(2)}"


def safe_name(agent_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", agent_id)


def plain_calls(run: Run, agent_id: str, *, attempts: int = 4) -> ModelFn:
    """A model function without Prefect: retries transient failures, honouring Retry-After."""
    log = run.agent_log(agent_id)

    def call(request: dict[str, Any], step: int) -> dict[str, Any]:
        for attempt in range(1, attempts + 1):
            try:
                return run.client.chat(
                    request,
                    run_id=run.run_id,
                    agent_id=agent_id,
                    step=step,
                    attempt=attempt,
                    log=log,
                )
            except ModelCallError as exc:
                if not exc.transient or attempt == attempts:
                    raise
                time.sleep(min(exc.retry_after or 0.5 * 2**attempt, 60))
        raise AssertionError("unreachable")

    return call


class Run:
    """Everything one swarm run holds: config, workspace, ledger, model client, record files."""

    def __init__(self, config: SwarmConfig, *, worker_clones: Path | None = None) -> None:
        if not config.goal.strip():
            raise UserError("the goal is empty; give --goal TEXT or --goal-file FILE")
        repo = config.repo.expanduser().resolve()
        self.config = config
        self.run_id = config.run_name or new_run_name(repo)
        self.branch = check_branch_name(config.branch or f"devswarm/{self.run_id}")
        self.dir = config.home / "runs" / self.run_id
        self.workspace: Workspace
        if worker_clones is None:
            self.workspace = Workspace(repo, config.home / "repos" / _repo_key(repo), self.branch)
        elif not config.remote:
            raise UserError("a worker process needs the shared remote (config.remote)")
        else:
            self.workspace = RemoteWorkspace(
                config.remote, worker_clones / _repo_key(Path(config.remote)), self.branch
            )
        self.workspace.prune()
        self.sandbox_notice = _sandbox_notice(config.use_bwrap)
        with _RUNS_LOCK:  # once per run, through logging (stderr; Prefect's console)
            tell = self.sandbox_notice is not None and self.run_id not in _SANDBOX_NOTICED
            _SANDBOX_NOTICED.add(self.run_id)
        if tell:
            _log.warning(self.sandbox_notice)
        self.ledger = Ledger(
            config.budget.max_tokens, config.budget.max_cost_usd, config.budget.max_wall_seconds
        )
        models = {config.models.planner, config.models.worker, config.models.judge}
        self.client = ModelClient(
            config.base_url,
            config.api_key,
            timeout=config.request_timeout,
            prices={m: config.price(m) for m in models},
            fallback_price=config.budget.fallback_price,
            ledger=self.ledger,
            max_in_flight=config.max_model_calls_at_once,
        )
        self.unpriced = sorted(m for m in models if config.price(m) is None)
        self.secrets = [s for s in [config.api_key.get_secret_value()] if s]
        self.log = RecordLog(self.dir / "records" / "swarm.jsonl")
        self.hot_files: Counter[str] = Counter()
        self.stop_reason: str | None = None
        self.started_at = now()
        self.starts: dict[str, str] = {}  # agent id or task key -> when it started
        self.state = RunState.load(self.dir / "state.json")
        if worker_clones is None:  # planners use them; a worker process has no user repository
            self.hot_files.update(
                self.state.hot_files or self._earlier_hot_files(self.workspace.user_repo)
            )
        self.stats: Counter[str] = Counter()  # live counters for the panel and the event lines
        self.listeners: list[Callable[[str], None]] = list(_LISTENERS)
        self._task_keys: set[str] = set()
        self._check_cache: dict[str, CheckResult] = {}
        self._check_locks: dict[str, threading.Lock] = {}
        self.setup_cache: dict[str, CheckResult] = {}  # base commit -> first setup result there
        self._setup_locks: dict[str, threading.Lock] = {}
        # False once the server refused response_format: later agents put the schema in the prompt.
        self.structured_output = True
        # The request field capping an answer: switched for the whole run once a server refuses it.
        self.output_limit = "max_tokens"
        self._lock = threading.Lock()
        self._logs: dict[str, RecordLog] = {}
        # One writer of the run's DuckDB file at a time in this process; records imported in
        # the background (import_soon) so the scheduler's loop never waits on DuckDB.
        self._import_lock = threading.RLock()
        self._import_queue: dict[Path, None] = {}
        self._importer: threading.Thread | None = None
        self._imported: dict[Path, tuple[int, int]] = {}  # file -> (size, mtime) at its import
        self.dir.mkdir(parents=True, exist_ok=True)
        if worker_clones is None:  # the orchestrator's files; a worker process leaves them be
            (self.dir / "STOP").unlink(missing_ok=True)  # a resume starts anew
            (self.dir / "config.json").write_text(
                config.model_dump_json(indent=1, exclude={"api_key"})
            )
        with _RUNS_LOCK:
            _RUNS[self.run_id] = self

    @classmethod
    def for_worker(cls, config: SwarmConfig, clones: Path) -> Run:
        """The Run of a worker process (--executor deployment), built from the orchestrator's
        config: it lands through the shared remote `config.remote` from a clone under `clones`,
        writes only its agents' records, and never touches the user's repository."""
        return cls(config, worker_clones=clones)

    def _earlier_hot_files(self, repo: Path) -> Counter[str]:
        """Conflicts per file from earlier runs on this repository (planners keep them apart)."""
        hot: Counter[str] = Counter()
        if not self.config.db_path.exists():
            return hot
        try:
            from devswarm.store.store import open_readonly

            store = open_readonly(self.config.db_path)
            try:
                _, found = store.query(
                    "SELECT l.conflict_files FROM landings l JOIN runs r USING (run_id)"
                    " WHERE r.repo_path = ? AND l.status = 'conflict'",
                    [str(repo)],
                )
            finally:
                store.close()
        except Exception:  # the history is a hint; a busy or old store must not stop a run
            return hot
        for (files,) in found:
            hot.update(json.loads(files or "[]"))
        return hot

    def unique_task_key(self, key: str) -> str:
        """Task keys are unique in a run (follow-ups may reuse an id)."""
        with self._lock:
            base, n = key, 1
            while key in self._task_keys:
                n += 1
                key = f"{base}-{n}"
            self._task_keys.add(key)
            return key

    def cycle_base(self, cycle: int) -> str:
        """The tip a cycle plans against: recorded once, so a resumed run plans from the same state."""
        with self._lock:
            self.starts.setdefault(f"cycle-{cycle}", now())
            if cycle not in self.state.cycle_tips:
                self.state.cycle_tips[cycle] = self.workspace.tip()
                self.state.save(self.dir / "state.json")
            return self.state.cycle_tips[cycle]

    def landed_task_keys(self) -> set[str]:
        """Tasks of this run already on the branch, from the commits' trailers (resume)."""
        return {
            t["task"]
            for t in self.workspace.landed_trailers()
            if t.get("run") == self.run_id and t.get("task")
        }

    # -- events -----------------------------------------------------------------------------

    def emit(self, line: str) -> None:
        """One event line for whoever watches (the live panel, CI logs)."""
        for listener in self.listeners:
            try:
                listener(line)
            except Exception:
                pass

    def bump(self, key: str, n: int = 1) -> None:
        with self._lock:
            self.stats[key] += n

    def count_report(self, report: WorkerReport) -> None:
        with self._lock:
            self.stats[report.status] += 1
            self.stats["conflicts"] += report.conflicts

    def finish_cycle(self, cycle: int, verdict: Verdict, reports: list[WorkerReport]) -> None:
        """Record the cycle and what the next one starts from (a summary, not transcripts)."""
        tip = self.workspace.tip()
        check = self.check_at(tip)
        if check is None or check.passed:
            self.state.last_green = tip
        summary = [f"Judge: {verdict.decision} — {verdict.reasons}"]
        summary += [
            f"- {r.task_key}: {r.status}" + (f" — {r.handoff[:400]}" if r.handoff else "")
            for r in reports
        ]
        if check is not None and not check.passed:
            summary.insert(
                0,
                prompts.red_tip(
                    self.config.check or "",
                    check.output[-3000:],
                    self._commits_since(self.state.last_green),
                ),
            )
        self.state.cycles.append(
            {
                "cycle": cycle,
                "decision": verdict.decision,
                "summary": "\n".join(summary),
                "tip": tip,
            }
        )
        self.state.hot_files = dict(self.hot_files)
        self.state.save(self.dir / "state.json")
        self.log.write(
            "cycle",
            run_id=self.run_id,
            cycle=cycle,
            started_at=self.starts.get(f"cycle-{cycle}"),
            ended_at=now(),
            tip_before=self.state.cycle_tips.get(cycle),
            tip_after=tip,
            decision=verdict.decision,
            reasons=verdict.reasons,
            score=verdict.score,
            label=verdict.decision,
            check_passed=None if check is None else check.passed,
            span_id=span_id(self.run_id, str(cycle)),
            parent_span_id=span_id(self.run_id),
        )
        self.import_records()

    def _commits_since(self, green: str | None) -> list[str]:
        rev = f"{green or self.workspace.base_commit}..{self.workspace.tip()}"
        return [
            f"{t['commit'][:10]} {t.get('subject') or ''} (task {t.get('task')})"
            for t in self.workspace.landed_trailers(rev)
        ]

    def final_status(self, verdict: Verdict | None) -> str:
        if self.ledger.exhausted in {"tokens", "cost", "wall_time", "cycles"} and (
            verdict is None or verdict.decision != "done"
        ):
            return "budget_exhausted"
        if self.stop_reason:
            return "stopped"
        if verdict is None:
            return "budget_exhausted" if self.ledger.exhausted else "stopped"
        return {"done": "done", "stop": "stopped"}.get(verdict.decision, "budget_exhausted")

    # -- records ----------------------------------------------------------------------------

    def agent_log(self, agent_id: str) -> RecordLog:
        with self._lock:
            if agent_id not in self._logs:
                self._logs[agent_id] = RecordLog(
                    self.dir / "records" / f"{safe_name(agent_id)}.jsonl"
                )
            return self._logs[agent_id]

    def transcript(self, agent_id: str) -> Path:
        return self.dir / "transcripts" / f"{safe_name(agent_id)}.jsonl"

    def record_run(self, status: str, cycles: int, flow_run_id: str | None = None) -> None:
        self.log.write(
            "run",
            run_id=self.run_id,
            run_name=self.run_id,
            goal=self.config.goal,
            repo_path=str(self.workspace.user_repo),
            branch=self.branch,
            base_commit=self.workspace.base_commit,
            tip_commit=self.workspace.tip(),
            status=status,
            started_at=self.started_at,
            ended_at=None if status == "running" else now(),
            cycles=cycles,
            flow_run_id=flow_run_id,
            config=self.config.model_dump_json(exclude={"api_key"}),
        )

    @property
    def store_path(self) -> Path:
        """This run's own DuckDB file (one writer per file); merged into the warehouse at the end."""
        return run_store_path(self.config.db_path, self.run_id)

    def publish(self) -> Path | None:
        """Merge this run's file into the warehouse and write its HTML report; returns the
        report's path. Never raises: the end of a run must not fail on either."""
        try:
            publish_run(self.config.db_path, self.store_path)
        except Exception as exc:
            _log.warning("run %s not merged into %s: %s", self.run_id, self.config.db_path, exc)
        try:
            from devswarm.report.report import write_html_report

            return write_html_report(self.config.db_path, self.run_id, self.dir / "report.html")
        except Exception as exc:
            _log.warning("no HTML report for run %s: %s", self.run_id, exc)
            return None

    def import_records(self, paths: list[Path] | None = None) -> int:
        """Import agents' JSONL files into DuckDB (idempotent), retrying while another process
        writes. Files unchanged since their last import are skipped (records only grow)."""
        records = self.dir / "records"
        files = paths if paths is not None else sorted(records.glob("*.jsonl"))
        with self._import_lock:
            stamps = {p: _stamp(p) for p in files if p.exists()}
            files = [p for p, st in stamps.items() if self._imported.get(p) != st]
            for attempt in range(50):
                try:
                    with Store(self.store_path) as store:
                        n = sum(store.import_jsonl(p) for p in files)
                    self._imported.update((p, stamps[p]) for p in files)
                    return n
                except Exception as exc:  # another process (a reader) holds the file a moment
                    if not is_busy(exc) or attempt == 49:
                        raise
                    time.sleep(0.1 + 0.05 * attempt)
        return 0

    def import_soon(self, paths: list[Path]) -> None:
        """Import these files on a background thread (batched with whatever else is queued):
        the scheduler's loop goes straight back to starting workers. import_records() waits
        for a batch in progress, so the run's final import still sees everything."""
        with self._lock:
            self._import_queue.update(dict.fromkeys(paths))
            if self._importer is None:
                self._importer = threading.Thread(
                    target=self._import_queued, name="records-import", daemon=True
                )
                self._importer.start()

    def _import_queued(self) -> None:
        while True:
            with self._lock:
                batch = list(self._import_queue)
                self._import_queue.clear()
                if not batch:
                    self._importer = None
                    return
            try:
                self.import_records(batch)
            except Exception as exc:  # the import at the end of the run tries them all again
                _log.warning("records of run %s not imported yet: %s", self.run_id, exc)

    # -- stop -------------------------------------------------------------------------------

    def stop(self, reason: str) -> None:
        self.stop_reason = self.stop_reason or reason
        self.ledger.stop(reason)

    def should_stop(self) -> str | None:
        if self.stop_reason:
            return self.stop_reason
        if (self.dir / "STOP").exists():
            self.stop("stop requested")
        return self.stop_reason or self.ledger.exhausted

    def close(self) -> None:
        with _RUNS_LOCK:
            _RUNS.pop(self.run_id, None)

    # -- checks -----------------------------------------------------------------------------

    def env(self) -> dict[str, str]:
        return command_env(secrets=self.secrets)

    def run_check(self, command: str, cwd: Path, *, sandboxed: bool = True) -> CheckResult:
        """Run a shell check in a worktree (sandboxed: agents' code runs in it)."""
        result = run_command(
            command,
            cwd,
            timeout=self.config.command_timeout,
            env=self.env(),
            sandbox=self.config.use_bwrap is not False and sandboxed,
            hidden=[self.config.home],
        )
        return CheckResult(
            command=command,
            passed=result.exit_code == 0 and not result.timed_out,
            exit_code=result.exit_code,
            output=result.output,
        )

    def check_at(self, commit: str) -> CheckResult | None:
        """The repository check at a commit, run once per commit in a scratch worktree."""
        command = self.config.check
        if not command:
            return None
        with self._lock:
            lock = self._check_locks.setdefault(commit, threading.Lock())
        with lock:
            if commit not in self._check_cache:
                wt = self.workspace.add_worktree(
                    f"check-{commit[:12]}-{threading.get_ident()}", commit
                )
                try:
                    self._setup(wt, commit)
                    self._check_cache[commit] = self.run_check(command, wt)
                finally:
                    self.workspace.remove_worktree(wt)
            return self._check_cache[commit]

    def _setup(self, worktree: Path, base: str) -> CheckResult | None:
        """The setup command in a fresh worktree at commit `base`.

        What a setup makes (a venv, node_modules, a build) lives in the worktree, so a passing
        setup runs again in every worktree. A failing one is cached per base commit: the same
        commit fails the same way, so later workers report it at once; and the first setup of
        a commit runs alone, so a broken setup runs once, not once per worker.
        """
        if not self.config.setup:
            return None
        with self._lock:
            lock = self._setup_locks.setdefault(base, threading.Lock())
        with lock:
            first = self.setup_cache.get(base)
            if first is None:
                self.setup_cache[base] = first = self._run_setup(worktree)
                return first
        return first if not first.passed else self._run_setup(worktree)

    def _run_setup(self, worktree: Path) -> CheckResult:
        # The user's own setup (e.g. pip install) may need the network: not sandboxed.
        return self.run_check(self.config.setup or "", worktree, sandboxed=False)


def _stamp(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns


def _sandbox_notice(use_bwrap: bool | None) -> str | None:
    """What to say once per run when agents' commands run without a sandbox (only when turned
    off); a sandbox that does not work here is refused with its cause and fix."""
    if use_bwrap is not False:
        require_sandbox()
        return None
    return (
        "bubblewrap is turned off (use_bwrap=False): agents' commands run without a sandbox, "
        "with network access and write access to everything this user can write "
        "(see docs/sandbox.md)"
    )


def _repo_key(repo: Path) -> str:
    return f"{slug(repo.name, 24)}-{span_id(str(repo))[:8]}"


# -- plan -----------------------------------------------------------------------------------


def planner_id(run: Run, cycle: int, plan_path: str) -> str:
    return f"planner/{run.run_id}/c{cycle}/{plan_path}"


def plan_scope(
    run: Run,
    calls: CallFactory,
    *,
    cycle: int,
    plan_path: str,
    goal: str,
    scope_paths: list[str],
    depth: int,
    previous: str | None = None,
) -> tuple[Plan, list[PlannedTask]]:
    """One planner explores the cycle's tip read-only and returns its Plan and the tasks it owns."""
    cfg = run.config
    allow_scopes = depth < cfg.plan_depth
    return _planner(
        run,
        calls,
        agent_id=planner_id(run, cycle, plan_path),
        cycle=cycle,
        plan_path=plan_path,
        tip=run.cycle_base(cycle),
        scope_paths=scope_paths,
        allow_scopes=allow_scopes,
        system=prompts.planner_system(cfg.max_tasks_per_plan, allow_scopes, cfg.max_scopes),
        user=prompts.planner_user(goal, scope_paths, cfg.check, previous, dict(run.hot_files)),
    )


def plan_followups(
    run: Run, calls: CallFactory, task: PlannedTask, report: WorkerReport
) -> list[PlannedTask]:
    """The planner that owns a task reads its worker's handoff and may add follow-up tasks."""
    _plan, tasks = _planner(
        run,
        calls,
        agent_id=f"{task.planner_agent_id}/followup-{task.spec.id}",
        cycle=task.cycle,
        plan_path=task.plan_path,
        tip=run.workspace.tip(),
        scope_paths=[],
        allow_scopes=False,
        system=prompts.planner_system(run.config.max_followup_tasks, False),
        user=prompts.followup_user(run.config.goal, task, report),
    )
    return tasks


def _planner(
    run: Run,
    calls: CallFactory,
    *,
    agent_id: str,
    cycle: int,
    plan_path: str,
    tip: str,
    scope_paths: list[str],
    allow_scopes: bool,
    system: str,
    user: str,
) -> tuple[Plan, list[PlannedTask]]:
    cfg = run.config
    log = run.agent_log(agent_id)
    _agent_row(run, log, agent_id, "planner", cycle, plan_path, None, cfg.models.planner, "running")
    wt = run.workspace.add_worktree(safe_name(agent_id), tip)
    plan: Plan | None = None
    run.bump("planning")
    try:
        agent = Agent(
            agent_id=agent_id,
            run_id=run.run_id,
            role="planner",
            model=cfg.models.planner,
            call=calls(run, agent_id),
            toolbox=Toolbox(wt, read_only=True),
            system=system,
            user=user,
            limits=cfg.limits,
            log=log,
            transcript=run.transcript(agent_id),
            answer_schema=Plan,
            should_stop=run.should_stop,
            structured_output=run.structured_output,
            output_limit=run.output_limit,
        )
        for turn in range(2):  # an invalid plan goes back to the planner once, with the errors
            outcome = agent.run()
            if outcome.status != "finished" or outcome.answer is None:
                break
            plan = Plan.model_validate(outcome.answer)
            # The depth limit and the fan-out bound recursion: extra scopes are dropped.
            plan.scopes = plan.scopes[: cfg.max_scopes] if allow_scopes else []
            errors = validate_plan(plan, scope_paths)
            if not errors:
                break
            if turn == 0:
                agent.tell(prompts.invalid_plan(errors))
            else:
                plan = _repair(plan, errors)
        run.structured_output = run.structured_output and agent.structured_output
        run.output_limit = agent.output_limit
    finally:
        run.bump("planning", -1)
        run.client.slots.done(agent_id)
        run.workspace.remove_worktree(wt)
    _agent_end(log, agent_id, agent.outcome)
    if plan is None:
        return Plan(summary=f"planner ended: {agent.outcome.status} {agent.outcome.reason}"), []
    tasks: list[PlannedTask] = []
    keys = {t.id: run.unique_task_key(f"c{cycle}.{plan_path}.{t.id}") for t in plan.tasks}
    for spec in plan.tasks[: cfg.max_tasks_per_plan]:
        task = PlannedTask(
            spec=spec,
            key=keys[spec.id],
            cycle=cycle,
            plan_path=plan_path,
            planner_agent_id=agent_id,
            base_commit=tip,
            check=spec.check,
            depends_on=[keys[d] for d in spec.depends_on if d in keys],
        )
        tasks.append(task)
        _task_row(run, task, "pending")
    run.bump("planned", len(tasks))
    return plan, tasks


def _repair(plan: Plan, errors: list[str]) -> Plan:
    """Still invalid after a second try: keep what is sound (first of each id, no bad edges, no scopes)."""
    seen: set[str] = set()
    tasks = []
    for t in plan.tasks:
        if t.id not in seen:
            seen.add(t.id)
            tasks.append(t)
    for t in tasks:
        t.depends_on = [d for d in t.depends_on if d in seen and d != t.id]
    fixed = Plan(summary=plan.summary, tasks=tasks, scopes=[])
    if validate_plan(fixed):  # a dependency cycle remains: drop the dependencies
        for t in fixed.tasks:
            t.depends_on = []
    return fixed


# -- work -----------------------------------------------------------------------------------


def worker_id(run: Run, task: PlannedTask, attempt: int = 1) -> str:
    return f"worker/{run.run_id}/c{task.cycle}/{task.plan_path}/{task.spec.id}/a{attempt}"


def _land_plain(workspace: Workspace, worktree: Path) -> LandResult:
    return workspace.land(worktree)


def work_task(
    run: Run, calls: CallFactory, task: PlannedTask, *, attempt: int = 1, land: LandFn = _land_plain
) -> WorkerReport:
    """One worker: worktree at the task's base → agent → checks → commit → land → report."""
    cfg = run.config
    agent_id = worker_id(run, task, attempt)
    log = run.agent_log(agent_id)
    report = WorkerReport(
        task_key=task.key, agent_id=agent_id, status="error", records=str(log.path)
    )
    _agent_row(
        run,
        log,
        agent_id,
        "worker",
        task.cycle,
        task.plan_path,
        task.key,
        cfg.models.worker,
        "running",
    )
    _task_row(run, task, "running", worker=agent_id, attempts=attempt, started=True)
    outcome: Outcome | None = None
    wt: Path | None = None
    landed: LandResult | None = None
    run.bump("working")
    try:
        if reason := run.should_stop():
            report.status, report.reason = "skipped", f"not started: {reason}"
            return report
        wt = run.workspace.add_worktree(safe_name(agent_id), task.base_commit)
        setup = run._setup(wt, task.base_commit)
        if setup is not None and not setup.passed:
            report.status, report.reason = (
                "setup_failed",
                f"setup `{setup.command}` failed: {setup.output[-2000:]}",
            )
            return report
        agent = Agent(
            agent_id=agent_id,
            run_id=run.run_id,
            role="worker",
            model=cfg.models.worker,
            call=calls(run, agent_id),
            toolbox=Toolbox(
                wt,
                command_timeout=cfg.command_timeout,
                env=run.env(),
                use_bwrap=cfg.use_bwrap,
                secrets=run.secrets,
                hidden=[cfg.home],
            ),
            system=prompts.WORKER,
            user=prompts.worker_user(task, ""),
            limits=cfg.limits,
            log=log,
            transcript=run.transcript(agent_id),
            should_stop=run.should_stop,
            output_limit=run.output_limit,
        )
        outcome = agent.run()
        run.output_limit = agent.output_limit
        landed = _finish_work(run, agent, task, wt, report, land)
        outcome = agent.outcome
    except ModelCallError as exc:
        report.status, report.reason = "error", f"model call failed: {exc}"
    finally:
        run.bump("working", -1)
        run.client.slots.done(agent_id)
        if wt is not None:
            # What landed (the worktree may hold others' changes after a conflict turn), else
            # what the worker changed.
            if landed is not None and landed.old_tip and landed.new_tip:
                report.diff_stat = _diff_stat(run, wt, landed.old_tip, landed.new_tip)
            else:
                report.diff_stat = _diff_stat(run, wt, task.base_commit)
            run.workspace.remove_worktree(wt)
        if outcome is not None:
            report.input_tokens, report.output_tokens = outcome.input_tokens, outcome.output_tokens
            report.cost_usd = round(outcome.cost_usd, 6)
        if outcome is not None and outcome.finish:
            report.handoff = _handoff(outcome.finish)
        elif not report.handoff:
            report.handoff = report.reason or ""
        _agent_end(log, agent_id, outcome, report)
        _task_row(
            run,
            task,
            report.status,
            worker=agent_id,
            attempts=attempt,
            reason=report.reason,
            commit=report.commit,
            ended=True,
        )
    return report


def _finish_work(
    run: Run, agent: Agent, task: PlannedTask, wt: Path, report: WorkerReport, land: LandFn
) -> LandResult | None:
    """After the agent finishes: checks (with turns back to the agent), commit, land, conflicts.
    The landing when it landed."""
    cfg = run.config
    ws = run.workspace
    check_turns = conflict_turns = 0
    while True:
        o = agent.outcome
        if o.status != "finished":
            report.status, report.reason = o.status, o.reason
            return
        # The task's own check, then the repository check in no-regression mode.
        failure: str | None = None
        if task.check:
            res = run.run_check(task.check, wt)
            if not res.passed:
                failure = prompts.check_failed(task.check, res.output)
                report.reason = f"task check `{task.check}` failed"
        if failure is None and cfg.check:
            before = run.check_at(task.base_commit)
            if before is not None and before.passed:
                res = run.run_check(cfg.check, wt)
                if not res.passed:
                    failure = prompts.regression(cfg.check, res.output)
                    report.reason = f"the change turns the passing check `{cfg.check}` red"
        if failure is not None:
            if check_turns >= cfg.check_turns:
                report.status = "failed"
                return
            check_turns += 1
            agent.tell(failure)
            agent.run()
            continue
        try:
            sha = ws.commit(wt, _commit_message(task), _trailers(run, task, report.agent_id))
        except ConflictError as exc:  # the agent finished with conflict markers left
            if conflict_turns > cfg.conflict_turns:
                report.status, report.reason = (
                    "abandoned",
                    f"conflict markers left in {', '.join(exc.files)}",
                )
                return
            conflict_turns += 1
            agent.tell(prompts.conflict(exc.files, []))
            agent.run()
            continue
        if sha is None and not _ahead(ws, wt, task.base_commit):
            report.status, report.reason = "failed", "the worker finished without changing anything"
            return
        started = now()
        result = land(ws, wt)
        _landing_row(run, task, report.agent_id, result, started, resolved=conflict_turns > 0)
        if result.status == "landed":
            report.status, report.commit, report.reason = "landed", result.new_tip, None
            report.conflicts = conflict_turns
            return result
        if result.status != "conflict":
            report.status, report.reason = "failed", f"landing {result.status}: {result.reason}"
            return
        for f in result.conflict_files:
            run.hot_files[f] += 1
        if conflict_turns >= cfg.conflict_turns:
            report.status, report.reason = (
                "abandoned",
                f"unresolved conflicts in {', '.join(result.conflict_files)}",
            )
            report.conflicts = conflict_turns + 1
            return
        conflict_turns += 1
        files = ws.begin_conflict(wt, ws.tip())
        if not files:  # the tip moved and the rebase went through cleanly this time
            continue
        agent.tell(prompts.conflict(files, result.their_commits))
        agent.run()


def _diff_stat(run: Run, wt: Path, base: str, commit: str | None = None) -> str:
    try:
        return run.workspace.diff_stat(wt, base, commit)
    except Exception:  # a report without a diff stat beats a lost report
        return ""


def _ahead(ws: Workspace, wt: Path, base: str) -> bool:
    return bool(ws.changed_files(wt, base))


def _commit_message(task: PlannedTask) -> str:
    return f"{task.spec.title}\n\n{task.spec.description.strip()}"[:4000]


def _trailers(run: Run, task: PlannedTask, agent_id: str) -> dict[str, str]:
    return {"Devswarm-Run": run.run_id, "Devswarm-Task": task.key, "Devswarm-Agent": agent_id}


def _handoff(finish: dict[str, Any]) -> str:
    parts = [str(finish.get("summary") or "").strip()]
    if finish.get("not_done"):
        parts.append(f"Not done: {finish['not_done']}")
    if finish.get("concerns"):
        parts.append(f"Concerns: {finish['concerns']}")
    return "\n".join(p for p in parts if p)


# -- judge ----------------------------------------------------------------------------------


def judge_cycle(
    run: Run, calls: CallFactory, *, cycle: int, reports: list[WorkerReport]
) -> tuple[Verdict, CheckResult | None]:
    """Run the full check on the tip and let the judge decide: continue, done or stop."""
    cfg = run.config
    agent_id = f"judge/{run.run_id}/c{cycle}"
    log = run.agent_log(agent_id)
    tip = run.workspace.tip()
    check = run.check_at(tip)
    _agent_row(run, log, agent_id, "judge", cycle, "", None, cfg.models.judge, "running")
    wt = run.workspace.add_worktree(safe_name(agent_id), tip)
    try:
        agent = Agent(
            agent_id=agent_id,
            run_id=run.run_id,
            role="judge",
            model=cfg.models.judge,
            call=calls(run, agent_id),
            toolbox=Toolbox(wt, read_only=True),
            system=prompts.JUDGE,
            user=prompts.judge_user(
                cfg.goal,
                cfg.check,
                check.passed if check else None,
                check.output[-4000:] if check else "",
                [
                    r.model_dump(include={"task_key", "status", "reason", "handoff"})
                    for r in reports
                ],
                {k: v for k, v in run.ledger.left().items() if k != "seconds"},
            ),
            limits=cfg.limits,
            log=log,
            transcript=run.transcript(agent_id),
            answer_schema=Verdict,
            should_stop=run.should_stop,
            structured_output=run.structured_output,
            output_limit=run.output_limit,
        )
        outcome = agent.run()
        run.structured_output = run.structured_output and agent.structured_output
        run.output_limit = agent.output_limit
    finally:
        run.client.slots.done(agent_id)
        run.workspace.remove_worktree(wt)
    _agent_end(log, agent_id, outcome)
    if outcome.answer is None:
        verdict = Verdict(
            decision="stop",
            reasons=f"the judge ended without a verdict: {outcome.status} {outcome.reason}",
        )
    else:
        verdict = Verdict.model_validate(outcome.answer)
    return verdict, check


# -- rows -----------------------------------------------------------------------------------


def _agent_row(
    run: Run,
    log: RecordLog,
    agent_id: str,
    role: str,
    cycle: int,
    plan_path: str,
    task_key: str | None,
    model: str,
    status: str,
) -> None:
    log.write(
        "agent",
        agent_id=agent_id,
        run_id=run.run_id,
        cycle=cycle,
        role=role,
        plan_path=plan_path,
        task_id=task_key,
        parent_agent_id=planner_id(run, cycle, plan_path) if role == "worker" else None,
        request_model=model,
        status=status,
        steps=0,
        started_at=run.starts.setdefault(agent_id, now()),
        flow_run_id=current_flow_run_id(),  # joins Prefect's history (devswarm history import)
        span_id=span_id(agent_id),
        parent_span_id=span_id(run.run_id, str(cycle)),
    )


def _agent_end(
    log: RecordLog, agent_id: str, outcome: Outcome | None, report: WorkerReport | None = None
) -> None:
    """The agent's end: only what changed (the import merges it into the row it started)."""
    log.write(
        "agent",
        agent_id=agent_id,
        status=report.status if report else (outcome.status if outcome else "error"),
        steps=outcome.steps if outcome else 0,
        ended_at=now(),
        handoff=(report.handoff if report else (outcome.reason if outcome else "")) or None,
    )


def _task_row(
    run: Run,
    task: PlannedTask,
    status: str,
    *,
    worker: str | None = None,
    attempts: int = 0,
    reason: str | None = None,
    commit: str | None = None,
    started: bool = False,
    ended: bool = False,
) -> None:
    log = run.agent_log(worker) if worker else run.agent_log(task.planner_agent_id)
    fields: dict[str, Any] = {
        "run_id": run.run_id,
        "task_id": task.key,
        "cycle": task.cycle,
        "planner_agent_id": task.planner_agent_id,
        "worker_agent_id": worker,
        "title": task.spec.title,
        "description": task.spec.description,
        "acceptance": "\n".join(task.spec.acceptance),
        "files": json.dumps(task.spec.files),
        "check_command": task.check,
        "depends_on": "[]",
        "status": status,
        "reason": reason,
        "attempts": attempts,
        "base_commit": task.base_commit,
        "commit_sha": commit,
    }
    if started:
        run.starts[task.key] = now()
    fields["started_at"] = run.starts.get(task.key)
    fields["ended_at"] = now() if ended else None
    log.write("task", **fields)


def _landing_row(
    run: Run, task: PlannedTask, agent_id: str, result: LandResult, started: str, *, resolved: bool
) -> None:
    run.agent_log(agent_id).write(
        "landing",
        landing_id=span_id(agent_id, "landing", started),
        run_id=run.run_id,
        cycle=task.cycle,
        task_id=task.key,
        agent_id=agent_id,
        branch=run.branch,
        commit_sha=result.new_tip if result.status == "landed" else result.commit,
        old_tip=result.old_tip,
        new_tip=result.new_tip,
        status=result.status,
        cas_retries=result.cas_retries,
        conflict_files=json.dumps(result.conflict_files),
        resolved=resolved and result.status == "landed",
        started_at=started,
        ended_at=now(),
        duration_ms=result.duration_ms,
        span_id=span_id(agent_id, "landing", started),
        parent_span_id=span_id(agent_id),
    )


def record_skip(run: Run, task: PlannedTask, reason: str) -> None:
    """A task that never started (a dependency failed, or the swarm is draining)."""
    _task_row(run, task, "skipped", reason=reason, ended=True)
    run.emit(f"{task.key}: skipped ({reason})")
