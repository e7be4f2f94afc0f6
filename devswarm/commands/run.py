"""devswarm CLI commands that run things: `run` (a swarm), `demo`, `model-server`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from pydantic import SecretStr

from devswarm.commands.common import execute, fail, finish, quiet_prefect
from devswarm.errors import UserError


def register(app: typer.Typer) -> None:
    """Add this module's commands to the devswarm CLI."""
    app.command()(run)
    app.command()(demo)
    app.command("model-server")(model_server)


def run(
    repo: Annotated[Path | None, typer.Option(help="The git repository to work on")] = None,
    goal: Annotated[str | None, typer.Option(help="The goal, as text")] = None,
    goal_file: Annotated[Path | None, typer.Option(help="The goal, from a file")] = None,
    branch: Annotated[
        str | None, typer.Option(help="Branch to land on (default devswarm/<run>)")
    ] = None,
    check: Annotated[
        str | None, typer.Option(help="Repository check command, e.g. 'python -m pytest -q'")
    ] = None,
    setup: Annotated[
        str | None, typer.Option(help="Setup command run in each fresh worktree")
    ] = None,
    setup_network: Annotated[
        bool,
        typer.Option(
            "--setup-network",
            help="Let the setup command reach the network (package indexes, but also local "
            "services and cloud metadata); it runs without by default",
        ),
    ] = False,
    pass_env: Annotated[
        list[str] | None,
        typer.Option(
            "--pass-env",
            metavar="NAME",
            help="An environment variable agents' commands, checks and setup also get "
            "(repeatable; the rest stays out)",
        ),
    ] = None,
    workers: Annotated[int | None, typer.Option(help="Workers at once [default: 8]")] = None,
    cycles: Annotated[
        int | None, typer.Option(help="Most plan → work → judge cycles [default: 3]")
    ] = None,
    repository_block: Annotated[
        str | None, typer.Option(help="A devswarm repository block (path, branch, check, setup)")
    ] = None,
    provider_block: Annotated[
        str | None, typer.Option(help="A devswarm model provider block (endpoint, key, models)")
    ] = None,
    warehouse_block: Annotated[
        str | None, typer.Option(help="A devswarm warehouse block (data folder, DuckDB file)")
    ] = None,
    model: Annotated[str | None, typer.Option(help="One model for every role")] = None,
    planner_model: Annotated[str | None, typer.Option(help="Planner's model")] = None,
    worker_model: Annotated[str | None, typer.Option(help="Workers' model")] = None,
    judge_model: Annotated[str | None, typer.Option(help="Judge's model")] = None,
    base_url: Annotated[
        str | None, typer.Option(help="OpenAI-compatible endpoint (else $OPENAI_BASE_URL)")
    ] = None,
    db: Annotated[
        Path | None, typer.Option(help="DuckDB file (default <home>/devswarm.duckdb)")
    ] = None,
    home: Annotated[Path | None, typer.Option(help="Data folder (default $DEVSWARM_HOME)")] = None,
    max_cost: Annotated[float | None, typer.Option(help="Dollar cap for the whole run")] = None,
    max_tokens: Annotated[int | None, typer.Option(help="Token cap for the whole run")] = None,
    run_id: Annotated[
        str | None, typer.Option(help="The run's id, its name everywhere (default <repo>-<time>)")
    ] = None,
    run_name: Annotated[str | None, typer.Option(hidden=True, help="Old name of --run-id")] = None,
    no_sandbox: Annotated[
        bool,
        typer.Option(
            "--no-sandbox",
            help="Run agents' commands without a sandbox: they can read the API key and write "
            "your files (docs/sandbox.md)",
        ),
    ] = False,
    config: Annotated[
        Path | None,
        typer.Option(help="TOML file with any run settings (models, prices, limits, budget, ...)"),
    ] = None,
    executor: Annotated[
        str | None,
        typer.Option(
            help="Where workers run: local, or deployment (a work pool; docs/scale-out.md)"
        ),
    ] = None,
    remote: Annotated[
        str | None,
        typer.Option(help="Shared git remote for --executor deployment (default: one in <home>)"),
    ] = None,
    on_red: Annotated[
        str | None,
        typer.Option(
            help="When a landing turns the check red: revert it and retry its task, or give "
            "its planner a repair task [default: revert]"
        ),
    ] = None,
    max_repairs: Annotated[
        int | None,
        typer.Option(help="Retries of a reverted task, or repair tasks, per culprit [default: 2]"),
    ] = None,
    verify_before_land: Annotated[
        bool,
        typer.Option(
            "--verify-before-land",
            help="Strict mode: run the check on each landing candidate before the branch moves",
        ),
    ] = False,
) -> None:
    """Run a swarm on a repository against any OpenAI-compatible endpoint."""
    from devswarm import settings

    if run_name is not None:
        typer.echo("devswarm: --run-name is now called --run-id", err=True)
        run_id = run_id or run_name
    try:
        if goal is not None and goal_file is not None:
            raise UserError("give --goal TEXT or --goal-file FILE, not both")
        text = settings.read_goal(goal, goal_file)
        blocks_layer, key = _blocks(repository_block, provider_block, warehouse_block)
        if executor is not None and executor not in ("local", "deployment"):
            raise UserError(f"--executor must be local or deployment, not {executor!r}")
        if on_red is not None and on_red not in ("revert", "repair"):
            raise UserError(f"--on-red must be revert or repair, not {on_red!r}")
        if max_repairs is not None and max_repairs < 0:
            raise UserError(f"--max-repairs must be 0 or more, not {max_repairs}")
        if remote is not None:
            from devswarm.git.remote import remote_url

            remote = remote_url(remote)
        flags = {
            "repo": repo,
            "branch": branch,
            "check": check,
            "setup": setup,
            "setup_network": setup_network or None,
            "pass_env": pass_env or None,
            "base_url": base_url,
            "max_workers": workers,
            "max_cycles": cycles,
            "home": home,
            "db": db,
            "executor": executor,
            "remote": remote,
            "sandbox": False if no_sandbox else None,
            "on_red": on_red,
            "max_repairs": max_repairs,
            "verify_before_land": True if verify_before_land else None,
            "models": settings.models_layer(model, planner_model, worker_model, judge_model),
            "budget": {"max_cost_usd": max_cost, "max_tokens": max_tokens},
        }
        environment = {"base_url": os.environ.get("OPENAI_BASE_URL")}
        merged = settings.merge(environment, blocks_layer, settings.read_file(config), flags)
        spelled = _spelled(flags, environment)
        for role, own in (
            ("planner", planner_model),
            ("worker", worker_model),
            ("judge", judge_model),
        ):
            if model is not None and own is None:
                spelled[("models", role)] = "--model"
        cfg = settings.build(
            merged,
            goal=text,
            api_key=key or settings.api_key_from_env(),
            run_id=run_id,
            spelled=spelled,
        )
        summary = execute(cfg)
    except UserError as exc:
        fail(str(exc))
    finish(summary)


