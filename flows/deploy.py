"""The swarm by block names: the entrypoint of prefect.yaml's scheduled deployment.

A deployment's parameters are stored by Prefect and shown in the UI, so they hold only names
(of a repository, a model provider and a warehouse block), a goal and budgets; the API key is
read from the provider block inside the run and never becomes a parameter.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow
from prefect.runtime import flow_run
from prefect.states import State

from blocks import settings_from_blocks
from devswarm import settings
from devswarm.config import SwarmConfig
from devswarm.ids import new_run_id, swarm_run_names
from flows.swarm import swarm
from tasks.history import rename_flow_run


def config_from_blocks(
    repository: str,
    provider: str = "default",
    warehouse: str | None = "default",
    *,
    goal: str | None = None,
    goal_file: str | None = None,
    **overrides: Any,
) -> SwarmConfig:
    """A SwarmConfig from saved blocks, a goal (text, or a file relative to the repository) and
    SwarmConfig fields (max_cycles, max_workers, run_id, ...; max_cost_usd and max_tokens go
    to the budget)."""
    layer, key = settings_from_blocks(repository, provider, None)
    text = settings.read_goal(goal, None if goal else goal_file, base=Path(layer["repo"]))
    store, _ = settings_from_blocks(None, None, warehouse)
    budget = {k: overrides.pop(k) for k in ("max_cost_usd", "max_tokens") if k in overrides}
    run_id = overrides.pop("run_id", None)
    merged = settings.merge(layer, store, overrides, {"budget": budget})
    return settings.build(merged, goal=text, api_key=key, run_id=run_id)


@flow(name="swarm-from-blocks", flow_run_name="swarm: {repository}", persist_result=False)
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
    run_id: str | None = None,
    run_name: str | None = None,  # the old name of run_id
) -> State:
    """Run the swarm on a repository block with a provider and a warehouse block.

    `goal` (text) wins over `goal_file` (relative to the repository). Runs the swarm's body in
    this flow run (ending in its state): the configuration, which holds the key, is no parameter.
    """
    config = config_from_blocks(
        repository,
        provider,
        warehouse,
        goal=goal,
        goal_file=goal_file,
        max_cycles=max_cycles,
        max_workers=max_workers,
        max_cost_usd=max_cost_usd,
        max_tokens=max_tokens,
        run_id=run_id or run_name,
    )
    config.run_id = config.run_id or new_run_id(config.repo)
    # The run was named before its id was known; it is the swarm's flow run: name it so.
    rename_flow_run(flow_run.id, swarm_run_names(config.run_id)[0])
    return swarm.fn(config)
