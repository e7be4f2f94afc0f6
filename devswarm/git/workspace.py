"""The git workspace: a private clone, one worktree per worker, and the mechanical landing lane.

The user's repository is only ever read, except `refs/heads/<branch>`, which is fast-forwarded
by a `git fetch` run in the user's repository (fetch runs no hooks there and refuses a
checked-out branch). Everything else happens in a private `--shared` clone under devswarm's
data folder, whose local config turns off hooks, signing, gc and rerere, so neither devswarm
nor an agent's own `git` command can be tripped up by the user's global config.

Landing is mechanical: read the tip, put the worker's commits onto it (one commit is replayed
with merge-tree + commit-tree, leaving the worktree alone; several, or a conflict, go through
`git rebase`), compare-and-swap the branch with `git update-ref <ref> <new> <old>`. Inside one
process a lane (a lock per clone and branch) does this serially so workers don't thrash; the
compare-and-swap still guards against other processes.

Remote mode (--executor deployment, docs/scale-out.md): worker processes land on a shared bare
remote with a RemoteWorkspace, where `git push` is the compare-and-swap (a push that is not a
fast-forward is rejected); the orchestrator's Workspace pushes the branch there first
(push_remote) and fetches the workers' landings back to publish them (pull_remote).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import random
import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel

from devswarm.errors import UserError

IDENTITY_NAME = "devswarm"
IDENTITY_EMAIL = "devswarm@localhost"

# Applied to every git command devswarm runs (the user's repository included: `-c` only changes
# this one process). They win over the user's global and system config.
_SAFE_CONFIG: dict[str, str] = {
    "commit.gpgsign": "false",
    "tag.gpgsign": "false",
    "core.hooksPath": "/dev/null",
    "gc.auto": "0",
    "maintenance.auto": "false",
    "rerere.enabled": "false",
    "rebase.autoStash": "false",
    "rebase.autoSquash": "false",
    "rebase.updateRefs": "false",
    "core.fsmonitor": "false",  # a daemon per worktree would be 32 daemons
    "core.quotePath": "false",
    "advice.detachedHead": "false",
}
_SAFE_ARGS: tuple[str, ...] = tuple(a for k, v in _SAFE_CONFIG.items() for a in ("-c", f"{k}={v}"))

# Local config of the private clone: it also governs the `git` commands agents run themselves.
_CLONE_CONFIG: dict[str, str] = {
    "user.name": IDENTITY_NAME,
    "user.email": IDENTITY_EMAIL,
    **_SAFE_CONFIG,
}

# Variables that would point git at another repository or smuggle in config from a parent git.
_DROP_ENV = frozenset(
    {
        "GIT_DIR",
        "GIT_WORK_TREE",
        "GIT_INDEX_FILE",
        "GIT_OBJECT_DIRECTORY",
        "GIT_ALTERNATE_OBJECT_DIRECTORIES",
        "GIT_COMMON_DIR",
        "GIT_NAMESPACE",
        "GIT_PREFIX",
        "GIT_CONFIG_PARAMETERS",
        "GIT_CONFIG_COUNT",
        "GIT_QUARANTINE_PATH",
        "GIT_REFLOG_ACTION",
        "GIT_AUTHOR_DATE",
        "GIT_COMMITTER_DATE",
        "GIT_INDEX_VERSION",
    }
)

_T = TypeVar("_T")

MAX_CAS_RETRIES = 50
_WORKTREE_ADD_ATTEMPTS = 5
_MARKER_RE = re.compile(rb"^(?:<{7}|>{7}|\|{7})(?: |\r?$)", re.MULTILINE)
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,120}")
_TRAILER_KEY_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")
_TRAILERS = {"run": "Devswarm-Run", "task": "Devswarm-Task", "agent": "Devswarm-Agent"}
_CONFLICT_RECORD = "devswarm-conflict-files"
# A fetch that writes only the ref it names (no FETCH_HEAD, tags, submodules or maintenance), so
# processes sharing a clone never write the same file.
_FETCH = (
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


class ConflictError(GitError):
    """A conflict turn cannot continue: markers are left, or the rebase stopped again."""

    def __init__(self, message: str, files: list[str]) -> None:
        super().__init__(message)
        self.files = files


class LandResult(BaseModel):
    """What happened to one landing attempt."""

    status: Literal["landed", "conflict", "refused", "error"]
    commit: str | None = None  # the commit that became the tip (None: nothing new landed)
    old_tip: str | None = None
    new_tip: str | None = None
    cas_retries: int = 0
    conflict_files: list[str] = []
    their_commits: list[str] = []  # "<short sha> <subject>" of tip-side commits touching them
    reason: str | None = None
    published: bool = False  # the user's refs/heads/<branch> reached new_tip
    wait_ms: float = 0.0  # time spent waiting for the landing lane
    duration_ms: float = 0.0


# ---------------------------------------------------------------------------------------------
# git plumbing


def _git_env() -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in _DROP_ENV and not k.startswith(("GIT_CONFIG_KEY_", "GIT_CONFIG_VALUE_"))
    }
    env.update(
        GIT_AUTHOR_NAME=IDENTITY_NAME,
        GIT_AUTHOR_EMAIL=IDENTITY_EMAIL,
        GIT_COMMITTER_NAME=IDENTITY_NAME,
        GIT_COMMITTER_EMAIL=IDENTITY_EMAIL,
        GIT_EDITOR="true",  # `rebase --continue` must never wait for an editor
        GIT_MERGE_AUTOEDIT="no",
        GIT_TERMINAL_PROMPT="0",
        LC_ALL="C",  # messages we match on are in English
    )
    return env


def _git(
    cwd: Path | str,
    *args: str,
    check: bool = True,
    input: str | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run one git command with devswarm's identity and safety config (`env` added to its
    environment); raise GitError if asked."""
    if not os.path.isdir(cwd):
        raise GitError(f"git {' '.join(args[:2])}: no such folder: {cwd}")
    try:
        proc = _run_git(cwd, args, input, env)
    except FileNotFoundError as exc:
        raise UserError("git is not installed (not found on PATH)") from exc
    if check and proc.returncode != 0:
        raise GitError(f"git {' '.join(args[:3])} failed: {_first_line(proc.stderr)}", proc.stderr)
    return proc


