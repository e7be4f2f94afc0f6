"""A worker's commit, and what its worktree changed: the workspace's reads and writes of a worktree.

These git commands run outside the sandbox on files an agent wrote, so each is one of the
safe kind (docs/sandbox.md): no user config (plumbing.py), diffs with DIFF_SAFE, staging that
refuses an embedded repository (staging.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from devswarm.git.plumbing import DIFF_SAFE, GitError, first_line, git, zsplit
from devswarm.git.refs import worktree_head
from devswarm.git.staging import stage_all
from devswarm.git.trailers import message_with_trailers


class Commits:
    """The commit and diff methods of a workspace; they act on a worktree."""

    if TYPE_CHECKING:

        def in_conflict(self, worktree: Path) -> bool: ...

        def continue_conflict(self, worktree: Path) -> str: ...

        def _note_commit(self, sha: str, trailers: dict[str, str]) -> None: ...

    def commit(self, worktree: Path, message: str, trailers: dict[str, str]) -> str | None:
        """Commit everything in the worktree with `message` and a trailer block; None if unchanged.

        During a conflict turn it first finishes the rebase (continue_conflict, which raises
        ConflictError if markers are left) and returns the resolved HEAD if nothing else changed.
        CommitRefused (nothing committed) if the worktree holds an embedded repository.
        """
        resolved = self.continue_conflict(worktree) if self.in_conflict(worktree) else None
        stage_all(worktree)
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
            staged = git(worktree, "diff", "--cached", "--quiet", *DIFF_SAFE, check=False)
            if staged.returncode == 0:
                sha = resolved  # nothing staged: nothing to commit
            else:
                raise GitError(f"git commit failed: {first_line(proc.stderr)}", proc.stderr)
        else:
            sha = worktree_head(worktree)
        if sha is not None:
            self._note_commit(sha, trailers)
        return sha

    def changed_files(self, worktree: Path, base: str) -> list[str]:
        """Paths that differ between `base` and the worktree's files, untracked ones included."""
        tracked = git(
            worktree, "diff", "--name-only", "--no-renames", "-z", *DIFF_SAFE, base, "--"
        ).stdout
        untracked = git(worktree, "ls-files", "--others", "--exclude-standard", "-z").stdout
        return sorted(set(zsplit(tracked)) | set(zsplit(untracked)))

    def diff_stat(self, worktree: Path, base: str, commit: str | None = None) -> str:
        """`git diff --stat` from `base` to `commit`, or else to the worktree's files plus its
        untracked files."""
        if commit is not None:
            return git(
                worktree, "diff", "--stat=120", *DIFF_SAFE, base, commit, "--"
            ).stdout.rstrip()
        stat = git(worktree, "diff", "--stat=120", *DIFF_SAFE, base, "--").stdout.rstrip()
        untracked = zsplit(git(worktree, "ls-files", "--others", "--exclude-standard", "-z").stdout)
        lines = [stat] if stat else []
        lines += [f" {p} | new file (untracked)" for p in untracked]
        return "\n".join(lines)
