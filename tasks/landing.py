"""Landing as a Prefect task: mechanical (rebase onto the tip + compare-and-swap), no model call."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from devswarm.git.workspace import LandResult, Workspace


@task(name="land", task_run_name="land · {worktree.name}", cache_policy=NO_CACHE, retries=0)
def land(workspace: Workspace, worktree: Path) -> LandResult:
    """Land a worker's commit on the branch through the process's landing lane."""
    return workspace.land(worktree)
