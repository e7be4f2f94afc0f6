"""The git workspace: a private clone, one worktree per worker, and the mechanical landing lane.

The user's repository is only ever read, except `refs/heads/<branch>`, which is fast-forwarded
by a `git fetch` run in the user's repository (publish.py). Everything else happens in a private
`--shared` clone under devswarm's data folder, whose local config turns off hooks, signing, gc
and rerere, so neither devswarm nor an agent's own `git` command can be tripped up by the
user's global config.

Workspace is the facade; its rooms are the modules beside it: plumbing (running git), refs
(read from their files), repo (GitPython, opened safely, for the user's repository), locks,
worktrees (`with workspace.worktree(name, base) as path:`), commits (a worker's commit and
diffs; staging refuses an embedded repository), trailers (what landed, and whether a task
already did), landing (the lane: replay one commit with merge-tree, replay.py, else rebase,
then compare-and-swap), conflict (turns for the worker's agent), publish (to the user's
repository and the shared remote) and remote (RemoteWorkspace, a worker process's workspace
in remote mode, where `git push` is the compare-and-swap).
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from devswarm.errors import UserError
from devswarm.git.commits import Commits
from devswarm.git.conflict import ConflictError, ConflictTurns
from devswarm.git.landing import LandingLane, LandResult
from devswarm.git.locks import (
    ADD_LOCKS,
    LANES,
    PUBLISHERS,
    Publisher,
    file_lock,
    registered,
)
from devswarm.git.plumbing import (
    CLONE_CONFIG,
    GitError,
    check_branch_name,
    first_line,
    git,
    git_out,
    rev,
)
from devswarm.git.publish import Publishing
from devswarm.git.refs import read_sha
from devswarm.git.repo import read_user_repository
from devswarm.git.staging import CommitRefused
from devswarm.git.trailers import LandedTasks, TaskIndex
from devswarm.git.worktrees import Worktrees

__all__ = [
    "CommitRefused",
    "ConflictError",
    "GitError",
    "LandResult",
    "Workspace",
    "check_branch_name",
]

BACKUP_REFS = "refs/devswarm/backup"  # <BACKUP_REFS>/<branch>/<UTC time>: commits kept aside
_OPEN_ATTEMPTS = 5  # compare-and-swaps of the branch at opening, against concurrent landings


class Workspace(Worktrees, Commits, ConflictTurns, LandingLane, LandedTasks, Publishing):
    """A private clone of the user's repository, its worktrees, and the landing branch."""

    _publishes = True  # a landing fast-forwards the user's branch (not so in a worker process)

    def __init__(
        self, user_repo: Path, home: Path, branch: str, *, base: str | None = None
    ) -> None:
        """Validate the repository and branch, then create or refresh the clone and the branch.

        Base: the user's `refs/heads/<branch>` if it exists, else `base`, else the user's HEAD.
        """
        self.branch = check_branch_name(branch)
        self.ref = f"refs/heads/{self.branch}"
        user = read_user_repository(Path(user_repo), self.branch, base)
        self.user_repo, self._user_git_dir = user.path, user.git_dir
        self.base_commit = user.base_commit
        user_tip = user.branch_tip
        self.home = Path(home).expanduser().resolve()
        self.clone = self.home / "clone"
        self.worktrees_dir = self.home / "worktrees"

        self.home.mkdir(parents=True, exist_ok=True)
        self.worktrees_dir.mkdir(exist_ok=True)
        key = str(self.clone)
        self._lane: threading.Lock = registered(LANES, (key, self.branch), threading.Lock)
        self._add_lock: threading.RLock = registered(ADD_LOCKS, key, threading.RLock)
        self._publisher: Publisher = registered(
            PUBLISHERS, (str(self._user_git_dir), self.branch), Publisher
        )
        self._tasks = TaskIndex()
        with file_lock(self.home / ".clone.lock"), self._lane:
            self._open_clone()
            self._set_branch(user_tip)
        self._publish_pending(user_tip)

    # -- clone and branch -------------------------------------------------------------------

    def _open_clone(self) -> None:
        cloned = self._open_or_clone(
            str(self.user_repo),
            "--shared",
            what=str(self.user_repo),
            folder="data folder",
            same_origin=lambda url: bool(url) and Path(url).resolve() == self.user_repo,
        )
        if cloned:
            # Detached, so no branch counts as checked out in the clone itself.
            git(self.clone, "update-ref", "--no-deref", "HEAD", self.base_commit)
            return
        # A process killed inside `git worktree add` leaves a worktree whose HEAD is all
        # zeros, and fetch refuses to run while it exists: drop dead processes' worktrees.
        self.prune()
        fetch = ("fetch", "--quiet", "--no-tags", "--prune", "--no-auto-maintenance", "origin")
        proc = git(self.clone, *fetch, check=False, user_config=True)
        if proc.returncode != 0:
            raise UserError(f"cannot refresh {self.clone}: {first_line(proc.stderr)}")

    def _open_or_clone(
        self,
        source: str,
        *options: str,
        what: str,
        folder: str,
        same_origin: Callable[[str], bool],
    ) -> bool:
        """Clone `source` into `<home>/clone` unless that clone exists; True if it cloned.

        UserError if `<home>/clone` is something else (not a clone, or a clone of another
        origin: `same_origin(url)` is false), or the clone fails ("cannot clone <what>")."""
        if (self.clone / ".git").is_dir():
            url = git(self.clone, "config", "--get", "remote.origin.url", check=False).stdout
            if not same_origin(url.strip()):
                raise UserError(
                    f"{self.home} holds a clone of {url.strip() or 'another repository'}, "
                    f"not {source}; use another {folder}"
                )
            return False
        if self.clone.exists():  # clones are renamed into place whole, so this is not ours
            raise UserError(
                f"{self.clone} exists and is not a devswarm clone; use another {folder}"
            )
        tmp = self.home / f"clone.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        config = [a for k, v in CLONE_CONFIG.items() for a in ("-c", f"{k}={v}")]
        proc = git(
            self.home,
            "clone",
            *options,
            "--no-checkout",
            "--quiet",
            "--origin",  # not the user's clone.defaultRemoteName
            "origin",
            *config,
            source,
            str(tmp),
            check=False,
            user_config=True,
        )
        if proc.returncode != 0:
            shutil.rmtree(tmp, ignore_errors=True)
            raise UserError(f"cannot clone {what}: {first_line(proc.stderr)}")
        os.rename(tmp, self.clone)  # complete or absent, never half-made
        return True

    def _set_branch(self, user_tip: str | None) -> None:
        """Point the clone's branch at the user's (base_commit), never dropping a commit.

        A clone's branch ahead of the user's holds landings that were not published (a crash,
        a failed publish): it is kept, and __init__ publishes it first. Any other commit a
        reset would drop is kept under BACKUP_REFS first; if the user's branch moved too (the
        two diverged), the reset is followed by a UserError that says where they are.
        """
        for _ in range(_OPEN_ATTEMPTS):
            current = rev(self.clone, self.ref)
            if current == self.base_commit:
                return
            backup = None
            if current is not None:
                mb = git(self.clone, "merge-base", self.base_commit, current, check=False)
                if mb.stdout.strip() == self.base_commit and user_tip is not None:
                    return  # ahead: unpublished landings
                if mb.stdout.strip() != current:  # not merely behind: commits a reset drops
                    backup = self._back_up(current)
            # A compare-and-swap: another process sharing the clone may land meanwhile.
            old = current or ""  # "": the branch must not exist yet
            opened = git(
                self.clone,
                "update-ref",
                "-m",
                "devswarm: open",
                self.ref,
                self.base_commit,
                old,
                check=False,
            )
            if opened.returncode == 0:
                break
        else:
            raise UserError(f"cannot set branch {self.branch} in {self.clone}: it keeps moving")
        if backup is not None and user_tip is not None:
            raise UserError(
                f"branch {self.branch} in {self.user_repo} and the swarm's in {self.clone} have "
                f"diverged (both moved); nothing was forced: the swarm's commits are kept as "
                f"{backup} in {self.clone} (`git fetch {self.clone} {backup}:<a new branch>` "
                "brings them into your repository); run again to continue from your branch"
            )

    def _back_up(self, commit: str) -> str:
        """A ref under BACKUP_REFS/<branch> holding `commit` (an existing one if any)."""
        prefix = f"{BACKUP_REFS}/{self.branch}"
        existing = git(
            self.clone, "for-each-ref", "--points-at", commit, "--format=%(refname)", prefix
        ).stdout.split()
        if existing:
            return existing[0]
        name = stamp = f"{prefix}/{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}"
        taken = 1
        while rev(self.clone, name) is not None:  # another backup this second
            taken += 1
            name = f"{stamp}-{taken}"
        git(self.clone, "update-ref", "-m", "devswarm: backup", name, commit, "")
        return name

    def _publish_pending(self, user_tip: str | None) -> None:
        """Publish what the user's branch lacks (a new branch, or landings not yet published)
        before any new landing; UserError if it cannot."""
        if user_tip != self.tip():
            self.publish()

    def tip(self) -> str:
        """The landing branch's current commit in the clone."""
        return read_sha(self.clone / ".git" / self.ref) or git_out(
            self.clone, "rev-parse", "--verify", self.ref
        )
