"""Landing as a Prefect task: mechanical, no model call.

The worker's commit is replayed onto the tip (merge-tree + commit-tree; a rebase when it is
several commits or conflicts), then the branch is compare-and-swapped (devswarm/git/landing.py).
"""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from devswarm.git.workspace import LandResult, Workspace


@task(name="land", task_run_name="land · {worktree.name}", cache_policy=NO_CACHE, retries=0)
def land(workspace: Workspace, worktree: Path) -> LandResult:
    """Land a worker's commit on the branch through the process's landing lane."""
    return workspace.land(worktree)
