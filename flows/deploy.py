"""The swarm by block names: the entrypoint of prefect.yaml's scheduled deployment.

A deployment's parameters are stored by Prefect and shown in the UI, so they hold only names
(of a repository, a model provider and a warehouse block), a goal and budgets; the API key is
read from the provider block inside the run and never becomes a parameter.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow

from devswarm.config import SwarmConfig
from devswarm.errors import UserError


def config_from_blocks(
    repository: str,
    provider: str = "default",
    warehouse: str | None = "default",
    *,
    goal: str | None = None,
    goal_file: str | None = None,
    **settings: Any,
) -> SwarmConfig:
    """Build a SwarmConfig from saved blocks, a goal (text or a file) and SwarmConfig fields.

    A relative goal file is read from the repository; `settings` are SwarmConfig fields
    (max_cycles, max_workers, run_name, ...) plus `max_cost_usd` and `max_tokens` for the budget.
    """
    from blocks import ModelProvider, Repository, Warehouse

    repo = _load(Repository, repository)
    model = _load(ModelProvider, provider)
    if goal_file:
        path = Path(goal_file).expanduser()
        path = path if path.is_absolute() else Path(repo.path) / path
        if not path.is_file():
            raise UserError(f"goal file {path} does not exist")
        goal = path.read_text()
    if not goal or not goal.strip():
        raise UserError("the goal is empty; give goal or goal_file")
    budget = {k: settings.pop(k) for k in ("max_cost_usd", "max_tokens") if k in settings}
    config = SwarmConfig(
        goal=goal,
        repo=Path(repo.path),
        branch=repo.branch,
        check=repo.check,
        setup=repo.setup,
        base_url=model.base_url,
        api_key=model.api_key,
        models=model.models(),
        prices=model.prices,
        **{k: v for k, v in settings.items() if v is not None},
    )
    for key, value in budget.items():
        if value is not None:
            setattr(config.budget, key, value)
    if warehouse:
        store = _load(Warehouse, warehouse)
        if store.home:
            config.home = Path(store.home).expanduser()
        if store.db:
            config.db = Path(store.db).expanduser()
    return config


def _load(block_type: Any, name: str) -> Any:
    try:
        return block_type.load(name)
    except ValueError as exc:  # Prefect: "Unable to find block document named ..."
        raise UserError(
            f"no {block_type._block_type_name} block named {name!r}: create it with devswarm init"
        ) from exc


@flow(name="swarm-from-blocks", flow_run_name="swarm · {repository}", persist_result=False)
def swarm_from_blocks(
    repository: str,
    goal_file: str | None = "GOAL.md",
    goal: str | None = None,
    provider: str = "default",
    warehouse: str | None = "default",
    max_cycles: int = 3,
    max_workers: int = 8,
    max_cost_usd: float = 20.0,
    max_tokens: int = 5_000_000,
    run_name: str | None = None,
) -> dict[str, Any]:
    """Run the swarm on a repository block with a provider and a warehouse block.

    `goal` (text) wins over `goal_file` (relative to the repository). Runs the swarm's body in
    this flow run, so the configuration, which holds the key, is never a flow parameter.
    """
    from devswarm.run.run import new_run_name
    from flows.swarm import swarm

    config = config_from_blocks(
        repository,
        provider,
        warehouse,
        goal=goal,
        goal_file=None if goal else goal_file,
        max_cycles=max_cycles,
        max_workers=max_workers,
        max_cost_usd=max_cost_usd,
        max_tokens=max_tokens,
        run_name=run_name,
    )
    config.run_name = config.run_name or new_run_name(config.repo)
    return swarm.fn(config)
