"""Remote mode (--executor deployment, docs/scale-out.md): landing through a shared remote.

Worker processes land on a shared bare remote with a RemoteWorkspace, where `git push` is the
compare-and-swap (a push that is not a fast-forward is rejected); the orchestrator's Workspace
pushes the branch there first and fetches the workers' landings back to publish them
(Workspace.push_remote / pull_remote).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import socket
import threading
from pathlib import Path

from devswarm.errors import UserError
from devswarm.git.locks import ADD_LOCKS, LANES, MachineLane, file_lock, registered
from devswarm.git.plumbing import (
    GitError,
    check_branch_name,
    first_line,
    git,
    git_out,
    lost_race,
)
from devswarm.git.trailers import TaskIndex
from devswarm.git.workspace import Workspace
from devswarm.procs import pid_alive


def init_bare_remote(path: Path) -> str:
    """A bare repository at `path` to serve as the shared remote (created if missing); its URL.

    It refuses non-fast-forward pushes itself, so no client can rewind a landing branch.
    """
    path = Path(path).expanduser().resolve()
    if not (path / "HEAD").is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        proc = git(path.parent, "init", "--bare", "--quiet", str(path), check=False)
        if proc.returncode != 0:
            raise UserError(f"cannot create the shared remote {path}: {first_line(proc.stderr)}")
        git(path, "config", "receive.denyNonFastForwards", "true")
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
    tip, puts the commits onto it again (replayed, or rebased) and pushes again; a conflict goes
    back to the worker's agent as in the local mode. There is no user repository here: the orchestrator fetches the branch from the
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
        self._lane = MachineLane(  # type: ignore[assignment]
            registered(LANES, (key, self.branch), threading.Lock), lane_file
        )
        self._add_lock = registered(ADD_LOCKS, key, threading.RLock)
        self._tasks = TaskIndex()
        self.home.mkdir(parents=True, exist_ok=True)
        with file_lock(self.home / ".clone.lock"):
            self._open_or_clone(
                self.url,
                what=f"the shared remote {self.url}",
                folder="folder",
                same_origin=lambda origin: origin == self.url,
            )
        self.worktrees_dir.mkdir(parents=True, exist_ok=True)
        self.base_commit = self.tip()

    def tip(self) -> str:
        """The branch's commit on the shared remote now (fetched into the clone)."""
        private = f"refs/devswarm/fetched/{self._host}-{os.getpid()}-{threading.get_ident()}"
        proc = self._fetch(self.url, f"+{self.ref}:{private}")
        if proc.returncode != 0:
            raise GitError(
                f"cannot fetch {self.branch} from {self.url}: {first_line(proc.stderr)}",
                proc.stderr,
            )
        try:
            return git_out(self.clone, "rev-parse", "--verify", private)
        finally:
            # The objects stay (gc is off); the ref would only pile up.
            git(self.clone, "update-ref", "-d", private, check=False)

    def publish(self) -> None:
        """Nothing to do here: the orchestrator publishes from the remote."""

    def _swap(self, candidate: str, tip: str) -> str | None:
        # Not a fast-forward of the remote's tip (someone pushed first): rejected, i.e. the
        # compare-and-swap lost. Any other failure is not worth retrying.
        proc = git(
            self.clone,
            "push",
            "--quiet",
            "--no-verify",
            "--porcelain",
            self.url,
            f"{candidate}:{self.ref}",
            check=False,
            user_config=True,
        )
        if proc.returncode == 0:
            return None
        if lost_race(proc.stdout + proc.stderr):
            return proc.stdout + proc.stderr
        raise GitError(
            f"git push to {self.url} failed: {first_line(proc.stderr or proc.stdout)}",
            proc.stderr,
        )

    def prune(self) -> None:
        """As Workspace.prune, plus the empty worktree folders of dead processes on this host."""
        super().prune()
        for folder in (self.home / "worktrees").iterdir():
            host, _, pid = folder.name.rpartition("-")
            if host == self._host and pid.isdigit() and not pid_alive(int(pid)):
                with contextlib.suppress(OSError):
                    folder.rmdir()  # only if empty: live worktrees are pruned above or kept

    def close(self) -> None:
        """Remove this process's worktree folder (its worktrees are removed already)."""
        with contextlib.suppress(OSError):
            self.worktrees_dir.rmdir()
