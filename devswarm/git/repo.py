"""GitPython, opened safely: the one factory (open_repo), and what devswarm reads through it.

A `git.Repo` from open_repo runs its git commands with devswarm's `-c` safety settings, no
user or system config, no optional locks and none of the variables that point git elsewhere,
so a hostile ~/.gitconfig or a hook's environment cannot steer it. It is used where it reads
best: finding and validating the user's repository (pure Python, no process) and reading its
refs. Never in agents' worktrees or in the landing lane: their plain git processes are what
the lane's speed is measured in (plumbing.py).

(`git` inside this package is GitPython only here, and imported as `gitpython`.)
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devswarm.errors import UserError
from devswarm.git.plumbing import (
    ISOLATED_ENV,
    PARENT_GIT_VARS,
    SAFE_CONFIG,
    first_line,
    redirects_git,
)

try:
    import git as gitpython
except ModuleNotFoundError:
    raise
except ImportError as exc:  # GitPython refuses to import when it cannot run git
    raise UserError("git is not installed (not found on PATH)") from exc

# GitPython's own discovery reads these from our environment; git's would ignore them (we drop
# them), so a repository found with them set could be another one than git would use.
_DISCOVERY_VARS = ("GIT_WORK_TREE", "GIT_COMMON_DIR", "GIT_OBJECT_DIRECTORY")


class _SafeGit(gitpython.Git):
    """GitPython's command runner with devswarm's safety settings.

    GitPython runs git with os.environ plus its additions and cannot remove a variable, so
    variables that point git elsewhere are unset with `env -u` in front of the command (env
    then execs git: same process, no shell)."""

    def __init__(self, working_dir: Any = None) -> None:
        super().__init__(working_dir)
        self.set_persistent_git_options(c=[f"{k}={v}" for k, v in SAFE_CONFIG.items()])
        self.update_environment(
            **ISOLATED_ENV,
            GIT_OPTIONAL_LOCKS="0",  # reads never write the index
            GIT_TERMINAL_PROMPT="0",
        )

    def execute(self, command: Any, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        """Run `command` (GitPython's list form) without the variables that redirect git."""
        drop = sorted(k for k in os.environ if redirects_git(k) or k in PARENT_GIT_VARS)
        if drop and isinstance(command, list):
            command = ["env", *(a for k in drop for a in ("-u", k)), *command]
        return super().execute(command, *args, **kwargs)


class _SafeRepo(gitpython.Repo):
    GitCommandWrapperType = _SafeGit


@contextlib.contextmanager
def open_repo(path: Path, *, search_parent_directories: bool = False) -> Iterator[gitpython.Repo]:
    """A GitPython Repo for one use in one thread, closed on the way out (so its persistent
    `git cat-file` processes end with it). Raises GitPython's NoSuchPathError or
    InvalidGitRepositoryError, or UserError if devswarm's environment would mislead the
    discovery."""
    misleading = [v for v in _DISCOVERY_VARS if v in os.environ]
    if misleading:
        raise UserError(
            f"{', '.join(misleading)} set in devswarm's environment would point git at another "
            "repository; unset it"
        )
    repo = _SafeRepo(os.fspath(path), search_parent_directories=search_parent_directories)
    try:
        yield repo
    finally:
        repo.close()


# -- the user's repository ---------------------------------------------------------------------


@dataclass(frozen=True)
class UserRepository:
    """What a workspace reads of the user's repository when it opens."""

    path: Path  # the top folder, or the git folder of a bare repository
    git_dir: Path
    branch_tip: str | None  # the commit of refs/heads/<branch>, if the branch exists
    base_commit: str  # the branch's tip, else `base`, else HEAD


def read_user_repository(path: Path, branch: str, base: str | None = None) -> UserRepository:
    """Find the user's repository at (or above) `path`, refuse a branch checked out there, and
    read the branch's tip and the base commit. Every refusal is one line (UserError)."""
    path = path.expanduser()
    if not path.exists():
        raise UserError(f"repository path does not exist: {path}")
    if not path.is_dir():
        raise UserError(f"not a directory: {path}")
    try:
        with open_repo(path, search_parent_directories=True) as repo:
            git_dir = Path(repo.git_dir).resolve()
            top = git_dir if repo.bare else Path(repo.working_tree_dir or git_dir).resolve()
            _refuse_checked_out(repo, path, branch)
            branch_tip = _commit(repo, f"refs/heads/{branch}")
            base_commit = _base_commit(repo, top, branch, branch_tip, base)
    except (gitpython.InvalidGitRepositoryError, gitpython.NoSuchPathError) as exc:
        raise UserError(f"not a git repository: {path}") from exc
    return UserRepository(top, git_dir, branch_tip, base_commit)


def _base_commit(
    repo: gitpython.Repo, top: Path, branch: str, branch_tip: str | None, base: str | None
) -> str:
    if branch_tip is not None:
        if base is not None and _commit(repo, base) != branch_tip:
            raise UserError(
                f"branch {branch} already exists; drop the base or pick another --branch"
            )
        return branch_tip
    if base is not None:
        found = _commit(repo, base)
        if found is None:
            raise UserError(f"base {base!r} is not a commit in {top}")
        return found
    head = _commit(repo, "HEAD")
    if head is None:
        raise UserError(f"repository has no commits: {top}")
    return head


def _refuse_checked_out(repo: gitpython.Repo, path: Path, branch: str) -> None:
    # The first git command the repository sees: one that git refuses to run there (another
    # owner, an unknown repository extension) is refused here, in one line.
    status, out, err = repo.git.worktree(
        "list", "--porcelain", "-z", with_extended_output=True, with_exceptions=False
    )
    if status != 0:
        raise UserError(f"cannot use {path} as a git repository: {first_line(err)}")
    where = None
    for field in out.split("\0"):
        if field.startswith("worktree "):
            where = field.removeprefix("worktree ")
        elif field == f"branch refs/heads/{branch}":
            raise UserError(f"branch {branch} is checked out in {where}; pick another --branch")


def _commit(repo: gitpython.Repo, name: str) -> str | None:
    """The commit `name` names, or None. Asked of git, not of GitPython's own ref reading,
    which cannot read a reftable repository."""
    status, out, _ = repo.git.rev_parse(
        "--verify",
        "--quiet",
        "--end-of-options",
        f"{name}^{{commit}}",
        with_extended_output=True,
        with_exceptions=False,
    )
    return out.strip() if status == 0 else None
