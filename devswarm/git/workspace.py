"""The git workspace: a private clone, one worktree per worker, and the mechanical landing lane.

The user's repository is only ever read, except `refs/heads/<branch>`, which is fast-forwarded
by a `git fetch` run in the user's repository (publish.py). Everything else happens in a private
`--shared` clone under devswarm's data folder, whose local config turns off hooks, signing, gc
and rerere, so neither devswarm nor an agent's own `git` command can be tripped up by the
user's global config.

Workspace is the facade; its rooms are the modules beside it: plumbing (running git), repo
(GitPython, opened safely, for the user's repository), locks, worktrees (`with
workspace.worktree(name, base) as path:`), landing (the lane: replay one commit with
merge-tree, else rebase, then compare-and-swap), conflict (turns for the worker's agent),
publish (to the user's repository and the shared remote) and remote (RemoteWorkspace, a worker
process's workspace in remote mode, where `git push` is the compare-and-swap).
"""

from __future__ import annotations

import os
import re
import shutil
import threading
from collections.abc import Callable
from pathlib import Path

from devswarm.errors import UserError
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
    read_sha,
    rev,
    worktree_head,
    zsplit,
)
from devswarm.git.publish import Publishing
from devswarm.git.replay import Merged, revert_change
from devswarm.git.repo import read_user_repository
from devswarm.git.worktrees import Worktrees

__all__ = [
    "ConflictError",
    "GitError",
    "LandResult",
    "Workspace",
    "check_branch_name",
]

_TRAILER_KEY_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")
_TRAILERS = {
    "run": "Devswarm-Run",
    "task": "Devswarm-Task",
    "agent": "Devswarm-Agent",
    "revert": "Devswarm-Revert",  # a revert by the verifier: the commit it undoes
}


class Workspace(Worktrees, ConflictTurns, LandingLane, Publishing):
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
        with file_lock(self.home / ".clone.lock"), self._lane:
            self._open_clone()
            self._set_branch(user_tip)
        if user_tip != self.tip():
            self.publish()

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
        proc = git(self.clone, *fetch, check=False)
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
        )
        if proc.returncode != 0:
            shutil.rmtree(tmp, ignore_errors=True)
            raise UserError(f"cannot clone {what}: {first_line(proc.stderr)}")
        os.rename(tmp, self.clone)  # complete or absent, never half-made
        return True

    def _set_branch(self, user_tip: str | None) -> None:
        current = rev(self.clone, self.ref)
        if user_tip is not None and current not in (None, user_tip):
            mb = git(self.clone, "merge-base", user_tip, current, check=False).stdout.strip()
            if mb == user_tip:
                # The clone is ahead: landings a crash kept from being published. Keep them.
                return
        git(self.clone, "update-ref", "-m", "devswarm: open", self.ref, self.base_commit)

    def tip(self) -> str:
        """The landing branch's current commit in the clone."""
        return read_sha(self.clone / ".git" / self.ref) or git_out(
            self.clone, "rev-parse", "--verify", self.ref
        )

    # -- commits ------------------------------------------------------------------------------

    def commit(self, worktree: Path, message: str, trailers: dict[str, str]) -> str | None:
        """Commit everything in the worktree with `message` and a trailer block; None if unchanged.

        During a conflict turn it first finishes the rebase (continue_conflict, which raises
        ConflictError if markers are left) and returns the resolved HEAD if nothing else changed.
        """
        resolved = self.continue_conflict(worktree) if self.in_conflict(worktree) else None
        git(worktree, "add", "-A")
        proc = git(
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
            if git(worktree, "diff", "--cached", "--quiet", check=False).returncode == 0:
                return resolved  # nothing staged: nothing to commit
            raise GitError(f"git commit failed: {first_line(proc.stderr)}", proc.stderr)
        return worktree_head(worktree)

    def revert(self, first: str, last: str, message: str, trailers: dict[str, str]) -> LandResult:
        """Land, through the lane, a commit on the tip that undoes the commits `first..last`
        (first included): status "conflict" with the files when later landings changed the
        same lines (nothing lands then)."""
        text = _message_with_trailers(message, trailers)

        def make(tip: str) -> str | LandResult:
            made = revert_change(self.clone, first, last, tip, text)
            if isinstance(made, Merged):
                return LandResult(
                    status="conflict",
                    commit=last,
                    old_tip=tip,
                    conflict_files=made.conflicts,
                    reason=f"the revert of {last[:12]} conflicts in {', '.join(made.conflicts)}",
                )
            return made

        return self.land_made(make)

    def changed_files(self, worktree: Path, base: str) -> list[str]:
        """Paths that differ between `base` and the worktree's files, untracked ones included."""
        tracked = git(worktree, "diff", "--name-only", "--no-renames", "-z", base, "--").stdout
        untracked = git(worktree, "ls-files", "--others", "--exclude-standard", "-z").stdout
        return sorted(set(zsplit(tracked)) | set(zsplit(untracked)))

    def diff_stat(self, worktree: Path, base: str, commit: str | None = None) -> str:
        """`git diff --stat` from `base` to `commit`, or else to the worktree's files plus its
        untracked files."""
        if commit is not None:
            return git(worktree, "diff", "--stat=120", base, commit, "--").stdout.rstrip()
        stat = git(worktree, "diff", "--stat=120", base, "--").stdout.rstrip()
        untracked = zsplit(git(worktree, "ls-files", "--others", "--exclude-standard", "-z").stdout)
        lines = [stat] if stat else []
        lines += [f" {p} | new file (untracked)" for p in untracked]
        return "\n".join(lines)

    def landed_trailers(self, rev_range: str | None = None) -> list[dict]:
        """Commits in `rev_range` (default base..branch), oldest first, with their devswarm
        trailers: {"commit", "subject", "run", "task", "agent", "revert"} (None when a trailer
        is absent)."""
        fields = ["%H", "%s"] + [
            f"%(trailers:key={k},valueonly,unfold)" for k in _TRAILERS.values()
        ]
        fmt = "%x1f".join(fields) + "%x1e"
        rng = rev_range or f"{self.base_commit}..{self.ref}"
        out = git(
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


def _message_with_trailers(message: str, trailers: dict[str, str]) -> str:
    """The message, a blank line, and one `Key: value` line per trailer (values on one line)."""
    body = message.strip() or "devswarm task"
    lines = []
    for key, value in trailers.items():
        if not _TRAILER_KEY_RE.fullmatch(key):
            raise ValueError(f"invalid trailer key: {key!r}")
        lines.append(f"{key}: {' '.join(str(value).split())}")
    return f"{body}\n\n" + "\n".join(lines) + "\n" if lines else f"{body}\n"
