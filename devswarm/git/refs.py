"""Refs and a worktree's HEAD read from their files: no git process (see read_sha)."""

from __future__ import annotations

import re
from pathlib import Path

from devswarm.git.plumbing import git_out

_SHA_RE = re.compile(r"[0-9a-f]{40}(?:[0-9a-f]{24})?")


def read_sha(path: Path) -> str | None:
    """The object id a loose ref or a detached HEAD file holds; None when it holds anything
    else (a symbolic ref, a packed or reftable ref: ask git). git replaces these files by
    rename, so a read sees the old or the new id, never half of one. No process: a landing
    reads its tips several times, and each `git rev-parse` costs ~2 ms of CPU."""
    try:
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return text if _SHA_RE.fullmatch(text) else None


def worktree_git_dir(worktree: Path) -> Path:
    """The git folder of a worktree (a linked one's `<clone>/.git/worktrees/<id>`)."""
    dot_git = worktree / ".git"
    if dot_git.is_file():  # a linked worktree: "gitdir: <clone>/.git/worktrees/<id>"
        return worktree / dot_git.read_text().split(":", 1)[1].strip()
    return dot_git


def worktree_head(worktree: Path) -> str:
    """The commit a worktree's (detached) HEAD is at."""
    return read_sha(worktree_git_dir(worktree) / "HEAD") or git_out(worktree, "rev-parse", "HEAD")
