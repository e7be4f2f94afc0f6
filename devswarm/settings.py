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
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import SecretStr, ValidationError

from devswarm.config import SwarmConfig, renamed_settings
from devswarm.errors import UserError

_log = logging.getLogger("devswarm")
Location = tuple[str, ...]  # where a setting lives: ("budget", "max_cost_usd")


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
        goal = read_text(path, "goal file")
    if not goal or not goal.strip():
        raise UserError("the goal is empty; give --goal TEXT or --goal-file FILE")
    return goal


def read_text(path: Path, what: str) -> str:
    """A UTF-8 text file the user named (`what`: "goal file", "config file"), or one line
    saying why it cannot be read."""
    try:
        return path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise UserError(f"{what} {path} does not exist") from None
    except IsADirectoryError:
        raise UserError(f"{what} {path} is a folder, not a file") from None
    except UnicodeDecodeError as exc:
        raise UserError(f"{what} {path} is not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise UserError(f"{what} {path}: {exc.strerror or exc}") from None


def read_file(path: Path | None) -> dict[str, Any]:
    """Run settings from a TOML file (the same names as SwarmConfig's fields)."""
    if path is None:
        return {}
    try:
        data = tomllib.loads(read_text(path, "config file"))
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"config file {path}: not TOML: {exc}") from None
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
        raise UserError(f"config file {path}: {describe(exc)}") from None
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
    settings: dict[str, Any],
    *,
    goal: str,
    api_key: SecretStr | None,
    run_id: str | None = None,
    spelled: Mapping[Location, str] | None = None,
) -> SwarmConfig:
    """The run's SwarmConfig from merged settings, the goal and the key; one line on bad input.

    `spelled` says how the user wrote the settings they gave as flags (("budget",
    "max_cost_usd") -> "--max-cost"), so a refusal names the option the user typed.
    """
    names = {("run_id",): "--run-id", **(spelled or {})}
    if not settings.get("repo"):
        raise UserError("which repository? give --repo PATH or --repository-block NAME")
    if not Path(settings["repo"]).expanduser().exists():
        raise UserError(f"repository {settings['repo']} does not exist")
    try:
        cfg = SwarmConfig.model_validate({**settings, "goal": goal, "run_id": run_id})
    except ValidationError as exc:
        raise UserError(describe(exc, names)) from None
    cfg.api_key = api_key or SecretStr("")
    if cfg.home is not None:
        cfg.home = Path(cfg.home).expanduser().resolve()
    home_name = names.get(("home",)) or ("DEVSWARM_HOME" if os.environ.get("DEVSWARM_HOME") else "")
    _check_folder(cfg.home, home_name or "the data folder")
    if cfg.db is not None and Path(cfg.db).is_dir():
        raise UserError(f"{names.get(('db',), 'db')} {cfg.db}: a folder, not a DuckDB file")
    return cfg


def _check_folder(path: Path, name: str) -> None:
    """Refuse a data folder that is a file, or that this user could not create or write."""
    if path.exists() and not path.is_dir():
        raise UserError(f"{name} {path} is a file, not a folder")
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"{name} {path}: {existing} is not a folder this user can write")


def models_layer(
    model: str | None, planner: str | None, worker: str | None, judge: str | None
) -> dict[str, Any] | None:
    """`--model` for every role, then the per-role flags."""
    roles = {"planner": model, "worker": model, "judge": model}
    roles.update(
        {
            k: v
            for k, v in {"planner": planner, "worker": worker, "judge": judge}.items()
            if v is not None
        }
    )
    # An empty id the user typed stays, to be refused by the model's validation.
    roles = {k: v for k, v in roles.items() if v is not None}
    return roles or None


def describe(exc: ValidationError, spelled: Mapping[Location, str] | None = None) -> str:
    """The first problem of a validation error as one line, naming the setting as the user
    wrote it: "--workers 0: must be at least 1", "budget.foo: unknown setting"."""
    first = exc.errors()[0]
    loc = tuple(str(part) for part in first["loc"])
    where = next(
        (spelled[loc[:n]] for n in range(len(loc), 0, -1) if spelled and loc[:n] in spelled),
        ".".join(loc),
    )
    kind, ctx = first["type"], first.get("ctx") or {}
    if kind == "extra_forbidden":
        return f"{where}: unknown setting (the names are SwarmConfig's fields, devswarm/config.py)"
    text = {
        "greater_than_equal": f"must be at least {ctx.get('ge')}",
        "greater_than": f"must be above {ctx.get('gt')}",
        "finite_number": "must be a finite number",
    }.get(kind) or first["msg"].removeprefix("Value error, ")
    value = first.get("input")
    shown = f"{value:g}" if isinstance(value, float) else value
    if where.startswith("--") and isinstance(shown, (str, int, float)) and str(shown).strip():
        where = f"{where} {shown}"
    return f"{where}: {text}" if where else text