def _run_git(
    cwd: Path | str, args: tuple[str, ...], input: str | None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", *_SAFE_ARGS, *args],
        cwd=cwd,
        env=_git_env() | (env or {}),
        input=input,
        capture_output=True,
        text=True,
        encoding="utf-8",
        errors="surrogateescape",  # paths round-trip to the file system unchanged
        stdin=None if input is not None else subprocess.DEVNULL,
        # Its own process group: a signal to ours (Ctrl-C in a terminal, Prefect's runner
        # cancelling a deployment's run with SIGTERM to the group) must not kill git halfway
        # through a rebase or a ref update; devswarm drains and lets the command finish.
        start_new_session=True,
    )


def _out(cwd: Path | str, *args: str) -> str:
    return _git(cwd, *args).stdout.strip()


def _first_line(text: str) -> str:
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("hint:"):
            return line.removeprefix("fatal: ").removeprefix("error: ")
    return "(no message)"


def _zsplit(text: str) -> list[str]:
    return [p for p in text.split("\0") if p]


_SHA_RE = re.compile(r"[0-9a-f]{40}(?:[0-9a-f]{24})?")


def _read_sha(path: Path) -> str | None:
    """The object id a loose ref or a detached HEAD file holds; None when it holds anything
    else (a symbolic ref, a packed or reftable ref: ask git). git replaces these files by
    rename, so a read sees the old or the new id, never half of one. No process: a landing
    reads its tips several times, and each `git rev-parse` costs ~2 ms of CPU."""
    try:
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return text if _SHA_RE.fullmatch(text) else None


def _rev(cwd: Path | str, rev: str) -> str | None:
    """The commit `rev` names, or None when it names none."""
    proc = _git(
        cwd,
        "rev-parse",
        "--verify",
        "--quiet",
        "--end-of-options",
        f"{rev}^{{commit}}",
        check=False,
    )
    return proc.stdout.strip() if proc.returncode == 0 else None


# ---------------------------------------------------------------------------------------------
# process-wide registries: one lane per (clone, branch), one worktree-add lock per clone, one
# publisher per (user repository, branch), shared by every Workspace object in the process.

_REGISTRY_LOCK = threading.Lock()
_LANES: dict[tuple[str, str], threading.Lock] = {}
_ADD_LOCKS: dict[str, threading.RLock] = {}
_PUBLISHERS: dict[tuple[str, str], _Publisher] = {}


class _Publisher:
    """Coalesces publishes: a fetch that starts after your landing covers it, so landings that
    finish while a fetch runs share the next one instead of queueing one fetch each."""

    def __init__(self) -> None:
        self._run = threading.Lock()
        self._state = threading.Lock()
        self._requested = 0
        self._done = 0
        self._error: str | None = None

    def publish(self, fetch: Callable[[], None]) -> None:
        with self._state:
            self._requested += 1
            ticket = self._requested
        with self._run:
            with self._state:
                covered = self._done >= ticket
                target = self._requested
                error = self._error
            if not covered:
                try:
                    fetch()
                    error = None
                except UserError as exc:
                    error = str(exc)
                with self._state:
                    self._done, self._error = target, error
        if error:
            raise UserError(error)


class _MachineLane:
    """A landing lane shared by the processes of one machine: the process's lane, then an
    exclusive lock on a file beside the clone they share (so they land one at a time instead
    of racing each other's pushes)."""

    def __init__(self, lane: threading.Lock, path: Path) -> None:
        self._lane, self._path = lane, path
        self._fh: Any = None

    def __enter__(self) -> None:
        self._lane.acquire()
        try:
            self._fh = open(self._path, "a")
            fcntl.flock(self._fh, fcntl.LOCK_EX)
        except BaseException:
            if self._fh is not None:
                self._fh.close()
            self._lane.release()
            raise

    def __exit__(self, *exc: object) -> None:
        try:
            fcntl.flock(self._fh, fcntl.LOCK_UN)
            self._fh.close()
        finally:
            self._fh = None
            self._lane.release()


def _registered(registry: dict[Any, _T], key: object, factory: Callable[[], _T]) -> _T:
    with _REGISTRY_LOCK:
        if key not in registry:
            registry[key] = factory()
        return registry[key]


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock between processes (two runs opening the same data folder)."""
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# ---------------------------------------------------------------------------------------------
# validation


def check_branch_name(name: str) -> str:
    """Return `name` if git accepts it as a new branch name; raise UserError otherwise."""
    if not name or name in ("@", "HEAD") or name.startswith(("-", "refs/")) or "\n" in name:
        raise UserError(f"invalid branch name: {name!r}")
    # Outside any repository, so `@{-1}`-style shorthands cannot expand to something else.
    proc = _git("/", "check-ref-format", "--branch", name, check=False)
    if proc.returncode != 0 or proc.stdout.strip() != name:
        raise UserError(f"invalid branch name: {name!r}")
    return name


def _resolve_user_repo(path: Path) -> tuple[Path, Path]:
    """(top folder or bare git dir, absolute git dir) of the user's repository."""
    path = path.expanduser()
    if not path.exists():
        raise UserError(f"repository path does not exist: {path}")
    if not path.is_dir():
        raise UserError(f"not a directory: {path}")
    proc = _git(path, "rev-parse", "--is-bare-repository", "--absolute-git-dir", check=False)
    if proc.returncode != 0:
        msg = _first_line(proc.stderr)
        if "not a git repository" in msg:
            raise UserError(f"not a git repository: {path}")
        raise UserError(f"cannot use {path} as a git repository: {msg}")
    bare, git_dir = proc.stdout.split("\n")[:2]
    if bare == "true":
        return Path(git_dir).resolve(), Path(git_dir).resolve()
    return Path(_out(path, "rev-parse", "--show-toplevel")).resolve(), Path(git_dir).resolve()


