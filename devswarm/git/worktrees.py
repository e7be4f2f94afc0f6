"""Worktrees of the private clone: one per worker, added at a commit, removed whatever its state.

`with workspace.worktree(name, base) as path:` is a worktree's whole lifetime; add_worktree and
remove_worktree are its two halves, for callers that cannot hold a `with` block open.

Each worktree is locked with its owner's pid and host, so prune() in any process drops only the
worktrees of dead processes. `git worktree add` and `remove` on one repository fail now and then
when run concurrently: a lock per clone serializes them in this process, a retry covers others.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from devswarm.git.plumbing import GitError, first_line, git, rev
from devswarm.procs import pid_alive

WORKTREE_ADD_ATTEMPTS = 5
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,120}")


class Worktrees:
    """The worktree methods of a workspace: `<worktrees_dir>/<name>` of the clone."""

    clone: Path
    worktrees_dir: Path
    _add_lock: threading.RLock  # reentrant: prune() holds it while it calls remove_worktree()

    @contextlib.contextmanager
    def worktree(self, name: str, base: str) -> Iterator[Path]:
        """A worktree for the length of a `with` block (as add_worktree), removed on every way
        out of it: the end of the block, an exception, a cancellation."""
        path = self.add_worktree(name, base)
        try:
            yield path
        finally:
            self.remove_worktree(path)

    def add_worktree(self, name: str, base: str) -> Path:
        """A new worktree `<home>/worktrees/<name>` with a detached HEAD at commit `base`."""
        if not _NAME_RE.fullmatch(name):
            raise ValueError(f"worktree name must match {_NAME_RE.pattern}: {name!r}")
        commit = rev(self.clone, base)
        if commit is None:
            raise GitError(f"not a commit: {base!r}")
        path = self.worktrees_dir / name
        if path.exists():
            self.remove_worktree(path)
        # Locked with our pid, so prune() in another process leaves a live worktree alone.
        reason = f"devswarm pid {os.getpid()} on {socket.gethostname()}"
        err = ""
        for attempt in range(WORKTREE_ADD_ATTEMPTS):
            # Concurrent `worktree add` on one repository fails now and then; the lock covers
            # this process, the retry other processes. Files are checked out outside the lock.
            with self._add_lock:
                proc = git(
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
            raise GitError(f"git worktree add {path} failed: {first_line(err)}", err)
        git(path, "reset", "--hard", "--quiet")
        return path

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
            proc = git(
                self.clone, "worktree", "remove", "--force", "--force", str(path), check=False
            )
            if proc.returncode != 0:
                # Deleted by hand or half-made: unlock, delete, and let prune drop the entry.
                git(self.clone, "worktree", "unlock", str(path), check=False)
                shutil.rmtree(path, ignore_errors=True)
                git(self.clone, "worktree", "prune", check=False)
        if path.exists():
            shutil.rmtree(path, ignore_errors=True)

    def _worktrees(self) -> dict[Path, str | None]:
        """Registered worktrees of the clone (not the clone itself) → lock reason or None."""
        out = git(self.clone, "worktree", "list", "--porcelain", "-z").stdout
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
                elif m and m[2] == host and int(m[1]) != me and not pid_alive(int(m[1])):
                    self.remove_worktree(path)
                elif reason is None and path.parent == self.worktrees_dir:
                    self.remove_worktree(path)  # ours are always locked: this one is a leftover
            git(self.clone, "worktree", "prune")
            live = set(self._worktrees())
            if self.worktrees_dir.is_dir():
                for child in self.worktrees_dir.iterdir():
                    if child not in live:
                        if child.is_dir() and not child.is_symlink():
                            shutil.rmtree(child, ignore_errors=True)
                        else:
                            child.unlink(missing_ok=True)
