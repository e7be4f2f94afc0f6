"""Settings → one SwarmConfig: saved blocks, then a TOML file, then flags (later layers win).

The CLI (`devswarm run`) and the scheduled deployment (flows/deploy.py) both build their run's
configuration here. Each layer is a plain dict in SwarmConfig's shape (nested for `models`,
`budget`, `limits`, ...); None means "not set here", so a lower layer's value stands. The API key
is never part of a layer: it comes from the environment or a provider block, as a SecretStr.
"""

from __future__ import annotations

import logging
import os
import tomllib
from pathlib import Path
from typing import Any

from pydantic import SecretStr, ValidationError

from devswarm.config import SwarmConfig, renamed_settings
from devswarm.errors import UserError

_log = logging.getLogger("devswarm")


def api_key_from_env() -> SecretStr:
    """The model API key from OPENAI_API_KEY, taken out of this process's environment, so no
    process it starts inherits it (its own /proc/<pid>/environ still shows it; the sandbox's
    PID namespace is what hides that from agents)."""
    return SecretStr(os.environ.pop("OPENAI_API_KEY", ""))


def read_goal(goal: str | None, goal_file: Path | str | None, *, base: Path | None = None) -> str:
    """The goal's text: `goal`, or the file (relative to `base` when given and not absolute)."""
    if goal_file is not None:
        path = Path(goal_file).expanduser()
        if base is not None and not path.is_absolute():
            path = base / path
        if not path.is_file():
            raise UserError(f"goal file {path} does not exist")
        goal = path.read_text()
    if not goal or not goal.strip():
        raise UserError("the goal is empty; give --goal TEXT or --goal-file FILE")
    return goal


def read_file(path: Path | None) -> dict[str, Any]:
    """Run settings from a TOML file (the same names as SwarmConfig's fields)."""
    if path is None:
        return {}
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"config file {path}: {exc}") from None
    data, notes = renamed_settings(data)
    for note in notes:
        _log.warning("devswarm: config file %s: %s", path, note)
    if "api_key" in data:
        raise UserError(
            f"config file {path}: keep the API key out of files; use OPENAI_API_KEY or a block"
        )
    try:
        SwarmConfig.model_validate({"goal": "x", "repo": ".", **data})
    except ValidationError as exc:
        raise UserError(f"config file {path}: {_first_error(exc)}") from None
    return data


def merge(*layers: dict[str, Any] | None) -> dict[str, Any]:
    """Layers merged in order: a later layer's set values win; nested dicts merge key by key."""
    out: dict[str, Any] = {}
    for layer in layers:
        for key, value in (layer or {}).items():
            if value is None:
                continue
            if isinstance(value, dict):
                below = out.get(key)
                out[key] = merge(below if isinstance(below, dict) else {}, value)
            else:
                out[key] = value
    return out


def build(
    settings: dict[str, Any], *, goal: str, api_key: SecretStr | None, run_id: str | None = None
) -> SwarmConfig:
    """The run's SwarmConfig from merged settings, the goal and the key; one line on bad input."""
    if not settings.get("repo"):
        raise UserError("which repository? give --repo PATH or --repository-block NAME")
    if not Path(settings["repo"]).expanduser().exists():
        raise UserError(f"repository {settings['repo']} does not exist")
    try:
        cfg = SwarmConfig.model_validate({**settings, "goal": goal, "run_id": run_id})
    except ValidationError as exc:
        raise UserError(_first_error(exc)) from None
    cfg.api_key = api_key or SecretStr("")
    if cfg.home is not None:
        cfg.home = Path(cfg.home).expanduser().resolve()
    return cfg


def models_layer(
    model: str | None, planner: str | None, worker: str | None, judge: str | None
) -> dict[str, Any] | None:
    """`--model` for every role, then the per-role flags."""
    roles = {"planner": model, "worker": model, "judge": model}
    roles.update(
        {k: v for k, v in {"planner": planner, "worker": worker, "judge": judge}.items() if v}
    )
    roles = {k: v for k, v in roles.items() if v}
    return roles or None


def _first_error(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(map(str, first["loc"]))
    return f"{where}: {first['msg']}" if where else first["msg"]
