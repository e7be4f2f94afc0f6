"""Conflict turns: a landing that conflicts goes back to the worker's own agent.

begin_conflict rebases the worker's worktree onto the tip and leaves the conflict markers for
the agent (outside the landing lane); continue_conflict stages its resolution and finishes the
rebase, or says which files still hold markers; abort_conflict gives the turn up.
"""

from __future__ import annotations

import re
from pathlib import Path

from devswarm.git.plumbing import (
    DIFF_SAFE,
    GitError,
    first_line,
    git,
    git_out,
    rev,
    zsplit,
)
from devswarm.git.refs import worktree_git_dir
from devswarm.git.staging import stage_all

_MARKER_RE = re.compile(rb"^(?:<{7}|>{7}|\|{7})(?: |\r?$)", re.MULTILINE)
# The conflicted paths of the open turn, kept in the worktree's git folder: git forgets them
# as soon as the agent stages a file, and staged markers must still be refused.
_CONFLICT_RECORD = "devswarm-conflict-files"


class ConflictError(GitError):
    """A conflict turn cannot continue: markers are left, or the rebase stopped again."""

    def __init__(self, message: str, files: list[str]) -> None:
        super().__init__(message)
        self.files = files


def in_conflict(worktree: Path) -> bool:
    """True while a conflict turn (a stopped rebase) is open in the worktree."""
    gd = worktree_git_dir(Path(worktree))
    return (gd / "rebase-merge").exists() or (gd / "rebase-apply").exists()


def unmerged_paths(worktree: Path) -> list[str]:
    """The worktree's paths git still lists as unmerged, sorted."""
    out = git(worktree, "diff", "--name-only", "--diff-filter=U", "-z", *DIFF_SAFE).stdout
    return sorted(set(zsplit(out)))


def _record(worktree: Path, files: list[str]) -> None:
    (worktree_git_dir(worktree) / _CONFLICT_RECORD).write_text(
        "\0".join(files), errors="surrogateescape"
    )


class ConflictTurns:
    """The conflict-turn methods of a workspace; they act on a worktree only."""

    in_conflict = staticmethod(in_conflict)

    def begin_conflict(self, worktree: Path, onto: str) -> list[str]:
        """Rebase the worktree onto `onto`, leaving conflict markers; the conflicted paths
        ([] if the rebase went through cleanly, e.g. because the branch moved on)."""
        wt = Path(worktree)
        if in_conflict(wt):
            return unmerged_paths(wt)
        commit = rev(wt, onto)
        if commit is None:
            raise GitError(f"not a commit: {onto!r}")
        proc = git(wt, "rebase", "--quiet", commit, check=False)
        if proc.returncode == 0:
            return []
        files = unmerged_paths(wt) if in_conflict(wt) else []
        if not files:
            self.abort_conflict(wt)
            raise GitError(f"git rebase failed: {first_line(proc.stderr)}", proc.stderr)
        _record(wt, files)
        return files

    def conflict_markers_left(self, worktree: Path) -> list[str]:
        """Conflicted paths (still unmerged, or recorded by begin_conflict) that hold markers."""
        wt = Path(worktree)
        record = worktree_git_dir(wt) / _CONFLICT_RECORD
        paths = set(unmerged_paths(wt))
        if record.exists():
            paths |= set(zsplit(record.read_text(errors="surrogateescape")))
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
        if in_conflict(wt):
            stage_all(wt)  # CommitRefused for an embedded repository, as at commit
            proc = git(wt, "rebase", "--continue", check=False)
            if proc.returncode != 0:
                files = unmerged_paths(wt) if in_conflict(wt) else []
                if files:
                    _record(wt, files)
                    raise ConflictError(f"the rebase stopped again on {', '.join(files)}", files)
                raise GitError(
                    f"git rebase --continue failed: {first_line(proc.stderr)}", proc.stderr
                )
        (worktree_git_dir(wt) / _CONFLICT_RECORD).unlink(missing_ok=True)
        return git_out(wt, "rev-parse", "HEAD")

    def abort_conflict(self, worktree: Path) -> None:
        """Give up the conflict turn: the worktree returns to its commits before the rebase."""
        wt = Path(worktree)
        if in_conflict(wt):
            git(wt, "rebase", "--abort", check=False)
        (worktree_git_dir(wt) / _CONFLICT_RECORD).unlink(missing_ok=True)
