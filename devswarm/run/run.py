"""One swarm run: its configuration, workspace, budget, model client, records and state.

A Run is built once per process that takes part in the run (the orchestrator, or a worker
process with --executor deployment) and registered by id (devswarm.run.registry), so Prefect
flows, which pass ids, find it. The pieces it holds each have their own module: the checks
(run/checks.py), the record importer (run/importer.py), the live counters (run/progress.py)
and the crash-safe state (run/state.py).
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from devswarm.config import SwarmConfig
from devswarm.errors import UserError
from devswarm.git.plumbing import check_branch_name
from devswarm.git.remote import RemoteWorkspace
from devswarm.git.workspace import Workspace
from devswarm.ids import file_safe, landing_branch, new_run_id, repo_key
from devswarm.model.client import ModelClient, cache_key
from devswarm.model.errors import ModelCallError, backoff_seconds
from devswarm.model.ledger import BUDGETS, RUNNING_LOW, Ledger
from devswarm.records import RecordLog, now
from devswarm.run import registry
from devswarm.run.checks import Checks
from devswarm.run.importer import RecordImporter
from devswarm.run.progress import Progress
from devswarm.run.state import RunState, earlier_hot_files, load_spent, save_spent
from devswarm.run.story import Story
from devswarm.sandbox.env import command_env
from devswarm.sandbox.probe import NO_SANDBOX_NOTICE, sandbox_description
from devswarm.sandbox.redact import Redactor, process_secrets
from devswarm.schemas import PlannedTask, Verdict
from devswarm.server.folder import ROOT_DEFAULT_DIR, server_dir
from devswarm.store.warehouse import publish_run, run_store_path

if TYPE_CHECKING:
    from devswarm.verify.queue import MergeQueue
    from devswarm.verify.verifier import Verifier

if TYPE_CHECKING:
    from devswarm.scheduler import Scheduler

_log = logging.getLogger("devswarm")
LEDGER_FILE = "ledger.json"  # in the run's folder: what the run has spent (run/state.py)
ModelFn = Any  # devswarm.agent.loop.ModelFn: (request, step) -> reply


class Run:
    """Everything one swarm run holds: config, workspace, ledger, model client, record files."""

    def __init__(self, config: SwarmConfig, *, worker_clones: Path | None = None) -> None:
        if not config.goal.strip():
            raise UserError("the goal is empty; give --goal TEXT or --goal-file FILE")
        repo = config.repo.expanduser().resolve()
        key = repo_key(repo) if worker_clones is None else repo_key(Path(config.remote or ""))
        self.config = config
        self.run_id = config.run_id or new_run_id(repo)
        self.branch = check_branch_name(config.branch or landing_branch(self.run_id))
        self.dir = config.home / "runs" / self.run_id
        # The orchestrator owns the run folder's files (state.json, config.json); a worker
        # process (--executor deployment) only reads them.
        self.orchestrator = worker_clones is None
        self.workspace: Workspace
        if worker_clones is None:
            self.workspace = Workspace(repo, config.home / "repos" / key, self.branch)
        elif not config.remote:
            raise UserError("a worker process needs the shared remote (config.remote)")
        else:
            self.workspace = RemoteWorkspace(config.remote, worker_clones / key, self.branch)
        self.workspace.prune()
        self.sandbox = sandbox_description(config.sandbox)  # "on (...)" or "off (...)"
        self.sandbox_notice = None if config.sandbox else NO_SANDBOX_NOTICE
        if self.sandbox_notice and registry.first_time(self.run_id, "sandbox"):
            _log.warning(self.sandbox_notice)  # once per run (stderr; Prefect's console)
        budget = config.budget
        self._spent_lock = threading.Lock()
        if worker_clones is None:  # the orchestrator: the run's spend, kept across its processes
            self.ledger = Ledger(
                budget.max_tokens, budget.max_cost_usd, budget.max_wall_seconds,
                spent=load_spent(self.dir / LEDGER_FILE), on_settle=self.save_spent,
            )  # fmt: skip
        else:  # a worker process: its config's budget is what the run had left
            self.ledger = Ledger(budget.max_tokens, budget.max_cost_usd, budget.max_wall_seconds)
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
        # Every secret the run knows (the key, credentials in our environment), cleaned from
        # what agents' commands print before it is kept or sent to the model.
        self.redact = Redactor(process_secrets(self.secrets))
        self.log = RecordLog(self.dir / "records" / "swarm.jsonl")
        self.stop_reason: str | None = None
        self.unpublished: str | None = None  # why the branch did not reach the user's at the end
        self.started_at = now()
        self.starts: dict[str, str] = {}  # agent id or task key -> when it started
        self.state = RunState.load(self.dir / "state.json")
        self.progress = Progress(registry.listeners())
        self.story = Story(self.secrets)  # the run's log lines (run/story.py)
        self.ledger.on_budget = self._budget_news
        if worker_clones is None:  # planners use them; a worker process has no user repository
            self.progress.conflicted(
                self.state.hot_files or earlier_hot_files(config.db_path, self.workspace.user_repo)
            )
        self.checks = Checks(
            config,
            self.workspace,
            self.env,
            hidden=self.hidden,
            cache=config.home / "cache" / key,
            redact=self.redact,
        )
        self.records = RecordImporter(self.dir / "records", self.store_path, self.run_id)
        # What the endpoint accepts, learned earlier in this run (a resume, a worker process):
        # agents are built with it and nothing is paid for twice (devswarm.run.endpoint).
        for model, caps in self.state.capabilities.items():
            self.client.remember(model, caps)
        # Why the run cannot go on (no_plan, no_verdict), when a role could not do its part.
        self.failure: tuple[str, str] | None = None
        self._task_keys: set[str] = set()
        self.scheduler: Scheduler | None = None  # the running cycle's (run.cycles.plan_and_work)
        self._lock = threading.Lock()
        self._state_lock = threading.Lock()  # one state.json writer at a time
        # The orchestrator's verifier and, in strict mode, its merge queue (run/cycles.py
        # start_run starts them; a worker process has neither).
        self.verifier: Verifier | None = None
        self.merge_queue: MergeQueue | None = None
        self._logs: dict[str, RecordLog] = {}
        self.dir.mkdir(parents=True, exist_ok=True)
        if worker_clones is None:  # the orchestrator's files; a worker process leaves them be
            (self.dir / "STOP").unlink(missing_ok=True)  # a resume starts anew
            (self.dir / "config.json").write_text(
                config.model_dump_json(indent=1, exclude={"api_key"})
            )
        registry.register(self)

    @classmethod
    def for_worker(cls, config: SwarmConfig, clones: Path) -> Run:
        """The Run of a worker process (--executor deployment), built from the orchestrator's
        config: it lands through the shared remote `config.remote` from a clone under `clones`,
        writes only its agents' records, and never touches the user's repository."""
        return cls(config, worker_clones=clones)

    # -- tasks and cycles -------------------------------------------------------------------

    def unique_task_key(self, key: str) -> str:
        """Task keys are unique in a run (follow-ups may reuse an id)."""
        with self._lock:
            base, n = key, 1
            while key in self._task_keys:
                n += 1
                key = f"{base}-{n}"
            self._task_keys.add(key)
            return key

    def dispatch(self, tasks: list[PlannedTask]) -> None:
        """Hand a planner's tasks to the running cycle (Scheduler.add): they start as soon as
        their dependencies land. Without a running cycle the planner's caller keeps them."""
        if self.scheduler is not None:
            self.scheduler.add(tasks)

    def cycle_base(self, cycle: int) -> str:
        """The tip a cycle plans against: recorded once, so a resumed run plans from the same state."""
        with self._lock:
            self.starts.setdefault(f"cycle-{cycle}", now())
            state, changed = self.state, False
            if cycle not in state.cycle_tips:
                state.cycle_tips[cycle], changed = self.workspace.tip(), True
            if cycle not in state.cycle_hot_files:
                state.cycle_hot_files[cycle], changed = self.progress.hot(), True
            if changed:
                self.save_state()
            return state.cycle_tips[cycle]

    def cycle_hot_files(self, cycle: int) -> dict[str, int]:
        """The hot files a cycle's planners are told, recorded with its base: workers already
        land (and conflict) while sub-planners plan, and a resumed run must ask the same."""
        self.cycle_base(cycle)
        return self.state.cycle_hot_files[cycle]

    def save_state(self) -> None:
        """Write state.json with the hot files so far. One writer at a time: the flow, planners
        and workers save while others report (the file is replaced through one temporary)."""
        with self._state_lock:
            self.state.hot_files = self.progress.hot()
            self.state.save(self.dir / "state.json")

    @property
    def models(self) -> list[str]:
        """The run's models, one each (planner, worker, judge may share one)."""
        m = self.config.models
        return list(dict.fromkeys([m.planner, m.worker, m.judge]))

    def save_spent(self) -> None:
        """Persist what the run has spent (after every settled model call and at the end);
        read under the lock, so the file always ends with the newest figures."""
        with self._spent_lock:
            save_spent(self.dir / LEDGER_FILE, self.ledger.spent())

    def landed_task_keys(self) -> set[str]:
        """Tasks of this run already on the branch, from the commits' trailers (resume)."""
        return self.workspace.landed_tasks(self.run_id)

    def fail(self, status: str, reason: str) -> None:
        """The run cannot make progress (`status`: no_plan, no_verdict): it ends with that
        status and `reason` (one line), and starts no new work."""
        if self.failure is None:
            self.failure = (status, " ".join(reason.split()))
            self.progress.emit(f"{status}: {self.failure[1]}")
        self.ledger.stop(status)

    def final_status(self, verdict: Verdict | None) -> str:
        if self.failure is not None:
            return self.failure[0]
        if self.ledger.exhausted in BUDGETS and (verdict is None or verdict.decision != "done"):
            return "budget_exhausted"
        if self.stop_reason:
            return "stopped"
        if verdict is None:
            return "budget_exhausted" if self.ledger.exhausted else "stopped"
        return {"done": "done", "stop": "stopped"}.get(verdict.decision, "budget_exhausted")

    def summary(self, status: str, verdict: Verdict | None, report: Path | None) -> dict[str, Any]:
        """What the swarm flow returns and the CLI prints."""
        return {
            "run_id": self.run_id,
            "status": status,
            "cycles": len(self.state.cycles),
            "branch": self.branch,
            "tip": self.workspace.tip(),
            "db": str(self.config.db_path),
            "report": str(report) if report else None,
            "tasks_landed": self.progress.counts().get("landed", 0),
            "tasks_not_landed": self.progress.not_landed(),
            "sandbox": self.sandbox,
            "tokens": self.ledger.tokens,
            "cost_usd": round(self.ledger.cost, 6),
            "unpublished": self.unpublished,
            "verdict": verdict.model_dump() if verdict else None,
            "reason": self._why(status),
        }

    def _budget_news(self, kind: str, budget: str) -> None:
        """A budget 80 % spent, or exhausted: an event line and an event."""
        spent, cap = self.ledger.usage().get(
            budget, (len(self.state.cycles), self.config.max_cycles)
        )
        if kind == "running-low":
            self.progress.emit(f"budget: {spent:g} of {cap:g} {budget} spent ({RUNNING_LOW:.0%})")
            self.progress.notify("budget.running-low", budget=budget, spent=spent, cap=cap)
        else:
            self.progress.emit(f"budget: {budget} exhausted ({spent:g} of {cap:g}); draining")
            self.progress.notify("budget.exhausted", budget=budget, spent=spent, cap=cap)

    def _why(self, status: str) -> str | None:
        """Why a run ended short of the judge's word, in one line (None when it did not)."""
        if self.failure is not None:
            return self.failure[1]
        if status == "budget_exhausted":
            return f"a budget ran out before the judge said done: {self.ledger.exhausted}"
        return None

    # -- records ----------------------------------------------------------------------------

    def agent_log(self, agent_id: str) -> RecordLog:
        with self._lock:
            if agent_id not in self._logs:
                self._logs[agent_id] = RecordLog(
                    self.dir / "records" / f"{file_safe(agent_id)}.jsonl"
                )
            return self._logs[agent_id]

    def transcript(self, agent_id: str) -> Path:
        return self.dir / "transcripts" / f"{file_safe(agent_id)}.jsonl"

    def record_run(self, status: str, cycles: int, flow_run_id: str | None = None) -> None:
        self.log.write(
            "run",
            run_id=self.run_id,
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
            sandbox=self.config.sandbox,
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
            from devswarm.report.html import write_html_report

            return write_html_report(self.config.db_path, self.run_id, self.dir / "report.html")
        except Exception as exc:
            _log.warning("no HTML report for run %s: %s", self.run_id, exc)
            return None

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
        registry.unregister(self.run_id)

    def env(self) -> dict[str, str]:
        """The environment of agents' commands, checks and setup: the allowlist, the names the
        user passes (--pass-env), nothing that holds the key."""
        return command_env(pass_env=self.config.pass_env, secrets=self.secrets)

    @property
    def hidden(self) -> list[Path]:
        """What sandboxed commands must not see, wherever it lives: the data folder (--home:
        clones, records, transcripts) and `devswarm server`'s folder (its PostgreSQL socket
        trusts local connections; block documents hold keys)."""
        home = self.config.home
        return list(dict.fromkeys([home, server_dir(), server_dir(home), ROOT_DEFAULT_DIR]))


def plain_calls(run: Run, agent_id: str, *, attempts: int = 4) -> ModelFn:
    """A model function without Prefect: retries transient failures, honouring Retry-After."""
    log = run.agent_log(agent_id)

    def call(request: dict[str, Any], step: int) -> dict[str, Any]:
        key = cache_key(run.run_id, agent_id, step, request)  # recorded as Prefect's would be
        for attempt in range(1, attempts + 1):
            try:
                return run.client.call(
                    request,
                    run_id=run.run_id,
                    agent_id=agent_id,
                    step=step,
                    attempt=attempt,
                    log=log,
                    cache_key=key,
                )
            except ModelCallError as exc:
                if not exc.transient or attempt == attempts:
                    raise
                time.sleep(backoff_seconds(exc, attempt))
        raise AssertionError("unreachable")

    return call