def _refuse_checked_out(user_repo: Path, branch: str) -> None:
    ref = f"refs/heads/{branch}"
    out = _git(user_repo, "worktree", "list", "--porcelain", "-z").stdout
    where = None
    for field in out.split("\0"):
        if field.startswith("worktree "):
            where = field.removeprefix("worktree ")
        elif field == f"branch {ref}":
            raise UserError(f"branch {branch} is checked out in {where}; pick another --branch")


def _lost_race(git_output: str) -> bool:
    return any(m in git_output for m in _RACE_MESSAGES)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ---------------------------------------------------------------------------------------------


class Workspace:
    """A private clone of the user's repository, its worktrees, and the landing branch."""

    _publishes = True  # a landing fast-forwards the user's branch (not so in a worker process)
    _replayed = ("", "")  # (the last commit _replay made, its tree): a fact, never stale

    def __init__(
        self, user_repo: Path, home: Path, branch: str, *, base: str | None = None
    ) -> None:
        """Validate the repository and branch, then create or refresh the clone and the branch.

        Base: the user's `refs/heads/<branch>` if it exists, else `base`, else the user's HEAD.
        """
        self.branch = check_branch_name(branch)
        self.ref = f"refs/heads/{self.branch}"
        self.user_repo, self._user_git_dir = _resolve_user_repo(Path(user_repo))
        _refuse_checked_out(self.user_repo, self.branch)
        self.home = Path(home).expanduser().resolve()
        self.clone = self.home / "clone"
        self.worktrees_dir = self.home / "worktrees"

        user_tip = _rev(self.user_repo, self.ref)
        if user_tip is not None:
            if base is not None and _rev(self.user_repo, base) != user_tip:
                raise UserError(
                    f"branch {self.branch} already exists; drop the base or pick another --branch"
                )
            self.base_commit = user_tip
        elif base is not None:
            found = _rev(self.user_repo, base)
            if found is None:
                raise UserError(f"base {base!r} is not a commit in {self.user_repo}")
            self.base_commit = found
        else:
            head = _rev(self.user_repo, "HEAD")
            if head is None:
                raise UserError(f"repository has no commits: {self.user_repo}")
            self.base_commit = head

        self.home.mkdir(parents=True, exist_ok=True)
        self.worktrees_dir.mkdir(exist_ok=True)
        key = str(self.clone)
        self._lane: threading.Lock = _registered(_LANES, (key, self.branch), threading.Lock)
        # Reentrant: prune() holds it while it calls remove_worktree().
        self._add_lock: threading.RLock = _registered(_ADD_LOCKS, key, threading.RLock)
        self._publisher: _Publisher = _registered(
            _PUBLISHERS, (str(self._user_git_dir), self.branch), _Publisher
        )
        with _file_lock(self.home / ".clone.lock"), self._lane:
            self._open_clone()
            self._set_branch(user_tip)
        if user_tip != self.tip():
            self.publish()

    # -- clone and branch -------------------------------------------------------------------

    def _open_clone(self) -> None:
        if (self.clone / ".git").is_dir():
            url = _git(self.clone, "config", "--get", "remote.origin.url", check=False).stdout
            if not url.strip() or Path(url.strip()).resolve() != self.user_repo:
                raise UserError(
                    f"{self.home} holds a clone of {url.strip() or 'another repository'}, "
                    f"not {self.user_repo}; use another data folder"
                )
            # A process killed inside `git worktree add` leaves a worktree whose HEAD is all
            # zeros, and fetch refuses to run while it exists: drop dead processes' worktrees.
            self.prune()
            fetch = ("fetch", "--quiet", "--no-tags", "--prune", "--no-auto-maintenance", "origin")
            proc = _git(self.clone, *fetch, check=False)
            if proc.returncode != 0:
                raise UserError(f"cannot refresh {self.clone}: {_first_line(proc.stderr)}")
            return
        if self.clone.exists():  # clones are renamed into place whole, so this is not ours
            raise UserError(
                f"{self.clone} exists and is not a devswarm clone; use another data folder"
            )
        tmp = self.home / f"clone.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        config = [a for k, v in _CLONE_CONFIG.items() for a in ("-c", f"{k}={v}")]
        proc = _git(
            self.home,
            "clone",
            "--shared",
            "--no-checkout",
            "--quiet",
            "--origin",  # not the user's clone.defaultRemoteName
            "origin",
            *config,
            str(self.user_repo),
            str(tmp),
            check=False,
        )
        if proc.returncode != 0:
            shutil.rmtree(tmp, ignore_errors=True)
            raise UserError(f"cannot clone {self.user_repo}: {_first_line(proc.stderr)}")
        os.rename(tmp, self.clone)  # complete or absent, never half-made
        # Detached, so no branch counts as checked out in the clone itself.
        _git(self.clone, "update-ref", "--no-deref", "HEAD", self.base_commit)

    def _set_branch(self, user_tip: str | None) -> None:
        current = _rev(self.clone, self.ref)
        if user_tip is not None and current not in (None, user_tip):
            mb = _git(self.clone, "merge-base", user_tip, current, check=False).stdout.strip()
            if mb == user_tip:
                # The clone is ahead: landings a crash kept from being published. Keep them.
                return
        _git(self.clone, "update-ref", "-m", "devswarm: open", self.ref, self.base_commit)

    def tip(self) -> str:
        """The landing branch's current commit in the clone."""
        return _read_sha(self.clone / ".git" / self.ref) or _out(
            self.clone, "rev-parse", "--verify", self.ref
        )

    def publish(self) -> None:
        """Fast-forward the user's branch to the clone's; UserError if it cannot (never forced)."""
        self._publisher.publish(self._fetch_into_user)

    def _fetch_into_user(self) -> None:
        proc = _git(
            self.user_repo,
            "fetch",  # not --quiet: it would hide why a fetch was rejected
            "--no-tags",
            "--no-write-fetch-head",
            "--no-prune",
            "--no-recurse-submodules",
            "--no-auto-maintenance",
            "--no-write-commit-graph",
            str(self.clone),
            f"{self.ref}:{self.ref}",
            check=False,
        )
        if proc.returncode == 0:
            return
        err = proc.stderr
        if "non-fast-forward" in err or "[rejected]" in err:
            raise UserError(
                f"branch {self.branch} in {self.user_repo} moved and is not behind the swarm's "
                f"(non-fast-forward); not forced — the swarm's work is in {self.clone}"
            )
        if "refusing to fetch into" in err:
            raise UserError(
                f"branch {self.branch} is now checked out in the user's repository; not published"
            )
        raise UserError(f"could not publish {self.branch}: {_first_line(err)}")

    # -- the shared remote (--executor deployment) ---------------------------------------------

    def push_remote(self, url: str) -> None:
        """Put the landing branch on the shared remote that worker processes land through.

        The remote's branch is created, or fast-forwarded to the clone's; if it is ahead instead
        (workers landed there before a crash), the clone follows it. UserError if the two have
        diverged (nothing is forced) or the remote cannot be reached.
        """
        with self._lane:
            proc = _git(
                self.clone,
                "push",
                "--quiet",
                "--no-verify",
                url,
                f"{self.ref}:{self.ref}",
                check=False,
            )
        if proc.returncode == 0:
            return
        if not _lost_race(proc.stdout + proc.stderr):
            raise UserError(
                f"cannot push {self.branch} to the shared remote {url}: {_first_line(proc.stderr)}"
            )
        self.pull_remote(url)

    def pull_remote(self, url: str) -> bool:
        """Fast-forward the branch from the shared remote (the workers' landings) and publish it
        to the user's repository; True if it moved. UserError if the remote's branch is not a
        fast-forward of the clone's, or cannot be fetched. (A failed publish raises UserError
        too, after the clone has moved.)"""
        with self._lane:
            before = self.tip()
            proc = self._fetch(url, f"{self.ref}:{self.ref}")
            if proc.returncode != 0:
                if _lost_race(proc.stderr):
                    raise UserError(
                        f"branch {self.branch} on the shared remote {url} and in {self.clone} "
                        "have diverged; not forced"
                    )
                raise UserError(
                    f"cannot fetch {self.branch} from the shared remote {url}: "
                    f"{_first_line(proc.stderr)}"
                )
            moved = self.tip() != before
        if moved:
            self.publish()
        return moved

    def _fetch(self, url: str, refspec: str) -> subprocess.CompletedProcess[str]:
        """Fetch into the clone. A fetch reads every worktree's HEAD, and `git worktree add`
        leaves a placeholder HEAD there for a moment ("bad object worktrees/<name>/HEAD"): the
        add lock covers this process, a retry other processes sharing the clone."""
        for attempt in range(_WORKTREE_ADD_ATTEMPTS):
            with self._add_lock:
                proc = _git(self.clone, *_FETCH, url, refspec, check=False)
            if proc.returncode == 0 or "worktrees/" not in proc.stderr:
                break
            time.sleep(0.02 * (attempt + 1) * (1 + random.random()))
        return proc

    # -- worktrees ----------------------------------------------------------------------------

    def add_worktree(self, name: str, base: str) -> Path:
        """A new worktree `<home>/worktrees/<name>` with a detached HEAD at commit `base`."""
        if not _NAME_RE.fullmatch(name):
            raise ValueError(f"worktree name must match {_NAME_RE.pattern}: {name!r}")
        commit = _rev(self.clone, base)
        if commit is None:
            raise GitError(f"not a commit: {base!r}")
        path = self.worktrees_dir / name
        if path.exists():
            self.remove_worktree(path)
        # Locked with our pid, so prune() in another process leaves a live worktree alone.
        reason = f"devswarm pid {os.getpid()} on {socket.gethostname()}"
        err = ""
        for attempt in range(_WORKTREE_ADD_ATTEMPTS):
            # Concurrent `worktree add` on one repository fails now and then; the lock covers
            # this process, the retry other processes. Files are checked out outside the lock.
            with self._add_lock:
                proc = _git(
                    self.clone,
                    "worktree",
                    "add",
                    "--quiet",
                    "--no-checkout",
                    "--detach",
                    "--lock",
                    "--reason",
                    reason,
                    str(path),
                    commit,
                    check=False,
                )
            if proc.returncode == 0:
                break
            err = proc.stderr
            self.remove_worktree(path)
            time.sleep(0.02 * (attempt + 1) * (1 + random.random()))
        else:
            raise GitError(f"git worktree add {path} failed: {_first_line(err)}", err)
        _git(path, "reset", "--hard", "--quiet")
        return path

    @contextlib.contextmanager
    def worktree(self, name: str, base: str) -> Iterator[Path]:
        """A worktree at `base` for the block, removed on every way out."""
        path = self.add_worktree(name, base)
        try:
            yield path
        finally:
            self.remove_worktree(path)

    def remove_worktree(self, path: Path) -> None:
        """Remove a worktree whatever state it is in (dirty, locked, mid-rebase, already gone)."""
        path = Path(path)
        # Files go first, outside the lock, so the serialized part is only git's bookkeeping.
        # (`worktree remove` concurrent with `worktree add` fails now and then, like two adds.)
        if path.is_dir() and not path.is_symlink():
            for child in path.iterdir():
                if child.name == ".git":
                    continue
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child, ignore_errors=True)
                else:
                    child.unlink(missing_ok=True)
        with self._add_lock:
            proc = _git(
                self.clone, "worktree", "remove", "--force", "--force", str(path), check=False
            )
            if proc.returncode != 0:
                # Deleted by hand or half-made: unlock, delete, and let prune drop the entry.
                _git(self.clone, "worktree", "unlock", str(path), check=False)
                shutil.rmtree(path, ignore_errors=True)
                _git(self.clone, "worktree", "prune", check=False)
        if path.exists():
            shutil.rmtree(path, ignore_errors=True)

    def _worktrees(self) -> dict[Path, str | None]:
        """Registered worktrees of the clone (not the clone itself) → lock reason or None."""
        out = _git(self.clone, "worktree", "list", "--porcelain", "-z").stdout
        found: dict[Path, str | None] = {}
        current: Path | None = None
        for field in out.split("\0"):
            if field.startswith("worktree "):
                current = Path(field.removeprefix("worktree "))
                if current != self.clone:
                    found[current] = None
            elif current in found and (field == "locked" or field.startswith("locked ")):
                found[current] = field.removeprefix("locked").strip() or "locked"
        return found

    def prune(self) -> None:
        """Drop worktrees left by dead processes and folders under <home>/worktrees git forgot."""
        me, host = os.getpid(), socket.gethostname()
        with self._add_lock:
            registered = self._worktrees()
            for path, reason in registered.items():
                m = re.fullmatch(r"devswarm pid (\d+) on (.+)", reason or "")
                if not path.exists():
                    self.remove_worktree(path)  # deleted by hand: unusable, whoever owns it
                elif m and m[2] == host and int(m[1]) != me and not _pid_alive(int(m[1])):
                    self.remove_worktree(path)
                elif reason is None and path.parent == self.worktrees_dir:
                    self.remove_worktree(path)  # ours are always locked: this one is a leftover
            _git(self.clone, "worktree", "prune")
            live = set(self._worktrees())
            if self.worktrees_dir.is_dir():
                for child in self.worktrees_dir.iterdir():
                    if child not in live:
                        if child.is_dir() and not child.is_symlink():
                            shutil.rmtree(child, ignore_errors=True)
                        else:
                            child.unlink(missing_ok=True)

    # -- commits ------------------------------------------------------------------------------

    def commit(self, worktree: Path, message: str, trailers: dict[str, str]) -> str | None:
        """Commit everything in the worktree with `message` and a trailer block; None if unchanged.

        During a conflict turn it first finishes the rebase (continue_conflict, which raises
        ConflictError if markers are left) and returns the resolved HEAD if nothing else changed.
        """
        resolved = self.continue_conflict(worktree) if self.in_conflict(worktree) else None
        _git(worktree, "add", "-A")
        proc = _git(
            worktree,
            "commit",
            "--no-verify",
            "--quiet",
            "--cleanup=whitespace",
            "-F",
            "-",
            input=_message_with_trailers(message, trailers),
            check=False,
        )
        if proc.returncode != 0:
            if _git(worktree, "diff", "--cached", "--quiet", check=False).returncode == 0:
                return resolved  # nothing staged: nothing to commit
            raise GitError(f"git commit failed: {_first_line(proc.stderr)}", proc.stderr)
        return self._head(worktree)

    def changed_files(self, worktree: Path, base: str) -> list[str]:
        """Paths that differ between `base` and the worktree's files, untracked ones included."""
        tracked = _git(worktree, "diff", "--name-only", "--no-renames", "-z", base, "--").stdout
        untracked = _git(worktree, "ls-files", "--others", "--exclude-standard", "-z").stdout
        return sorted(set(_zsplit(tracked)) | set(_zsplit(untracked)))

    def diff_stat(self, worktree: Path, base: str, commit: str | None = None) -> str:
        """`git diff --stat` from `base` to `commit`, or else to the worktree's files plus its
        untracked files."""
        if commit is not None:
            return _git(worktree, "diff", "--stat=120", base, commit, "--").stdout.rstrip()
        stat = _git(worktree, "diff", "--stat=120", base, "--").stdout.rstrip()
        untracked = _zsplit(
            _git(worktree, "ls-files", "--others", "--exclude-standard", "-z").stdout
        )
        lines = [stat] if stat else []
        lines += [f" {p} | new file (untracked)" for p in untracked]
        return "\n".join(lines)

    def landed_trailers(self, rev_range: str | None = None) -> list[dict]:
        """Commits in `rev_range` (default base..branch), oldest first, with their devswarm
        trailers: {"commit", "subject", "run", "task", "agent"} (None when a trailer is absent)."""
        fields = ["%H", "%s"] + [
            f"%(trailers:key={k},valueonly,unfold)" for k in _TRAILERS.values()
        ]
        fmt = "%x1f".join(fields) + "%x1e"
        rng = rev_range or f"{self.base_commit}..{self.ref}"
        out = _git(
            self.clone, "log", "--reverse", f"--format={fmt}", "--end-of-options", rng, "--"
        ).stdout
        rows = []
        for record in out.split("\x1e"):
            parts = record.strip("\n").split("\x1f")
            if len(parts) != 2 + len(_TRAILERS):
                continue
            row: dict[str, str | None] = {"commit": parts[0], "subject": parts[1]}
            for key, value in zip(_TRAILERS, parts[2:], strict=True):
                row[key] = value.strip().split("\n")[0] or None
            rows.append(row)
        return rows

    # -- landing ------------------------------------------------------------------------------

    def land(
        self, worktree: Path, *, gate: Callable[[str], str | None] | None = None
    ) -> LandResult:
        """Put the worktree's commits on the branch: onto the tip, compare-and-swap, publish.

        `gate(candidate_sha)` runs just before the swap; a string refuses the landing. A worktree
        whose HEAD or changes are already on the branch is reported as landed (so a retried
        landing is safe).
        """
        start = time.perf_counter()
        worktree = Path(worktree)
        with self._lane:
            waited = time.perf_counter() - start
            try:
                result = self._land_in_lane(worktree, gate)
            except GitError as exc:  # e.g. the worktree is gone; the branch was not touched
                result = LandResult(status="error", reason=str(exc))
        result.wait_ms = waited * 1000
        if result.status == "landed" and self._publishes:
            try:
                self.publish()
                result.published = True
            except UserError as exc:
                result.reason = str(exc)
        result.duration_ms = (time.perf_counter() - start) * 1000
        return result

    def _land_in_lane(self, wt: Path, gate: Callable[[str], str | None] | None) -> LandResult:
        if self.in_conflict(wt):
            return LandResult(
                status="error", reason="a conflict turn is open: continue_conflict() or abort first"
            )
        retries = 0
        last_err = ""
        for _ in range(MAX_CAS_RETRIES + 1):
            tip, head = self._read_tips(wt)
            mb = _git(wt, "merge-base", head, tip, check=False).stdout.strip()
            if mb == head:  # nothing new, or landed by an earlier attempt
                return LandResult(
                    status="landed",
                    commit=head,
                    old_tip=tip,
                    new_tip=tip,
                    cas_retries=retries,
                    reason="already on the branch",
                )
            if mb == tip:
                candidate = head
            elif replayed := self._replay(tip, mb, head):
                candidate = replayed
            else:
                failed = self._rebase_for_landing(wt, tip, mb, head)
                if failed is not None:
                    failed.cas_retries = retries
                    return failed
                candidate = self._head(wt)
            if candidate == tip:  # every change was already on the branch
                return LandResult(
                    status="landed",
                    old_tip=tip,
                    new_tip=tip,
                    cas_retries=retries,
                    reason="the changes were already on the branch",
                )
            if gate is not None:
                refusal = gate(candidate)
                if refusal is not None:
                    return LandResult(
                        status="refused",
                        commit=candidate,
                        old_tip=tip,
                        cas_retries=retries,
                        reason=refusal,
                    )
            failure = self._swap(candidate, tip)
            if failure is None:
                return LandResult(
                    status="landed",
                    commit=candidate,
                    old_tip=tip,
                    new_tip=candidate,
                    cas_retries=retries,
                )
            # Another process moved the branch (or holds its lock): read the tip again.
            retries += 1
            last_err = failure
            time.sleep(random.uniform(0, 0.002 * min(retries, 10)))
        return LandResult(
            status="error",
            cas_retries=retries,
            reason=f"gave up after {retries} compare-and-swap retries: {_first_line(last_err)}",
        )

    def _read_tips(self, wt: Path) -> tuple[str, str]:
        """(the branch's tip, the worktree's HEAD). A stale tip only makes the swap fail."""
        return self.tip(), self._head(wt)

    def _head(self, wt: Path) -> str:
        """The commit a worktree's (detached) HEAD is at."""
        return _read_sha(self._git_dir(wt) / "HEAD") or _out(wt, "rev-parse", "HEAD")

    def _swap(self, candidate: str, tip: str) -> str | None:
        """Compare-and-swap the branch from `tip` to `candidate`; None, or why it lost the race."""
        cas = _git(
            self.clone, "update-ref", "-m", "devswarm: land", self.ref, candidate, tip, check=False
        )
        return None if cas.returncode == 0 else cas.stderr

    def _replay(self, tip: str, mb: str, head: str) -> str | None:
        """A worker's one commit on `mb`, put on `tip` without touching its worktree: the
        commit `git rebase` would make (same merge, author, message; committer devswarm), or
        `tip` if it changes nothing there. None when `head` is not one plain commit on `mb` or
        does not merge cleanly: the rebase then lands it or reports the conflict.

        Three small git processes (cat-file, merge-tree, commit-tree) instead of a rebase's
        checkout and state files: under load a rebase costs ~18 ms of CPU, these ~7. mb is the
        only merge base of tip and head (head's parent is their best common ancestor), so the
        merge is exactly the cherry-pick a rebase does."""
        raw = _git(self.clone, "cat-file", "commit", head, check=False)
        header, sep, message = raw.stdout.partition("\n\n")
        fields = [line.split(" ", 1) for line in header.splitlines()]
        keys = [f[0] for f in fields]
        if raw.returncode != 0 or not sep or keys[1:] != ["parent", "author", "committer"]:
            return None  # not one parent, or signed, or another encoding: let rebase decide
        if fields[1][1] != mb or not (
            author := re.fullmatch(r"(.*) <(.*)> (\d+ [+-]\d{4})", fields[2][1])
        ):
            return None
        merged = _git(
            self.clone, "merge-tree", "--write-tree", "--no-messages", tip, head, check=False
        )
        if merged.returncode != 0:  # 1: conflicts; older git: no --write-tree
            return None
        tree = merged.stdout.split("\n", 1)[0].strip()
        known_tip, known_tree = self._replayed
        tip_tree = (
            known_tree if known_tip == tip else _out(self.clone, "rev-parse", f"{tip}^{{tree}}")
        )
        if tree == tip_tree:
            return tip
        name, email, date = author.groups()
        env = {"GIT_AUTHOR_NAME": name, "GIT_AUTHOR_EMAIL": email, "GIT_AUTHOR_DATE": f"@{date}"}
        new = _git(
            self.clone, "commit-tree", tree, "-p", tip, "-F", "-", input=message, env=env
        ).stdout.strip()
        self._replayed = (new, tree)  # most landings go onto the one before: its tree is known
        return new

    def _rebase_for_landing(self, wt: Path, tip: str, mb: str, head: str) -> LandResult | None:
        proc = _git(wt, "rebase", "--quiet", tip, check=False)
        if proc.returncode == 0:
            return None
        if not self.in_conflict(wt):
            return LandResult(
                status="error", commit=head, old_tip=tip, reason=_first_line(proc.stderr)
            )
        files = self._unmerged(wt)
        _git(wt, "rebase", "--abort", check=False)
        if not files:
            return LandResult(
                status="error", commit=head, old_tip=tip, reason=_first_line(proc.stderr)
            )
        log = _git(wt, "log", "--format=%h %s", "-n", "20", f"{mb}..{tip}", "--", *files).stdout
        return LandResult(
            status="conflict",
            commit=head,
            old_tip=tip,
            conflict_files=files,
            their_commits=[line for line in log.splitlines() if line],
            reason=f"rebase onto {tip[:12]} conflicts in {', '.join(files)}",
        )

    # -- conflict turn (the worker's agent resolves, outside the lane) -------------------------

    def begin_conflict(self, worktree: Path, onto: str) -> list[str]:
        """Rebase the worktree onto `onto`, leaving conflict markers; the conflicted paths
        ([] if the rebase went through cleanly, e.g. because the branch moved on)."""
        wt = Path(worktree)
        if self.in_conflict(wt):
            return self._unmerged(wt)
        commit = _rev(wt, onto)
        if commit is None:
            raise GitError(f"not a commit: {onto!r}")
        proc = _git(wt, "rebase", "--quiet", commit, check=False)
        if proc.returncode == 0:
            return []
        files = self._unmerged(wt) if self.in_conflict(wt) else []
        if not files:
            self.abort_conflict(wt)
            raise GitError(f"git rebase failed: {_first_line(proc.stderr)}", proc.stderr)
        (self._git_dir(wt) / _CONFLICT_RECORD).write_text(
            "\0".join(files), errors="surrogateescape"
        )
        return files

    def conflict_markers_left(self, worktree: Path) -> list[str]:
        """Conflicted paths (still unmerged, or recorded by begin_conflict) that hold markers."""
        wt = Path(worktree)
        record = self._git_dir(wt) / _CONFLICT_RECORD
        paths = set(self._unmerged(wt))
        if record.exists():
            paths |= set(_zsplit(record.read_text(errors="surrogateescape")))
        left = []
        for rel in sorted(paths):
            try:
                data = (wt / rel).read_bytes()
            except (FileNotFoundError, IsADirectoryError):
                continue  # deleted as the resolution
            if _MARKER_RE.search(data):
                left.append(rel)
        return left

    def continue_conflict(self, worktree: Path) -> str:
        """Stage the resolution and finish the rebase; the new HEAD. ConflictError if markers
        are left or the rebase stops again (it then stays in progress for another try)."""
        wt = Path(worktree)
        left = self.conflict_markers_left(wt)
        if left:
            raise ConflictError(f"conflict markers left in {', '.join(left)}", left)
        if self.in_conflict(wt):
            _git(wt, "add", "-A")
            proc = _git(wt, "rebase", "--continue", check=False)
            if proc.returncode != 0:
                files = self._unmerged(wt) if self.in_conflict(wt) else []
                if files:
                    (self._git_dir(wt) / _CONFLICT_RECORD).write_text(
                        "\0".join(files), errors="surrogateescape"
                    )
                    raise ConflictError(f"the rebase stopped again on {', '.join(files)}", files)
                raise GitError(
                    f"git rebase --continue failed: {_first_line(proc.stderr)}", proc.stderr
                )
        (self._git_dir(wt) / _CONFLICT_RECORD).unlink(missing_ok=True)
        return _out(wt, "rev-parse", "HEAD")

    def abort_conflict(self, worktree: Path) -> None:
        """Give up the conflict turn: the worktree returns to its commits before the rebase."""
        wt = Path(worktree)
        if self.in_conflict(wt):
            _git(wt, "rebase", "--abort", check=False)
        (self._git_dir(wt) / _CONFLICT_RECORD).unlink(missing_ok=True)

    # -- helpers --------------------------------------------------------------------------------

    @staticmethod
    def _git_dir(wt: Path) -> Path:
        dot_git = wt / ".git"
        if dot_git.is_file():  # a linked worktree: "gitdir: <clone>/.git/worktrees/<id>"
            return wt / dot_git.read_text().split(":", 1)[1].strip()
        return dot_git

    def in_conflict(self, worktree: Path) -> bool:
        """True while a conflict turn (a stopped rebase) is open in the worktree."""
        gd = self._git_dir(Path(worktree))
        return (gd / "rebase-merge").exists() or (gd / "rebase-apply").exists()

    @staticmethod
    def _unmerged(wt: Path) -> list[str]:
        out = _git(wt, "diff", "--name-only", "--diff-filter=U", "-z").stdout
        return sorted(set(_zsplit(out)))


