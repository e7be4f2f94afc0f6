"""What a run remembers across a crash (its `state.json`, and its spend in `ledger.json`, rewritten
after every model call: state.json can hold tens of KB of cycle summaries), and what earlier
runs tell it."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from devswarm.model.capabilities import Capabilities
from devswarm.model.ledger import Spent


class RunState(BaseModel):
    """The tips each cycle planned from and the hot files its planners were told (so a resumed
    run's planners send the same requests), the finished cycles, the last green tip, hot files,
    the swarm flow runs that ran it (crash marking finds them by id), and what the endpoint
    accepts for each model (a resume does not pay to learn it again)."""

    cycle_tips: dict[int, str] = {}
    cycle_hot_files: dict[int, dict[str, int]] = {}
    cycles: list[dict[str, Any]] = []
    last_green: str | None = None
    hot_files: dict[str, int] = {}
    flow_runs: list[str] = []
    capabilities: dict[str, Capabilities] = {}

    @classmethod
    def load(cls, path: Path) -> RunState:
        return cls.model_validate_json(path.read_text()) if path.exists() else cls()

    def save(self, path: Path) -> None:
        _write_atomically(path, self.model_dump_json(indent=1))


def load_spent(path: Path) -> Spent:
    """What the run spent in its earlier processes (nothing if it has no ledger file yet)."""
    return Spent.model_validate_json(path.read_text()) if path.exists() else Spent()


def save_spent(path: Path, spent: Spent) -> None:
    _write_atomically(path, spent.model_dump_json())


def _write_atomically(path: Path, text: str) -> None:
    """A crash leaves the old file or the new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def recorded_flow_runs(run_dir: Path) -> list[str]:
    """The swarm flow runs a run recorded in its state (none if it has no state yet)."""
    try:
        return RunState.load(run_dir / "state.json").flow_runs
    except (OSError, ValueError):
        return []


def earlier_hot_files(db: Path, repo: Path) -> Counter[str]:
    """Conflicts per file in earlier runs on this repository (planners keep them apart)."""
    hot: Counter[str] = Counter()
    if not db.exists():
        return hot
    try:
        from devswarm.store.warehouse import open_readonly

        store = open_readonly(db)
        try:
            _, found = store.query(
                "SELECT l.conflict_files FROM landings l JOIN runs r USING (run_id)"
                " WHERE r.repo_path = ? AND l.status = 'conflict'",
                [str(repo)],
            )
        finally:
            store.close()
    except Exception:  # the history is a hint; a busy or old store must not stop a run
        return hot
    for (files,) in found:
        hot.update(json.loads(files or "[]"))
    return hot
