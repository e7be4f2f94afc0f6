"""Where the landing branch goes from the private clone: the user's repository, the remote.

publish() fast-forwards the user's `refs/heads/<branch>` with a `git fetch` run in the user's
repository (fetch runs no hooks there, refuses a checked-out branch and never forces).
In remote mode (--executor deployment, docs/scale-out.md) the orchestrator pushes the branch
to the shared remote first (push_remote) and fetches the workers' landings back to publish
them (pull_remote).
"""

from __future__ import annotations

import random
import subprocess
import threading
import time
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING

from devswarm.errors import UserError
from devswarm.git.locks import Publisher
from devswarm.git.plumbing import FETCH_ARGS, first_line, git, lost_race
from devswarm.git.worktrees import WORKTREE_ADD_ATTEMPTS


class Publishing:
    """The publishing methods of a workspace."""

    branch: str
    ref: str
    clone: Path
    user_repo: Path
    _lane: AbstractContextManager[object]
    _add_lock: threading.RLock
    _publisher: Publisher

    if TYPE_CHECKING:

        def tip(self) -> str: ...

    def publish(self) -> None:
        """Fast-forward the user's branch to the clone's; UserError if it cannot (never forced)."""
        self._publisher.publish(self._fetch_into_user)

    def _fetch_into_user(self) -> None:
        proc = git(
            self.user_repo,
            *FETCH_ARGS,
            "--no-prune",
            str(self.clone),
            f"{self.ref}:{self.ref}",
            check=False,
            user_config=True,
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
        raise UserError(f"could not publish {self.branch}: {first_line(err)}")

    def push_remote(self, url: str) -> None:
        """Put the landing branch on the shared remote that worker processes land through.

        The remote's branch is created, or fast-forwarded to the clone's; if it is ahead instead
        (workers landed there before a crash), the clone follows it. UserError if the two have
        diverged (nothing is forced) or the remote cannot be reached.
        """
        with self._lane:
            proc = git(
                self.clone,
                "push",
                "--quiet",
                "--no-verify",
                url,
                f"{self.ref}:{self.ref}",
                check=False,
                user_config=True,
            )
        if proc.returncode == 0:
            return
        if not lost_race(proc.stdout + proc.stderr):
            raise UserError(
                f"cannot push {self.branch} to the shared remote {url}: {first_line(proc.stderr)}"
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
                if lost_race(proc.stderr):
                    raise UserError(
                        f"branch {self.branch} on the shared remote {url} and in {self.clone} "
                        "have diverged; not forced"
                    )
                raise UserError(
                    f"cannot fetch {self.branch} from the shared remote {url}: "
                    f"{first_line(proc.stderr)}"
                )
            moved = self.tip() != before
        if moved:
            self.publish()
        return moved

    def _fetch(self, url: str, refspec: str) -> subprocess.CompletedProcess[str]:
        """Fetch into the clone. A fetch reads every worktree's HEAD, and `git worktree add`
        leaves a placeholder HEAD there for a moment ("bad object worktrees/<name>/HEAD"): the
        add lock covers this process, a retry other processes sharing the clone."""
        for attempt in range(WORKTREE_ADD_ATTEMPTS):
            with self._add_lock:
                proc = git(self.clone, *FETCH_ARGS, url, refspec, check=False, user_config=True)
            if proc.returncode == 0 or "worktrees/" not in proc.stderr:
                break
            time.sleep(0.02 * (attempt + 1) * (1 + random.random()))
        return proc
