"""Confinement: every path a tool touches resolves inside the root, or is refused.

No absolute paths, no `..` out, no symlinks out, nothing under `.git`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from devswarm.tools.specs import ToolError


class PathRefused(ToolError):
    """A path that would leave the root or touch `.git`."""

    error_type = "path_refused"


def _has_git_part(parts: Iterable[str]) -> bool:
    # casefold: on a case-insensitive file system `.GIT` is the same folder
    return any(p.casefold() == ".git" for p in parts)


def resolve_inside(root: Path, path: str | os.PathLike[str]) -> Path:
    """The real path of `path` (relative to `root`), or PathRefused if it is not inside root.

    Refuses absolute paths, anything with a `.git` component, and anything whose real path
    (symlinks resolved, including those in parents of a file not yet created) is outside root.
    """
    raw = os.fspath(path) or "."
    if "\0" in raw:
        raise PathRefused("path contains a NUL character")
    if os.path.isabs(raw):
        raise PathRefused(
            f"{raw}: absolute paths are refused; use a path relative to the repository root"
        )
    if _has_git_part(PurePosixPath(raw).parts):
        raise PathRefused(f"{raw}: .git is off limits (devswarm manages the repository's git data)")
    real_root = os.path.realpath(root)
    real = os.path.realpath(os.path.join(real_root, raw))
    if real != real_root and not real.startswith(real_root.rstrip(os.sep) + os.sep):
        lexical = os.path.normpath(os.path.join(real_root, raw))
        if lexical == real_root or lexical.startswith(real_root + os.sep):
            raise PathRefused(f"{raw}: a symlink leads outside the repository")
        raise PathRefused(f"{raw}: outside the repository")
    if _has_git_part(PurePosixPath(os.path.relpath(real, real_root)).parts):
        raise PathRefused(f"{raw}: leads into .git, which is off limits")
    return Path(real)


def resolve_existing(root: Path, path: str) -> Path:
    """resolve_inside, and a ToolError (not_found) if nothing is there."""
    target = resolve_inside(root, path)
    if not os.path.lexists(target):
        raise ToolError(f"{path}: no such file or folder", "not_found")
    return target


def relative(real_root: str, real: Path | str) -> str:
    """A real path inside root as the model sees it: relative to root, '.' for root."""
    return os.path.relpath(real, real_root)
