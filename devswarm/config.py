"""Run configuration: one pydantic model built from flags, environment and Prefect blocks."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr, model_validator

from devswarm.model.pricing import KNOWN_PRICES, Price


class Models(BaseModel):
    """The model used for each role (a strong planner with cheaper workers is the economical mix)."""

    planner: str = "gpt-4.1"
    worker: str = "gpt-4.1-mini"
    judge: str = "gpt-4.1"

    @classmethod
    def single(cls, model: str) -> Models:
        return cls(planner=model, worker=model, judge=model)


class AgentLimits(BaseModel):
    """Per-agent caps, checked before every model call."""

    max_steps: int = 40
    max_tokens: int = 600_000
    max_cost_usd: float = 3.0
    max_wall_seconds: float = 1800.0
    max_output_tokens: int = 4096  # per call; also what a call reserves from the budget


class Budget(BaseModel):
    """Global caps for a run: finite by default, so nobody spends without bound by accident."""

    max_tokens: int = 5_000_000
    max_cost_usd: float = 20.0
    max_wall_seconds: float = 4 * 3600.0
    fallback_price: Price = Price(input=5.0, cached_input=5.0, output=15.0)


def default_home() -> Path:
    """devswarm's data folder: $DEVSWARM_HOME, else $XDG_DATA_HOME/devswarm, else ~/.local/share/devswarm."""
    if env := os.environ.get("DEVSWARM_HOME"):
        return Path(env).expanduser().resolve()
    xdg = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return (Path(xdg) / "devswarm").resolve()


# Settings an older devswarm named otherwise: old name -> new name. Still read (config files,
# a resumed run's config.json, deployment parameters), each with one line naming the new one.
RENAMED_SETTINGS = {"run_name": "run_id", "use_bwrap": "sandbox"}


def renamed_settings(data: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """`data` with old setting names replaced by the new ones, and a note for each replaced."""
    out, notes = dict(data), []
    for old, new in RENAMED_SETTINGS.items():
        if old in out:
            value = out.pop(old)
            if old == "use_bwrap":  # None meant "where it works": the sandbox is on now
                value = value is not False
            out.setdefault(new, value)
            notes.append(f"the setting {old} is now called {new}")
    return out, notes


class SwarmConfig(BaseModel):
    """Everything one swarm run needs. Secrets stay in SecretStr and never reach records."""

    @model_validator(mode="before")
    @classmethod
    def _old_names(cls, data: Any) -> Any:
        return renamed_settings(data)[0] if isinstance(data, dict) else data

    goal: str
    repo: Path
    branch: str | None = None  # default devswarm/<run id>
    check: str | None = None  # repository check; a landing may not turn it from passing to failing
    setup: str | None = None  # runs in each fresh worktree before the agent starts
    run_id: str | None = None  # default <repo>-<UTC time>-<4 hex>

    base_url: str | None = None
    api_key: SecretStr = SecretStr("")
    models: Models = Field(default_factory=Models)
    prices: dict[str, Price] = Field(default_factory=dict)
    request_timeout: float = 120.0
    max_model_calls_at_once: int = 32

    max_cycles: int = 3
    max_workers: int = 8
    max_planners: int = 4
    plan_depth: int = 2
    max_tasks_per_plan: int = 12
    max_followups: int = 4  # follow-up plannings per cycle (from workers' handoffs)
    max_followup_tasks: int = 2
    max_scopes: int = 4  # sub-planners per planner (fan-out)
    conflict_turns: int = 2
    check_turns: int = 2
    command_timeout: float = 300.0
    # The verifier (devswarm.verify): checks the tip after landings, bisects a red one to its
    # culprit and acts on it during the cycle. Needs `check`.
    verify: bool = True
    on_red: Literal["revert", "repair"] = "revert"  # what happens to a confirmed culprit
    max_repairs: int = Field(default=2, ge=0)  # retries of a reverted task, or repairs, per culprit
    # Strict mode: the check runs on each landing candidate before the branch moves (merge queue).
    verify_before_land: bool = False
    # Agents' commands, checks and setup run in a sandbox (bubblewrap); False only when the user
    # says --no-sandbox: then agents can read the key and write the user's files.
    sandbox: bool = True

    # Scale-out (docs/scale-out.md): "local" runs workers as subflows in this process;
    # "deployment" runs each on a Prefect work pool and lands through a shared git remote.
    executor: Literal["local", "deployment"] = "local"
    remote: str | None = None  # the shared remote's URL (default: a bare repository in <home>)
    worker_deployment: str = "work-remote/devswarm-worker"
    # Where workers leave reports and records: None, the run folder (a disk both sides see);
    # else a Prefect storage block, "<block type slug>/<name>" (e.g. "s3-bucket/devswarm").
    result_storage: str | None = None

    limits: AgentLimits = Field(default_factory=AgentLimits)
    budget: Budget = Field(default_factory=Budget)

    home: Path = Field(default_factory=default_home)
    db: Path | None = None  # default <home>/devswarm.duckdb

    def price(self, model: str) -> Price | None:
        return self.prices.get(model) or KNOWN_PRICES.get(model)

    @property
    def db_path(self) -> Path:
        return self.db or self.home / "devswarm.duckdb"
