"""Landing as a Prefect task: mechanical (the commit replayed onto the tip, or rebased when it
cannot be replayed, then a compare-and-swap of the branch), no model call."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from devswarm.git.landing import Lander, LandResult
from devswarm.ids import LAND_RUN_NAME


@task(name="land", task_run_name=LAND_RUN_NAME, cache_policy=NO_CACHE, retries=0)
def land(lane: Lander, worktree: Path, agent_id: str) -> LandResult:
    """Land a worker's commit on the branch through the process's landing lane, or in strict
    mode through the verifier's merge queue (`agent_id`, the worker's, names the Prefect task
    run)."""
    return lane.land(worktree)
