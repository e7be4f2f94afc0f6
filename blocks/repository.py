"""Repository block: which repository, which branch to land on, its check and setup commands."""

from __future__ import annotations

from prefect.blocks.core import Block
from pydantic import Field


class Repository(Block):
    """A git repository the swarm works on. Only `branch` is ever written to."""

    _block_type_slug = "devswarm-repository"
    _block_type_name = "devswarm repository"
    _description = "A git repository for devswarm: path, landing branch, check and setup commands."

    path: str = Field(description="Path of the git repository on the machine that runs the swarm")
    branch: str | None = Field(
        default=None, description="Branch to land on (default devswarm/<run>)"
    )
    check: str | None = Field(
        default=None, description="Repository check, e.g. 'python -m pytest -q'"
    )
    setup: str | None = Field(
        default=None, description="Runs in each fresh worktree, e.g. 'pip install -e .'"
    )
