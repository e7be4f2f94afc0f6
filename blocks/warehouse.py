"""Warehouse block: where devswarm keeps its data and the DuckDB store."""

from __future__ import annotations

from prefect.blocks.core import Block
from pydantic import Field


class Warehouse(Block):
    """devswarm's data folder (clones, worktrees, records) and the DuckDB file."""

    _block_type_slug = "devswarm-warehouse"
    _block_type_name = "devswarm warehouse"
    _description = "Where devswarm keeps clones, records and the DuckDB store."

    home: str | None = Field(
        default=None, description="Data folder (default $DEVSWARM_HOME or ~/.local/share/devswarm)"
    )
    db: str | None = Field(default=None, description="DuckDB file (default <home>/devswarm.duckdb)")
