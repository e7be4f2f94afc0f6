"""The devswarm command line. Bad input ends in one line on stderr and a non-zero exit."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from devswarm.errors import UserError

app = typer.Typer(
    pretty_exceptions_enable=False,
    add_completion=False,
    no_args_is_help=True,
    help="Swarms of coding agents on one git repository.",
)


def _quiet_prefect() -> None:
    """Settings that must be in place before Prefect is imported.

    When PREFECT_API_URL points at this machine's `devswarm server`, its auth string is read
    from the server's private file, so users need not export it.
    """
    api = os.environ.get("PREFECT_API_URL")
    if api and not os.environ.get("PREFECT_API_AUTH_STRING"):
        from devswarm.server import server

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


def _fail(message: str, code: int = 2) -> None:
    """Print one line on stderr and exit non-zero (shared by every command module)."""
    typer.secho(f"devswarm: {message}", err=True, fg=typer.colors.RED)
    raise typer.Exit(code)


@app.command()
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
    run_name: Annotated[
        str | None, typer.Option(help="Name of the run (default <repo>-<time>)")
    ] = None,
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
) -> None:
    """Run a swarm on a repository against any OpenAI-compatible endpoint."""
    from pydantic import SecretStr

    from devswarm.config import Models, SwarmConfig

    try:
        text = _goal(goal, goal_file)
        # Settings layer up: blocks, then a config file, then flags.
        settings, key = _from_blocks(repository_block, provider_block, warehouse_block)
        settings.update(_settings_file(config))
        flags = {
            "repo": repo,
            "branch": branch,
            "check": check,
            "setup": setup,
            "base_url": base_url,
        }
        settings.update({k: v for k, v in flags.items() if v})
        if not settings.get("repo"):
            raise UserError("which repository? give --repo PATH or --repository-block NAME")
        if not Path(settings["repo"]).expanduser().exists():
            raise UserError(f"repository {settings['repo']} does not exist")
        settings.setdefault("base_url", os.environ.get("OPENAI_BASE_URL"))
        cfg = SwarmConfig.model_validate({**settings, "goal": text, "run_name": run_name})
        cfg.api_key = key or SecretStr(os.environ.get("OPENAI_API_KEY", ""))
        if model:
            cfg.models = Models.single(model)
        for role, value in (
            ("planner", planner_model),
            ("worker", worker_model),
            ("judge", judge_model),
        ):
            if value:
                setattr(cfg.models, role, value)
        if workers is not None:
            cfg.max_workers = workers
        if cycles is not None:
            cfg.max_cycles = cycles
        if home:
            cfg.home = home.expanduser().resolve()
        cfg.db = db or cfg.db
        if max_cost is not None:
            cfg.budget.max_cost_usd = max_cost
        if max_tokens is not None:
            cfg.budget.max_tokens = max_tokens
        if executor is not None:
            if executor not in ("local", "deployment"):
                raise UserError(f"--executor must be local or deployment, not {executor!r}")
            cfg.executor = executor  # type: ignore[assignment]
        if remote is not None:
            from devswarm.git.remote import remote_url

            cfg.remote = remote_url(remote)
        summary = execute(cfg)
    except UserError as exc:
        _fail(str(exc))
    print_summary(summary)
    raise typer.Exit(EXIT_CODES.get(summary["status"], 1))


# done and stopped (by the judge or a person) are normal ends; an exhausted budget is not.
EXIT_CODES = {"done": 0, "stopped": 0, "budget_exhausted": 4}


def _from_blocks(
    repository: str | None, provider: str | None, warehouse: str | None
) -> tuple[dict, Any]:
    """Settings from saved Prefect blocks (and the provider block's key, kept secret)."""
    if not (repository or provider or warehouse):
        return {}, None
    _quiet_prefect()
    from blocks import ModelProvider, Repository, Warehouse
    from flows.deploy import _load

    settings: dict[str, Any] = {}
    key = None
    if repository:
        r = _load(Repository, repository)
        settings.update(repo=r.path, branch=r.branch, check=r.check, setup=r.setup)
    if provider:
        p = _load(ModelProvider, provider)
        settings.update(base_url=p.base_url, models=p.models(), prices=p.prices)
        key = p.api_key if p.api_key.get_secret_value() else None
    if warehouse:
        w = _load(Warehouse, warehouse)
        settings.update({k: v for k, v in {"home": w.home, "db": w.db}.items() if v})
    return {k: v for k, v in settings.items() if v is not None}, key


def _settings_file(path: Path | None) -> dict:
    """Run settings from a TOML file (the same names as SwarmConfig's fields)."""
    if path is None:
        return {}
    import tomllib

    from pydantic import ValidationError

    from devswarm.config import SwarmConfig

    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"config file {path}: {exc}") from None
    if "api_key" in data:
        raise UserError(
            f"config file {path}: keep the API key out of files; use OPENAI_API_KEY or a block"
        )
    try:
        SwarmConfig.model_validate({"goal": "x", "repo": ".", **data})
    except ValidationError as exc:
        first = exc.errors()[0]
        raise UserError(
            f"config file {path}: {'.'.join(map(str, first['loc']))}: {first['msg']}"
        ) from None
    return data