# ---------------------------------------------------------------------------------------------
# remote mode (--executor deployment)


def init_bare_remote(path: Path) -> str:
    """A bare repository at `path` to serve as the shared remote (created if missing); its URL.

    It refuses non-fast-forward pushes itself, so no client can rewind a landing branch.
    """
    path = Path(path).expanduser().resolve()
    if not (path / "HEAD").is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        proc = _git(path.parent, "init", "--bare", "--quiet", str(path), check=False)
        if proc.returncode != 0:
            raise UserError(f"cannot create the shared remote {path}: {_first_line(proc.stderr)}")
        _git(path, "config", "receive.denyNonFastForwards", "true")
    return str(path)


def remote_url(url: str) -> str:
    """An existing local path as an absolute path (worker processes run elsewhere); else as is."""
    if "://" not in url and os.path.isdir(url):
        return os.path.abspath(url)
    return url


class RemoteWorkspace(Workspace):
    """A worker process's workspace: a clone of the shared remote, worktrees, landing by push.

    The shared remote is a bare repository that every worker process, on this machine or
    another, lands on with `git push <commit>:refs/heads/<branch>`. A push that is not a
    fast-forward is rejected: that is the compare-and-swap failing, so the lane fetches the new
    tip, rebases and pushes again; a rebase conflict goes back to the worker's agent as in the
    local mode. There is no user repository here: the orchestrator fetches the branch from the
    remote and publishes it (Workspace.pull_remote).

    Worker processes of one machine share the clone (cheap incremental fetches) and land one at
    a time through a lock file beside it, the machine's lane: measured with 8 processes, 0
    instead of ~4.4 push retries per landing. None of them writes a ref another writes: each
    fetches into a private ref, pushes by URL (so no remote-tracking ref moves), and keeps its
    worktrees in a folder of its own.
    """

    _publishes = False  # the orchestrator publishes

    def __init__(self, url: str, home: Path, branch: str) -> None:
        """Clone the remote into `home/clone` (or reuse that clone) and read the branch's tip.

        UserError if `home/clone` is a clone of something else or the remote cannot be cloned;
        GitError if the remote has no such branch (the orchestrator pushes it first).
        """
        self.url = remote_url(url)
        self.branch = check_branch_name(branch)
        self.ref = f"refs/heads/{self.branch}"
        self.home = Path(home).expanduser().resolve()
        self.clone = self.home / "clone"
        self._host = re.sub(r"[^A-Za-z0-9.-]+", "-", socket.gethostname()).strip(".-") or "host"
        self.worktrees_dir = self.home / "worktrees" / f"{self._host}-{os.getpid()}"
        key = str(self.clone)
        lane_file = self.home / f".lane-{hashlib.sha256(self.branch.encode()).hexdigest()[:16]}"
        self._lane = _MachineLane(  # type: ignore[assignment]
            _registered(_LANES, (key, self.branch), threading.Lock), lane_file
        )
        self._add_lock = _registered(_ADD_LOCKS, key, threading.RLock)
        self.home.mkdir(parents=True, exist_ok=True)
        with _file_lock(self.home / ".clone.lock"):
            self._open_remote_clone()
        self.worktrees_dir.mkdir(parents=True, exist_ok=True)
        self.base_commit = self.tip()

    def _open_remote_clone(self) -> None:
        if (self.clone / ".git").is_dir():
            url = _git(self.clone, "config", "--get", "remote.origin.url", check=False).stdout
            if url.strip() != self.url:
                raise UserError(
                    f"{self.home} holds a clone of {url.strip() or 'another repository'}, "
                    f"not {self.url}; use another folder"
                )
            return
        if self.clone.exists():
            raise UserError(f"{self.clone} exists and is not a devswarm clone; use another folder")
        tmp = self.home / f"clone.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        config = [a for k, v in _CLONE_CONFIG.items() for a in ("-c", f"{k}={v}")]
        proc = _git(
            self.home,
            "clone",
            "--no-checkout",
            "--quiet",
            "--origin",
            "origin",
            *config,
            self.url,
            str(tmp),
            check=False,
        )
        if proc.returncode != 0:
            shutil.rmtree(tmp, ignore_errors=True)
            raise UserError(
                f"cannot clone the shared remote {self.url}: {_first_line(proc.stderr)}"
            )
        os.rename(tmp, self.clone)

    def tip(self) -> str:
        """The branch's commit on the shared remote now (fetched into the clone)."""
        private = f"refs/devswarm/fetched/{self._host}-{os.getpid()}-{threading.get_ident()}"
        proc = self._fetch(self.url, f"+{self.ref}:{private}")
        if proc.returncode != 0:
            raise GitError(
                f"cannot fetch {self.branch} from {self.url}: {_first_line(proc.stderr)}",
                proc.stderr,
            )
        try:
            return _out(self.clone, "rev-parse", "--verify", private)
        finally:
            # The objects stay (gc is off); the ref would only pile up.
            _git(self.clone, "update-ref", "-d", private, check=False)

    def publish(self) -> None:
        """Nothing to do here: the orchestrator publishes from the remote."""

    def _swap(self, candidate: str, tip: str) -> str | None:
        # Not a fast-forward of the remote's tip (someone pushed first): rejected, i.e. the
        # compare-and-swap lost. Any other failure is not worth retrying.
        proc = _git(
            self.clone,
            "push",
            "--quiet",
            "--no-verify",
            "--porcelain",
            self.url,
            f"{candidate}:{self.ref}",
            check=False,
        )
        if proc.returncode == 0:
            return None
        if _lost_race(proc.stdout + proc.stderr):
            return proc.stdout + proc.stderr
        raise GitError(
            f"git push to {self.url} failed: {_first_line(proc.stderr or proc.stdout)}",
            proc.stderr,
        )

    def prune(self) -> None:
        """As Workspace.prune, plus the empty worktree folders of dead processes on this host."""
        super().prune()
        for folder in (self.home / "worktrees").iterdir():
            host, _, pid = folder.name.rpartition("-")
            if host == self._host and pid.isdigit() and not _pid_alive(int(pid)):
                with contextlib.suppress(OSError):
                    folder.rmdir()  # only if empty: live worktrees are pruned above or kept

    def close(self) -> None:
        """Remove this process's worktree folder (its worktrees are removed already)."""
        with contextlib.suppress(OSError):
            self.worktrees_dir.rmdir()


def _message_with_trailers(message: str, trailers: dict[str, str]) -> str:
    """The message, a blank line, and one `Key: value` line per trailer (values on one line)."""
    body = message.strip() or "devswarm task"
    lines = []
    for key, value in trailers.items():
        if not _TRAILER_KEY_RE.fullmatch(key):
            raise ValueError(f"invalid trailer key: {key!r}")
        lines.append(f"{key}: {' '.join(str(value).split())}")
    return f"{body}\n\n" + "\n".join(lines) + "\n" if lines else f"{body}\n"
