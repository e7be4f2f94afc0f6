"""The environment of an agent's command: an allowlist of ours, and the settings we add.

Nothing passes unless named: a denylist of credential-looking names let DATABASE_URL,
GITHUB_PAT, SENTRY_DSN and proxy URLs with passwords through. What passes: PATH, HOME, the
locale, TERM, TZ, TMPDIR, and the names the user lists (`pass_env`); then devswarm's own git
and Python settings. Inside the sandbox run_command points HOME and TMPDIR at private folders.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterable, Mapping

from devswarm.errors import UserError
from devswarm.git.plumbing import redirects_git

# What every command may see of ours.
ALLOWED_NAMES = ("PATH", "HOME", "LANG", "LANGUAGE", "TERM", "TZ", "TMPDIR")
ALLOWED_PREFIXES = ("LC_",)
# Git config for every command: no git transport to a local path. Without a sandbox, the
# private clone's `origin` is the user's repository, and `git push origin ...` would otherwise
# write the user's branches (in the sandbox the user's repository is read-only anyway).
AGENT_GIT_CONFIG = {"protocol.file.allow": "never"}
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def pass_env_problem(name: str) -> str | None:
    """What is wrong with passing variable `name` to agents' commands, or None: not a variable
    name, or one that would take git's settings from devswarm."""
    if not _NAME.fullmatch(name):
        return "not an environment variable name"
    if redirects_git(name.upper()):
        return "devswarm sets git's environment itself"
    return None


def check_pass_env(names: Iterable[str]) -> list[str]:
    """The names a user passes (`--pass-env`), checked: UserError for one with a problem
    (pass_env_problem)."""
    checked = []
    for name in names:
        if problem := pass_env_problem(name):
            raise UserError(f"--pass-env {name!r}: {problem}")
        checked.append(name)
    return checked


def command_env(
    base: Mapping[str, str] | None = None,
    *,
    pass_env: Iterable[str] = (),
    secrets: Iterable[str] = (),
) -> dict[str, str]:
    """The environment for an agent's command, from `base` (default os.environ).

    Keeps only ALLOWED_NAMES, LC_* and `pass_env`, and of those none whose value contains one
    of `secrets` (pass the model API key: it is caught under whatever name it hides). Sets
    AGENT_GIT_CONFIG for git (no push or fetch to a local path, such as the user's
    repository) and puts the directory of the running interpreter first on PATH, so `python`
    is the one devswarm runs on.
    """
    source = os.environ if base is None else base
    wanted = set(check_pass_env(pass_env))
    needles = [s for s in secrets if s]
    env: dict[str, str] = {}
    for name, value in source.items():
        if not (name in ALLOWED_NAMES or name.startswith(ALLOWED_PREFIXES) or name in wanted):
            continue
        if any(n in value for n in needles):
            continue
        env[name] = value
    bindir = os.path.dirname(sys.executable)
    rest = [p for p in env.get("PATH", os.defpath).split(os.pathsep) if p and p != bindir]
    env["PATH"] = os.pathsep.join([bindir, *rest])
    env["GIT_CONFIG_COUNT"] = str(len(AGENT_GIT_CONFIG))
    for i, (key, value) in enumerate(AGENT_GIT_CONFIG.items()):
        env[f"GIT_CONFIG_KEY_{i}"], env[f"GIT_CONFIG_VALUE_{i}"] = key, value
    # No command may wait for a password: there is nobody to type it.
    env["GIT_TERMINAL_PROMPT"] = "0"
    # __pycache__ folders would appear as untracked files in the worktree and could be landed.
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    # stdout and stderr share one file; unbuffered Python keeps a traceback after the prints
    # that came before it instead of ahead of them.
    env["PYTHONUNBUFFERED"] = "1"
    return env
