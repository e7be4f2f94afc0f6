"""What every command shares: one-line failures, Prefect's quiet settings, exit codes, and
running a swarm in this process with a live view."""

from __future__ import annotations

import os
import secrets
import shutil
from typing import Any, NoReturn

import typer

from devswarm.config import SwarmConfig
from devswarm.errors import UserError

# done and stopped (by the judge or a person) are normal ends; an exhausted budget is not, nor
# a model that never produced a valid plan or verdict (the run could not make progress).
EXIT_CODES = {"done": 0, "stopped": 0, "budget_exhausted": 4, "no_plan": 5, "no_verdict": 6}
UNPUBLISHED_EXIT = 7  # the work landed in devswarm's clone but is not on the user's branch


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
    if not api:
        # Prefect's temporary server (this process starts it: no PREFECT_API_URL) listens on
        # loopback, where any local user or process could use it; with an auth string of its
        # own only this process can. Its child server process inherits the variable; the client
        # must send the same one (an inherited server string alone would lock us out).
        auth = (
            os.environ.get("PREFECT_SERVER_API_AUTH_STRING")
            or os.environ.get("PREFECT_API_AUTH_STRING")
            or secrets.token_urlsafe(24)
        )
        os.environ["PREFECT_SERVER_API_AUTH_STRING"] = os.environ["PREFECT_API_AUTH_STRING"] = auth
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # Prefect's temporary server gets 20 s to start by default; a loaded machine needs more.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    os.environ.setdefault("PREFECT_SERVER_LOGGING_LEVEL", "ERROR")
    # Separate levels for the terminal and the Prefect UI: the terminal (Prefect's console
    # handler) shows warnings and errors only, as before; each flow run's log in the UI gets its
    # INFO lines: devswarm's story (tasks/logs.py) and Prefect's own flow-run lines (started,
    # "Finished in state Failed('budget exhausted ...')"). Prefect's other loggers (model-call
    # task runs, the client) stay at WARNING everywhere.
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_LOGGING_LOGGERS_PREFECT_FLOW_RUNS_LEVEL", "INFO")


def execute(cfg: SwarmConfig, *, resume: bool = False) -> dict[str, Any]:
    """Validate, then run (or resume) the swarm flow in this process, with a live view.

    Ctrl-C or SIGTERM drains the swarm (no new workers, running ones stop at their next step,
    everything recorded); a second one aborts.
    """
    from devswarm.commands.preflight import (
        check_prefect_api,
        check_repository,
        dirty_tree_warning,
        unlisted_warnings,
    )
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
    # Every refusal before anything is written (a run folder, a clone) or Prefect starts: the
    # repository and branch first (local, fast), then the Prefect API and the model endpoint.
    check_repository(cfg)
    quiet_prefect()
    check_prefect_api()
    ModelClient(cfg.base_url, cfg.api_key, timeout=10).preflight()  # reachable, key accepted
    # The repository and branch again as the run takes them (a clone, its run folder), and
    # what the endpoint accepts for each model, learned once and kept in the run's state: an
    # unknown model is one line here (the probe: not listed AND a call answered 404).
    folder = cfg.home / "runs" / cfg.run_id
    fresh = [p for p in (folder.parent, folder) if not p.exists()]
    run = Run(cfg)
    try:
        know_models(run)
        warnings = unlisted_warnings(run.client, run.models)
        warnings.append(dirty_tree_warning(run.workspace.user_repo, run.workspace.base_commit))
    except UserError:
        if fresh:  # refused before it began: leave no run folder behind
            shutil.rmtree(fresh[0], ignore_errors=True)
        raise
    finally:
        run.close()
    for warning in filter(None, warnings):
        typer.echo(f"devswarm: {warning}", err=True)
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
    progress ends with its reason in one line, and one whose landings did not reach the
    user's branch says so (exit 7)."""
    print_summary(summary)
    if summary.get("reason"):
        typer.secho(f"devswarm: {summary['reason']}", err=True, fg=typer.colors.RED)
    if summary.get("unpublished"):
        typer.secho(
            f"devswarm: landed in the clone, not published: {summary['unpublished']} "
            "(the next run or `devswarm resume` publishes it first)",
            err=True,
            fg=typer.colors.RED,
        )
        raise typer.Exit(UNPUBLISHED_EXIT)
    raise typer.Exit(EXIT_CODES.get(summary["status"], 1))
