"""Running git: devswarm's identity and safety config, a clean environment, errors.

Every git command devswarm runs goes through `git()` (or `run_git()` underneath it): the `-c`
settings below win over every config file, the variables that point git elsewhere are
dropped, and each command runs in its own process group. (Reading a ref or a worktree's HEAD
from its file costs no process: refs.py.)

Commands run in the private clone and its worktrees, which read what agents wrote, read no
system or global config either (`user_config=False`, the default): a filter, textconv or merge
driver is defined in config only, so none is defined for them, and whatever an agent's
`.gitattributes` names runs nothing (docs/sandbox.md, "devswarm's own git commands"). Only
transport (clone, fetch, push: the user's repository and the shared remote) reads the user's
config, for its credentials, ssh and URL settings.
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
from pathlib import Path
from typing import Any

from devswarm.errors import UserError

IDENTITY_NAME = "devswarm"
IDENTITY_EMAIL = "devswarm@localhost"

# Applied to every git command devswarm runs (the user's repository included: `-c` only changes
# this one process). They win over every config file, a worktree's own included.
SAFE_CONFIG: dict[str, str] = {
    "commit.gpgsign": "false",
    "tag.gpgsign": "false",
    "core.hooksPath": "/dev/null",
    "gc.auto": "0",
    "maintenance.auto": "false",
    "rerere.enabled": "false",
    "rebase.autoStash": "false",
    "rebase.autoSquash": "false",
    "rebase.updateRefs": "false",
    "core.fsmonitor": "false",  # a daemon per worktree would be 32 daemons; or an agent's program
    "core.quotePath": "false",
    "core.pager": "cat",
    "advice.detachedHead": "false",
    # Never enter a repository inside a worktree: its config is the agent's (fsmonitor,
    # filters...). Diffs name --ignore-submodules=all too, which .gitmodules cannot override.
    "diff.ignoreSubmodules": "all",
    "submodule.recurse": "false",
    "fetch.recurseSubmodules": "false",
}
SAFE_ARGS: tuple[str, ...] = tuple(a for k, v in SAFE_CONFIG.items() for a in ("-c", f"{k}={v}"))

# Local config of the private clone: it also governs the `git` commands agents run themselves.
CLONE_CONFIG: dict[str, str] = {
    "user.name": IDENTITY_NAME,
    "user.email": IDENTITY_EMAIL,
    **SAFE_CONFIG,
}

# No system or global config (see the module's docstring).
ISOLATED_ENV = {"GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull}
# Of the user's config, the files a command in a worktree still honours: which paths are
# ignored decides what is committed, and attributes decide how files merge (read the same by
# the rebase and the replay). Patterns only: they name drivers, which stay undefined.
KEPT_USER_PATHS = ("core.excludesFile", "core.attributesFile")
# Diff options for devswarm's own diffs of a worktree: no external diff or textconv program,
# and no look inside a nested repository (a command-line flag, so .gitmodules cannot undo it).
DIFF_SAFE = ("--no-ext-diff", "--no-textconv", "--ignore-submodules=all")

# Variables that point git elsewhere: at another repository (inherited from a hook or a test
# harness, they would make git act on the wrong one), or at config smuggled in through the
# environment. Neither devswarm's own git nor an agent's command inherits them.
GIT_REDIRECT_VARS = frozenset(
    {
        "GIT_DIR",
        "GIT_WORK_TREE",
        "GIT_INDEX_FILE",
        "GIT_OBJECT_DIRECTORY",
        "GIT_ALTERNATE_OBJECT_DIRECTORIES",
        "GIT_COMMON_DIR",
        "GIT_NAMESPACE",
        "GIT_CONFIG_PARAMETERS",
        "GIT_CONFIG_COUNT",
        "GIT_CONFIG",  # an old name for the config file to read
    }
)
GIT_REDIRECT_PREFIXES = ("GIT_CONFIG_KEY_", "GIT_CONFIG_VALUE_")
# What a parent git process leaves for its hooks; devswarm's own git drops these too.
PARENT_GIT_VARS = frozenset(
    {
        "GIT_PREFIX",
        "GIT_QUARANTINE_PATH",
        "GIT_REFLOG_ACTION",
        "GIT_AUTHOR_DATE",
        "GIT_COMMITTER_DATE",
        "GIT_INDEX_VERSION",
    }
)

# A fetch that writes only the ref it names (no FETCH_HEAD, tags, submodules or maintenance), so
# processes sharing a clone never write the same file.
FETCH_ARGS = (
    "fetch",  # not --quiet: it would hide why a fetch was rejected
    "--no-tags",
    "--no-write-fetch-head",
    "--no-recurse-submodules",
    "--no-auto-maintenance",
    "--no-write-commit-graph",
)
# What git says when a ref update loses to another writer (a push or fetch that is not a
# fast-forward, or the remote's compare-and-swap on its ref failing).
_RACE_MESSAGES = (
    "[rejected]",
    "non-fast-forward",
    "fetch first",
    "stale info",
    "cannot lock ref",
    "failed to update ref",
    "incorrect old value",
)


class GitError(RuntimeError):
    """A git command failed in a way devswarm did not expect."""

    def __init__(self, message: str, stderr: str = "") -> None:
        super().__init__(message)
        self.stderr = stderr


def redirects_git(name: str) -> bool:
    """True for an environment variable that points git at another repository or config."""
    return name in GIT_REDIRECT_VARS or name.startswith(GIT_REDIRECT_PREFIXES)


def git_env() -> dict[str, str]:
    """The environment of devswarm's git commands: ours, minus what points git elsewhere."""
    env = {k: v for k, v in os.environ.items() if not redirects_git(k) and k not in PARENT_GIT_VARS}
    env.update(
        GIT_AUTHOR_NAME=IDENTITY_NAME,
        GIT_AUTHOR_EMAIL=IDENTITY_EMAIL,
        GIT_COMMITTER_NAME=IDENTITY_NAME,
        GIT_COMMITTER_EMAIL=IDENTITY_EMAIL,
        GIT_EDITOR="true",  # `rebase --continue` must never wait for an editor
        GIT_SEQUENCE_EDITOR="true",
        GIT_MERGE_AUTOEDIT="no",
        GIT_TERMINAL_PROMPT="0",
        LC_ALL="C",  # messages we match on are in English
    )
    return env


