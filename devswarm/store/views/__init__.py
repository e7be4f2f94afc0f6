"""The store's views: one SQL file each beside this module (``<name>.sql``), loaded by name.

Views hold no data, so every open creates them afresh from this release's files: a store
written by an older devswarm gets today's views (see devswarm.store.store).
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files

import duckdb

# Views other views read: created first, not exported (they are steps, not results).
BUILDING_BLOCKS: tuple[str, ...] = ("model_usage_by_agent",)

# The views a user reads, in the order they are created and exported.
VIEWS: tuple[str, ...] = (
    "agent_metrics",
    "run_summary",
    "role_metrics",
    "task_outcomes",
    "landing_timeline",
    "hot_files",
    "tool_errors",
    "model_latency",
    "tip_health",
)


@cache
def view_sql(name: str) -> str:
    """The SELECT of view ``name`` (the text of ``<name>.sql``)."""
    return files(__package__).joinpath(f"{name}.sql").read_text(encoding="utf-8")


def create_views(con: duckdb.DuckDBPyConnection, *, temp: bool = False) -> None:
    """Create (or replace) every view on ``con``; ``temp`` puts them in the temporary catalog,
    which DuckDB searches first (for a file opened read-only)."""
    kind = "TEMP VIEW" if temp else "VIEW"
    for name in (*BUILDING_BLOCKS, *VIEWS):
        con.execute(f"CREATE OR REPLACE {kind} {name} AS {view_sql(name)}")