def _goal(goal: str | None, goal_file: Path | None) -> str:
    if goal_file is not None:
        if not goal_file.is_file():
            raise UserError(f"goal file {goal_file} does not exist")
        goal = goal_file.read_text()
    if not goal or not goal.strip():
        raise UserError("the goal is empty; give --goal TEXT or --goal-file FILE")
    return goal


def execute(cfg, *, resume: bool = False) -> dict:
    """Validate, then run (or resume) the swarm flow in this process, with a live view.

    Ctrl-C or SIGTERM drains the swarm (no new workers, running ones stop at their next step,
    everything recorded); a second one aborts.
    """
    from devswarm.live import watch
    from devswarm.model.client import ModelClient
    from devswarm.run.run import Run, drain_on_signals, new_run_name

    cfg.repo = cfg.repo.expanduser().resolve()
    cfg.run_name = cfg.run_name or new_run_name(cfg.repo)
    if cfg.base_url is None and not cfg.api_key.get_secret_value():
        raise UserError("no model endpoint: set OPENAI_BASE_URL/--base-url or OPENAI_API_KEY")
    ModelClient(cfg.base_url, cfg.api_key, timeout=10).preflight()
    # Validate the repository and branch before Prefect starts (fast, one-line errors).
    probe = Run(cfg)
    probe.close()
    _quiet_prefect()
    # Answered model calls are cached with the run's data, so a resumed run replays them.
    os.environ.setdefault("PREFECT_RESULTS_LOCAL_STORAGE_PATH", str(cfg.home / "results"))
    from devswarm.server.server import SQLITE_WORKER_CAP, worker_cap

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
    from tasks.runtime import mark_crashed, run_swarm

    if resume:
        mark_crashed(cfg.run_name)
    with watch(), drain_on_signals(lambda msg: typer.echo(f"devswarm: {msg}", err=True)):
        return run_swarm(cfg)


def print_summary(summary: dict) -> None:
    from devswarm.report.report import summary_lines

    for line in summary_lines(summary):
        typer.echo(line)


@app.command()
def demo(
    dir: Annotated[
        Path, typer.Option("--dir", help="Where to put the demo repository and data")
    ] = Path("devswarm-demo"),
) -> None:
    """Run the offline demo: a small repository, a scripted model server, a real swarm."""
    from devswarm.demo import run_demo

    try:
        summary = run_demo(dir)
    except UserError as exc:
        _fail(str(exc))
    print_summary(summary)
    if summary["status"] != "done":
        raise typer.Exit(1)


@app.command("model-server")
def model_server(
    scenario: Annotated[Path, typer.Option(help="Scenario JSON file")],
    port: Annotated[int, typer.Option(help="Port (0 = any free port)")] = 0,
    log: Annotated[Path | None, typer.Option(help="Request log (JSONL)")] = None,
) -> None:
    """Serve the offline OpenAI-compatible model server on 127.0.0.1."""
    from devswarm.offline.server import serve_forever

    try:
        serve_forever(scenario, port=port, log_path=log)
    except UserError as exc:
        _fail(str(exc))


from devswarm.commands import analysis, blocks, ops, server  # noqa: E402

for _module in (analysis, blocks, ops, server):
    _module.register(app)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        typer.echo("devswarm: interrupted", err=True)
        sys.exit(130)
    except Exception as exc:  # a bug of ours: one line for the user, the traceback in a file
        import tempfile
        import traceback

        path = Path(tempfile.gettempdir()) / "devswarm-error.log"
        path.write_text(traceback.format_exc())
        typer.echo(
            f"devswarm: internal error: {type(exc).__name__}: {exc} (traceback in {path})", err=True
        )
        sys.exit(3)


if __name__ == "__main__":
    main()