def git_argv(args: tuple[str, ...] | list[str], *, user_config: bool = False) -> list[str]:
    """The command line of one of devswarm's git commands: the safety settings, then (without
    the user's config) the user's kept paths, then `args`."""
    kept = () if user_config else kept_user_paths()
    return ["git", *SAFE_ARGS, *kept, *args]


def kept_user_paths() -> tuple[str, ...]:
    """`-c` arguments carrying KEPT_USER_PATHS from the user's config into isolated commands."""
    names = ("HOME", "XDG_CONFIG_HOME", "GIT_CONFIG_GLOBAL", "GIT_CONFIG_SYSTEM")
    return _kept_user_paths(tuple(os.environ.get(n) for n in (*names, "GIT_CONFIG_NOSYSTEM")))


@functools.lru_cache(maxsize=8)
def _kept_user_paths(_where: tuple[str | None, ...]) -> tuple[str, ...]:
    # Once per process and set of config locations (tests move HOME). Outside any repository.
    pattern = "^(" + "|".join(re.escape(k.lower()) for k in KEPT_USER_PATHS) + ")$"
    proc = git(
        "/", "config", "--path", "-z", "--get-regexp", pattern, check=False, user_config=True
    )
    args: list[str] = []
    for record in zsplit(proc.stdout) if proc.returncode == 0 else []:
        key, _, value = record.partition("\n")
        args += ["-c", f"{key}={value}"]
    return tuple(args)


