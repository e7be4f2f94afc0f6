"""Run configuration: one pydantic model built from flags, environment and Prefect blocks."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from devswarm.ids import is_slug
from devswarm.model.pricing import KNOWN_PRICES, Price
from devswarm.sandbox.env import pass_env_problem

# What a user can get wrong in numbers: a count where 0 makes no sense is at least 1; an
# amount (dollars, seconds) is finite and above 0 (a nan, inf or negative cap would switch a
# budget off or stop everything at once); turns and fan-outs may be 0 (none).
Count = Annotated[int, Field(ge=1)]
Turns = Annotated[int, Field(ge=0)]
Amount = Annotated[float, Field(gt=0, allow_inf_nan=False)]
ModelId = Annotated[str, Field(min_length=1)]
# A misspelt setting is refused, not ignored (in files, blocks, a resumed run's config.json).
STRICT = ConfigDict(extra="forbid")


class Models(BaseModel):
    """The model used for each role (a strong planner with cheaper workers is the economical mix)."""

    model_config = STRICT

    planner: ModelId = "gpt-4.1"
    worker: ModelId = "gpt-4.1-mini"
    judge: ModelId = "gpt-4.1"

    @classmethod
    def single(cls, model: str) -> Models:
        return cls(planner=model, worker=model, judge=model)


class AgentLimits(BaseModel):
    """Per-agent caps, checked before every model call."""

    model_config = STRICT

    max_steps: Count = 40
    max_tokens: Count = 600_000
    max_cost_usd: Amount = 3.0
    max_wall_seconds: Amount = 1800.0
    max_output_tokens: Count = 4096  # per call; also what a call reserves from the budget


class Budget(BaseModel):
    """Global caps for a run: finite by default, so nobody spends without bound by accident."""

    model_config = STRICT

    max_tokens: Count = 5_000_000
    max_cost_usd: Amount = 20.0
    max_wall_seconds: Amount = 4 * 3600.0
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

    model_config = STRICT

    @model_validator(mode="before")
    @classmethod
    def _old_names(cls, data: Any) -> Any:
        return renamed_settings(data)[0] if isinstance(data, dict) else data

    @field_validator("run_id")
    @classmethod
    def _run_id_is_a_slug(cls, value: str | None) -> str | None:
        # It names a folder, a branch and Prefect runs: no "..", slashes or spaces.
        if value is not None and not is_slug(value):
            raise ValueError("use lowercase letters, digits and dashes only (e.g. nightly-3)")
        return value

    @field_validator("base_url")
    @classmethod
    def _base_url_is_http(cls, value: str | None) -> str | None:
        if value is not None:
            parts = urlsplit(value)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ValueError("not an http(s) URL, e.g. http://localhost:8000/v1")
        return value

    @field_validator("pass_env")
    @classmethod
    def _pass_env_names(cls, names: list[str]) -> list[str]:
        for name in names:
            if problem := pass_env_problem(name):
                raise ValueError(f"{name!r}: {problem}")
        return names

    goal: str
    repo: Path
    branch: str | None = None  # default devswarm/<run id>
    check: str | None = None  # repository check; a landing may not turn it from passing to failing
    setup: str | None = None  # runs in each fresh worktree before the agent starts
    # The setup reaches the network only when the user says so (--setup-network): local
    # services and cloud metadata endpoints too, not only package indexes.
    setup_network: bool = False
    run_id: str | None = None  # default <repo>-<UTC time>-<4 hex>

    base_url: str | None = None
    api_key: SecretStr = SecretStr("")
    models: Models = Field(default_factory=Models)
    prices: dict[str, Price] = Field(default_factory=dict)
    request_timeout: Amount = 120.0
    # Model calls in flight at once across the swarm. None: 4 for an endpoint on this machine (a
    # laptop's server takes few; requests queue in devswarm instead of timing out in it), 32 for
    # a remote one. Fewer from the first "busy" answer (503) on.
    max_model_calls_at_once: Count | None = None

    max_cycles: Count = 3
    max_workers: Count = 8
    max_planners: Count = 4
    plan_depth: Turns = 2
    max_tasks_per_plan: Count = 12
    max_followups: Turns = 4  # follow-up plannings per cycle (from workers' handoffs)
    max_followup_tasks: Turns = 2
    max_scopes: Turns = 4  # sub-planners per planner (fan-out)
    conflict_turns: Turns = 2
    check_turns: Turns = 2
    command_timeout: Amount = 300.0
    # The verifier (devswarm.verify): checks the tip after landings, bisects a red one to its
    # culprit and acts on it during the cycle. Needs `check`.
    verify: bool = True
    on_red: Literal["revert", "repair"] = "revert"  # what happens to a confirmed culprit
    max_repairs: Turns = 2  # retries of a reverted task, or repairs, per culprit
    # Strict mode: the check runs on each landing candidate before the branch moves (merge queue).
    verify_before_land: bool = False
    # Agents' commands, checks and setup run in a sandbox (bubblewrap); False only when the user
    # says --no-sandbox: then agents can read the key and write the user's files.
    sandbox: bool = True
    # Variables of devswarm's environment that agents' commands, checks and setup also get
    # (--pass-env NAME); everything else but PATH, HOME, the locale and TERM stays out.
    pass_env: list[str] = Field(default_factory=list)

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
