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
from devswarm.ids import file_safe, new_run_id, repo_key
from devswarm.model.client import ModelClient
from devswarm.model.errors import ModelCallError, backoff_seconds
from devswarm.model.ledger import Ledger
from devswarm.records import RecordLog, now
from devswarm.run import registry
from devswarm.run.checks import Checks
from devswarm.run.importer import RecordImporter
from devswarm.run.progress import Progress
from devswarm.run.state import RunState, earlier_hot_files
from devswarm.sandbox.env import command_env
from devswarm.sandbox.probe import require_sandbox
from devswarm.schemas import Verdict
from devswarm.store.warehouse import publish_run, run_store_path
from devswarm.verify.landings import net_landed

if TYPE_CHECKING:
    from devswarm.verify.queue import MergeQueue
    from devswarm.verify.verifier import Verifier

_log = logging.getLogger("devswarm")
ModelFn = Any  # devswarm.agent.loop.ModelFn: (request, step) -> reply


class Run:
    """Everything one swarm run holds: config, workspace, ledger, model client, record files."""

    def __init__(self, config: SwarmConfig, *, worker_clones: Path | None = None) -> None:
        if not config.goal.strip():
            raise UserError("the goal is empty; give --goal TEXT or --goal-file FILE")
        repo = config.repo.expanduser().resolve()
        self.config = config
        self.run_id = config.run_id or new_run_id(repo)
        self.branch = check_branch_name(config.branch or f"devswarm/{self.run_id}")
        self.dir = config.home / "runs" / self.run_id
        self.workspace: Workspace
        if worker_clones is None:
            self.workspace = Workspace(repo, config.home / "repos" / repo_key(repo), self.branch)
        elif not config.remote:
            raise UserError("a worker process needs the shared remote (config.remote)")
        else:
            self.workspace = RemoteWorkspace(
                config.remote, worker_clones / repo_key(Path(config.remote)), self.branch
            )
        self.workspace.prune()
        self.sandbox_notice = _sandbox_notice(config.sandbox)
        if self.sandbox_notice and registry.first_time(self.run_id, "sandbox"):
            _log.warning(self.sandbox_notice)  # once per run (stderr; Prefect's console)
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
        self.stop_reason: str | None = None
        self.started_at = now()
        self.starts: dict[str, str] = {}  # agent id or task key -> when it started
        self.state = RunState.load(self.dir / "state.json")
        self.progress = Progress(registry.listeners())
        if worker_clones is None:  # planners use them; a worker process has no user repository
            self.progress.conflicted(
                self.state.hot_files or earlier_hot_files(config.db_path, self.workspace.user_repo)
            )
        self.checks = Checks(config, self.workspace, self.env)
        self.records = RecordImporter(self.dir / "records", self.store_path, self.run_id)
        # False once the server refused response_format: later agents put the schema in the prompt.
        self.structured_output = True
        # The request field capping an answer: switched for the whole run once a server refuses it.
        self.output_limit = "max_tokens"
        self._task_keys: set[str] = set()
        self._lock = threading.Lock()
        self._save_lock = threading.Lock()  # the verifier's thread saves the state too
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

    def cycle_base(self, cycle: int) -> str:
        """The tip a cycle plans against: recorded once, so a resumed run plans from the same state."""
        with self._lock:
            self.starts.setdefault(f"cycle-{cycle}", now())
            if cycle not in self.state.cycle_tips:
                self.state.cycle_tips[cycle] = self.workspace.tip()
                self.save_state()
            return self.state.cycle_tips[cycle]

    def save_state(self) -> None:
        with self._save_lock:
            self.state.hot_files = self.progress.hot()
            self.state.save(self.dir / "state.json")

    def landed_task_keys(self) -> set[str]:
        """Tasks of this run already on the branch, from the commits' trailers (resume); a task
        whose landing the verifier reverted counts again only once it landed after the revert."""
        return net_landed(
            [t for t in self.workspace.landed_trailers() if t.get("run") == self.run_id]
        )

    def final_status(self, verdict: Verdict | None) -> str:
        if self.ledger.exhausted in {"tokens", "cost", "wall_seconds", "cycles"} and (
            verdict is None or verdict.decision != "done"
        ):
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
            "tokens": self.ledger.tokens,
            "cost_usd": round(self.ledger.cost, 6),
            "verdict": verdict.model_dump() if verdict else None,
        }

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
        return command_env(secrets=self.secrets)


def plain_calls(run: Run, agent_id: str, *, attempts: int = 4) -> ModelFn:
    """A model function without Prefect: retries transient failures, honouring Retry-After."""
    log = run.agent_log(agent_id)

    def call(request: dict[str, Any], step: int) -> dict[str, Any]:
        for attempt in range(1, attempts + 1):
            try:
                return run.client.call(
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
                time.sleep(backoff_seconds(exc, attempt))
        raise AssertionError("unreachable")

    return call


def _sandbox_notice(sandbox: bool) -> str | None:
    """What to say once per run when agents' commands run without a sandbox (only when turned
    off); a sandbox that does not work here is refused with its cause and fix."""
    if sandbox:
        require_sandbox()
        return None
    return (
        "the sandbox is turned off (--no-sandbox): agents' commands run without one, "
        "with network access and write access to everything this user can write "
        "(see docs/sandbox.md)"
    )