def git(
    cwd: Path | str,
    *args: str,
    check: bool = True,
    input: str | None = None,
    env: dict[str, str] | None = None,
    user_config: bool = False,
) -> subprocess.CompletedProcess[str]:
    """Run one git command with devswarm's identity and safety config (`env` added to its
    environment); raise GitError if asked. The user's system and global config are read only
    with `user_config` (transport: see the module's docstring)."""
    if not os.path.isdir(cwd):
        raise GitError(f"git {' '.join(args[:2])}: no such folder: {cwd}")
    try:
        proc = run_git(cwd, args, input, env, user_config=user_config)
    except FileNotFoundError as exc:
        raise UserError("git is not installed (not found on PATH)") from exc
    if check and proc.returncode != 0:
        raise GitError(f"git {' '.join(args[:3])} failed: {first_line(proc.stderr)}", proc.stderr)
    return proc


def git_bytes(
    cwd: Path | str,
    *args: str,
    input: bytes | None = None,
    env: dict[str, str] | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[bytes]:
    """As git(), in bytes: objects keep their exact size and their carriage returns."""
    proc = run_git(cwd, args, input, env, binary=True)
    if check and proc.returncode != 0:
        stderr = proc.stderr.decode("utf-8", "replace")
        raise GitError(f"git {' '.join(args[:3])} failed: {first_line(stderr)}", stderr)
    return proc


def run_git(
    cwd: Path | str,
    args: tuple[str, ...],
    input: str | bytes | None,
    env: dict[str, str] | None = None,
    *,
    user_config: bool = False,
    binary: bool = False,
) -> subprocess.CompletedProcess[Any]:
    """The one place devswarm starts a git process (benchmarks wrap it to time each command).
    Text in and out unless `binary`."""
    isolation = {} if user_config else ISOLATED_ENV
    return subprocess.run(
        git_argv(args, user_config=user_config),
        cwd=cwd,
        env=git_env() | isolation | (env or {}),
        input=input,
        capture_output=True,
        text=not binary,
        encoding=None if binary else "utf-8",
        errors=None if binary else "surrogateescape",  # paths round-trip unchanged
        stdin=None if input is not None else subprocess.DEVNULL,
        # Its own process group: a signal to ours (Ctrl-C in a terminal, Prefect's runner
        # cancelling a deployment's run with SIGTERM to the group) must not kill git halfway
        # through a rebase or a ref update; devswarm drains and lets the command finish.
        start_new_session=True,
    )


def git_out(cwd: Path | str, *args: str) -> str:
    """The stripped output of a git command that must succeed."""
    return git(cwd, *args).stdout.strip()


def first_line(text: str) -> str:
    """The first line of git's message worth showing (no hints, no `fatal:`/`error:`)."""
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("hint:"):
            return line.removeprefix("fatal: ").removeprefix("error: ")
    return "(no message)"


def zsplit(text: str) -> list[str]:
    """The fields of git's NUL-separated (`-z`) output."""
    return [p for p in text.split("\0") if p]


def lost_race(git_output: str) -> bool:
    """Whether git's output says a ref update lost to another writer."""
    return any(m in git_output for m in _RACE_MESSAGES)


def rev(cwd: Path | str, name: str) -> str | None:
    """The commit `name` names, or None when it names none."""
    proc = git(
        cwd,
        "rev-parse",
        "--verify",
        "--quiet",
        "--end-of-options",
        f"{name}^{{commit}}",
        check=False,
    )
    return proc.stdout.strip() if proc.returncode == 0 else None


def check_branch_name(name: str) -> str:
    """Return `name` if git accepts it as a new branch name; raise UserError otherwise."""
    if not name or name in ("@", "HEAD") or name.startswith(("-", "refs/")) or "\n" in name:
        raise UserError(f"invalid branch name: {name!r}")
    # Outside any repository, so `@{-1}`-style shorthands cannot expand to something else.
    proc = git("/", "check-ref-format", "--branch", name, check=False)
    if proc.returncode != 0 or proc.stdout.strip() != name:
        raise UserError(f"invalid branch name: {name!r}")
    return name
