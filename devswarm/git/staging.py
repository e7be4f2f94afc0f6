"""Staging a worktree for a commit: everything the agent wrote, but never a repository.

`git add -A` records a folder that holds a `.git` (a folder, or a file pointing elsewhere) as a
gitlink: an embedded repository, whose commit exists only in the agent's worktree and whose
config is the agent's. devswarm refuses it with a message the agent reads (CommitRefused), so
the worker can remove it and finish; a gitlink already in the base (a real submodule) may be
deleted, never moved.
"""

from __future__ import annotations

import re
from pathlib import Path

from devswarm.git.plumbing import GitError, first_line, git, zsplit
from devswarm.git.refs import worktree_git_dir

# A gitlink's mode (0o160000) as git's index stores it: one big-endian 32-bit word per entry.
# An index without these bytes holds no gitlink, so the common case costs no process.
_GITLINK_MODE = (0o160000).to_bytes(4, "big")
_EMPTY_REPO_RE = re.compile(r"^error: '(.+)/' does not have a commit checked out$", re.MULTILINE)


class CommitRefused(GitError):
    """devswarm will not commit what the worktree holds; the message is for the agent."""

    def __init__(self, message: str, paths: list[str]) -> None:
        super().__init__(message)
        self.paths = paths


def stage_all(worktree: Path) -> None:
    """Stage every change in the worktree (`git add -A`); CommitRefused, the gitlinks left
    unstaged, if that would add or move one (an embedded repository)."""
    added = git(worktree, "add", "-A", check=False)
    if added.returncode != 0:
        # A repository without a commit yet: git refuses to add it at all.
        paths = _EMPTY_REPO_RE.findall(added.stderr)
        if not paths:
            raise GitError(f"git add -A failed: {first_line(added.stderr)}", added.stderr)
    else:
        paths = _staged_gitlinks(worktree)
        if not paths:
            return
        # Unstage them (a new one leaves the index, a moved one goes back to HEAD's commit);
        # the agent's files stay as they are.
        git(worktree, "reset", "-q", "HEAD", "--", *paths, env={"GIT_LITERAL_PATHSPECS": "1"})
    names = ", ".join(f"`{p}`" for p in paths)
    what = "is a git repository" if len(paths) == 1 else "are git repositories"
    raise CommitRefused(
        f"Not committed: {names} {what} inside your worktree (a folder holding a `.git` folder "
        "or file). devswarm never commits a repository inside a task's files, nor runs git in "
        f"one. Delete its `.git` (e.g. `rm -rf {paths[0]}/.git`) to keep its files as ordinary "
        "files, or delete the folder; then finish again.",
        paths,
    )


def _staged_gitlinks(worktree: Path) -> list[str]:
    """Paths whose staged entry is a gitlink that HEAD does not have (added or moved)."""
    try:
        index = (worktree_git_dir(worktree) / "index").read_bytes()
    except OSError:
        index = _GITLINK_MODE  # can't tell from the file: ask git
    if _GITLINK_MODE not in index:
        return []
    out = git(
        worktree,
        "diff-index",
        "--cached",
        "--raw",
        "-z",
        "--no-renames",
        "--ignore-submodules=none",  # the pointer is what we look at; git never enters it here
        "HEAD",
        "--",
    ).stdout
    fields = zsplit(out)
    found = []
    for meta, path in zip(fields[::2], fields[1::2], strict=False):
        new_mode = meta.split(" ")[1] if meta.startswith(":") else ""
        if new_mode == "160000":
            found.append(path)
    return found
