"""devswarm CLI commands: `devswarm init` registers devswarm's Prefect block types and saves
block documents (model provider, repository, warehouse) from flags and the environment."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated

import typer

from devswarm.commands.common import fail, quiet_prefect
from devswarm.errors import UserError

# Prefect's rule for block document names.
_NAME = re.compile(r"^[a-z0-9][a-z0-9-]*$")


def register(app: typer.Typer) -> None:
    """Add this module's commands to the devswarm CLI."""
    app.command("init")(init)


def init(
    provider: Annotated[str, typer.Option(help="Name of the model-provider block")] = "default",
    base_url: Annotated[
        str | None, typer.Option(help="OpenAI-compatible endpoint (else $OPENAI_BASE_URL)")
    ] = None,
    model: Annotated[str | None, typer.Option(help="One model for every role")] = None,
    planner_model: Annotated[str | None, typer.Option(help="Planner's model")] = None,
    worker_model: Annotated[str | None, typer.Option(help="Workers' model")] = None,
    judge_model: Annotated[str | None, typer.Option(help="Judge's model")] = None,
    repo: Annotated[
        Path | None, typer.Option(help="A git repository: saves a repository block")
    ] = None,
    repository: Annotated[str, typer.Option(help="Name of the repository block")] = "default",
    branch: Annotated[str | None, typer.Option(help="Branch to land on")] = None,
    check: Annotated[str | None, typer.Option(help="Repository check command")] = None,
    setup: Annotated[str | None, typer.Option(help="Setup command for each worktree")] = None,
    warehouse: Annotated[str, typer.Option(help="Name of the warehouse block")] = "default",
    home: Annotated[Path | None, typer.Option(help="Data folder (default $DEVSWARM_HOME)")] = None,
    db: Annotated[
        Path | None, typer.Option(help="DuckDB file (default <home>/devswarm.duckdb)")
    ] = None,
) -> None:
    """Register devswarm's block types on the Prefect server and save block documents.

    The API key comes from $OPENAI_API_KEY only (a flag would show in `ps` and shell history);
    it is stored as a secret and shown masked.
    """

    try:
        key = os.environ.get("OPENAI_API_KEY", "")
        base_url = base_url or os.environ.get("OPENAI_BASE_URL")
        if not key and not base_url:
            raise UserError("no model endpoint: set OPENAI_API_KEY and/or give --base-url")
        if repo is not None:
            repo = repo.expanduser().resolve()
            if not (repo / ".git").exists():
                raise UserError(f"{repo} is not a git repository")
        for name in (provider, warehouse, repository):
            if not _NAME.match(name):
                raise UserError(f"block name {name!r}: use lowercase letters, numbers and dashes")
        quiet_prefect()
        from prefect.settings import get_current_settings

        if not get_current_settings().api.url:
            typer.echo(
                "note: PREFECT_API_URL is not set; saving to Prefect's local database "
                "(start a server with: devswarm server start)",
                err=True,
            )
        saved = _save(
            provider=provider,
            key=key,
            base_url=base_url,
            models=(model, planner_model, worker_model, judge_model),
            repo=repo,
            repository=repository,
            repo_fields={"branch": branch, "check": check, "setup": setup},
            warehouse=warehouse,
            home=home,
            db=db,
        )
    except UserError as exc:
        fail(str(exc))
    for line in saved:
        typer.echo(line)


def _save(
    *,
    provider: str,
    key: str,
    base_url: str | None,
    models: tuple[str | None, ...],
    repo: Path | None,
    repository: str,
    repo_fields: dict,
    warehouse: str,
    home: Path | None,
    db: Path | None,
) -> list[str]:
    from pydantic import SecretStr

    from blocks import ModelProvider, Repository, Warehouse

    lines = []
    try:
        for block_type in (ModelProvider, Repository, Warehouse):
            block_type.register_type_and_schema()
        lines.append(
            "registered block types: devswarm-model-provider, devswarm-repository, "
            "devswarm-warehouse"
        )
        one, planner, worker, judge = models
        roles = {
            "planner_model": planner or one,
            "worker_model": worker or one,
            "judge_model": judge or one,
        }
        ModelProvider(
            base_url=base_url,
            api_key=SecretStr(key),
            **{k: v for k, v in roles.items() if v},
        ).save(provider, overwrite=True)
        lines.append(
            f"saved devswarm-model-provider/{provider} "
            f"({base_url or 'OpenAI'}; key {'from OPENAI_API_KEY, stored as a secret' if key else 'none'})"
        )
        if repo is not None:
            Repository(
                path=str(repo), **{k: v for k, v in repo_fields.items() if v is not None}
            ).save(repository, overwrite=True)
            lines.append(f"saved devswarm-repository/{repository} ({repo})")
        Warehouse(
            home=str(home.expanduser().resolve()) if home else None,
            db=str(db.expanduser().resolve()) if db else None,
        ).save(warehouse, overwrite=True)
        lines.append(f"saved devswarm-warehouse/{warehouse} ({home or 'default data folder'})")
    except UserError:
        raise
    except Exception as exc:  # the Prefect server's own refusal (auth, connection): one line
        raise UserError(f"Prefect refused: {str(exc).splitlines()[0][:200]}") from None
    return lines