# Where each flag of `run` lands in the settings, so a refusal names the option the user typed.
FLAG_SETTINGS = {
    ("repo",): "--repo",
    ("branch",): "--branch",
    ("check",): "--check",
    ("setup",): "--setup",
    ("base_url",): "--base-url",
    ("max_workers",): "--workers",
    ("max_cycles",): "--cycles",
    ("home",): "--home",
    ("db",): "--db",
    ("executor",): "--executor",
    ("remote",): "--remote",
    ("pass_env",): "--pass-env",
    ("models", "planner"): "--planner-model",
    ("models", "worker"): "--worker-model",
    ("models", "judge"): "--judge-model",
    ("budget", "max_cost_usd"): "--max-cost",
    ("budget", "max_tokens"): "--max-tokens",
}


def _spelled(flags: dict, environment: dict) -> dict[tuple[str, ...], str]:
    """The settings the user gave as flags (or OPENAI_BASE_URL), named as the user typed them."""
    spelled = {("base_url",): "OPENAI_BASE_URL"} if environment.get("base_url") else {}
    for loc, option in FLAG_SETTINGS.items():
        value = flags
        for part in loc:
            value = value.get(part) if isinstance(value, dict) else None
        if value is not None:
            spelled[loc] = option
    return spelled


def _blocks(
    repository: str | None, provider: str | None, warehouse: str | None
) -> tuple[dict, SecretStr | None]:
    """The settings layer of saved Prefect blocks (and the provider block's key)."""
    if not (repository or provider or warehouse):
        return {}, None
    quiet_prefect()
    from blocks import settings_from_blocks

    return settings_from_blocks(repository, provider, warehouse)


def demo(
    dir: Annotated[
        Path, typer.Option("--dir", help="Where to put the demo repository and data")
    ] = Path("devswarm-demo"),
) -> None:
    """Run the offline demo: a small repository, a scripted model server, a real swarm."""
    from devswarm.demo import demo_config, demo_server, prepare

    try:
        directory = prepare(dir)
        with demo_server(directory) as server:
            summary = execute(demo_config(directory, server.url))
    except UserError as exc:
        fail(str(exc))
    summary["request_log"] = str(directory / "data" / "model-requests.jsonl")
    summary["repo"] = str(directory / "textkit")
    from devswarm.commands.common import print_summary

    print_summary(summary)
    if summary["status"] != "done":
        raise typer.Exit(1)


def model_server(
    scenario: Annotated[Path, typer.Option(help="Scenario JSON file")],
    port: Annotated[int, typer.Option(help="Port (0 = any free port)", min=0, max=65535)] = 0,
    log: Annotated[Path | None, typer.Option(help="Request log (JSONL)")] = None,
) -> None:
    """Serve the offline OpenAI-compatible model server on 127.0.0.1."""
    from devswarm.offline.server import serve_forever

    try:
        serve_forever(scenario, port=port, log_path=log)
    except UserError as exc:
        fail(str(exc))
    except OSError as exc:  # the port is taken, or the log cannot be written
        fail(f"model server: {exc.strerror or exc}{f' ({exc.filename})' if exc.filename else ''}")
