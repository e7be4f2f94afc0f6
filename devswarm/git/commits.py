"""A worker's commit, and what its worktree changed: the workspace's reads and writes of a worktree."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from devswarm.git.plumbing import GitError, first_line, git, zsplit
from devswarm.git.refs import worktree_head
from devswarm.git.trailers import message_with_trailers


class Commits:
    """The commit and diff methods of a workspace; they act on a worktree."""

    if TYPE_CHECKING:

        def in_conflict(self, worktree: Path) -> bool: ...

        def continue_conflict(self, worktree: Path) -> str: ...

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
            input=message_with_trailers(message, trailers),
            check=False,
        )
        if proc.returncode != 0:
            if git(worktree, "diff", "--cached", "--quiet", check=False).returncode == 0:
                return resolved  # nothing staged: nothing to commit
            raise GitError(f"git commit failed: {first_line(proc.stderr)}", proc.stderr)
        return worktree_head(worktree)

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
