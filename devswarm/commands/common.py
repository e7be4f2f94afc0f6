"""What every command shares: one-line failures, Prefect's quiet settings, exit codes, and
running a swarm in this process with a live view."""

from __future__ import annotations

import os
from typing import Any, NoReturn

import typer

from devswarm.config import SwarmConfig
from devswarm.errors import UserError

# done and stopped (by the judge or a person) are normal ends; an exhausted budget is not, nor
# a model that never produced a valid plan or verdict (the run could not make progress).
EXIT_CODES = {"done": 0, "stopped": 0, "budget_exhausted": 4, "no_plan": 5, "no_verdict": 6}


def fail(message: str, code: int = 2) -> NoReturn:
    """Print one line on stderr and exit non-zero."""
    typer.secho(f"devswarm: {message}", err=True, fg=typer.colors.RED)
    raise typer.Exit(code)


def quiet_prefect() -> None:
    """Settings that must be in place before Prefect is imported.

    When PREFECT_API_URL points at this machine's `devswarm server`, its auth string is read
    from the server's private file, so users need not export it.
    """
    api = os.environ.get("PREFECT_API_URL")
    if api and not os.environ.get("PREFECT_API_AUTH_STRING"):
        from devswarm import server

        try:
            state = server.status()
            auth = (
                server.read_auth()
                if state and state.api_url.rstrip("/") == api.rstrip("/")
                else None
            )
        except Exception:  # no server of ours, or not readable: the user's own settings stand
            auth = None
        if auth:
            os.environ["PREFECT_API_AUTH_STRING"] = auth
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_SERVER_LOGGING_LEVEL", "ERROR")


def execute(cfg: SwarmConfig, *, resume: bool = False) -> dict[str, Any]:
    """Validate, then run (or resume) the swarm flow in this process, with a live view.

    Ctrl-C or SIGTERM drains the swarm (no new workers, running ones stop at their next step,
    everything recorded); a second one aborts.
    """
    from devswarm.ids import new_run_id
    from devswarm.live import watch
    from devswarm.model.client import ModelClient
    from devswarm.run.endpoint import know_models
    from devswarm.run.registry import drain_on_signals
    from devswarm.run.run import Run

    cfg.repo = cfg.repo.expanduser().resolve()
    cfg.run_id = cfg.run_id or new_run_id(cfg.repo)
    if cfg.base_url is None and not cfg.api_key.get_secret_value():
        raise UserError("no model endpoint: set OPENAI_BASE_URL/--base-url or OPENAI_API_KEY")
    ModelClient(cfg.base_url, cfg.api_key, timeout=10).preflight()
    # Validate the repository and branch before Prefect starts (fast, one-line errors), and
    # learn once what the endpoint accepts for each model (kept in the run's state): an
    # unknown model is one line here, not a failed flow.
    run = Run(cfg)
    try:
        know_models(run)
    finally:
        run.close()
    quiet_prefect()
    # Answered model calls are cached with the run's data, so a resumed run replays them.
    os.environ.setdefault("PREFECT_RESULTS_LOCAL_STORAGE_PATH", str(cfg.home / "results"))
    from devswarm.server import SQLITE_WORKER_CAP, worker_cap

    if cfg.max_workers > SQLITE_WORKER_CAP:
        cap, why = worker_cap(
            os.environ.get("PREFECT_API_URL"), os.environ.get("PREFECT_API_AUTH_STRING")
        )
        if cap is not None:
            typer.echo(
                f"note: {why} holds few concurrent subflows; running {cap} workers at once "
                f"instead of {cfg.max_workers}. For more: devswarm server start (PostgreSQL).",
                err=True,
            )
            cfg.max_workers = cap
    from devswarm.commands.runtime import run_swarm
    from tasks.history import mark_crashed

    if resume:
        from devswarm.run.state import recorded_flow_runs

        mark_crashed(cfg.run_id, recorded_flow_runs(cfg.home / "runs" / cfg.run_id))
    with watch(), drain_on_signals(lambda msg: typer.echo(f"devswarm: {msg}", err=True)):
        return run_swarm(cfg)


def print_summary(summary: dict[str, Any]) -> None:
    from devswarm.report.text import summary_lines

    for line in summary_lines(summary):
        typer.echo(line)


def finish(summary: dict[str, Any]) -> NoReturn:
    """Print a run's summary and exit with its status's code; a run that could not make
    progress ends with its reason in one line."""
    print_summary(summary)
    if summary.get("reason"):
        typer.secho(f"devswarm: {summary['reason']}", err=True, fg=typer.colors.RED)
    raise typer.Exit(EXIT_CODES.get(summary["status"], 1))
