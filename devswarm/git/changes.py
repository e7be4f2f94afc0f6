"""A change put on another commit without a worktree: replays for the verifier and reverts.

Both are one three-way merge of trees: replaying the change `base..head` onto `onto` merges
head's tree into onto's with base's tree as the merge base (a cherry-pick of the whole range);
reverting `first..last` does the same with the roles of base and head swapped. git 2.39 has no
`merge-tree --merge-base`, so the merge base is forced with three throwaway commits: a root
holding base's tree and two children of it holding the other two trees. Their only common
ancestor is the root, so `merge-tree --write-tree` merges exactly as the cherry-pick would.
Nothing here touches a ref, an index or a worktree (the objects it writes are unreferenced).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import NamedTuple

from devswarm.git.plumbing import git, git_out

_AUTHOR_RE = re.compile(r"(.*) <(.*)> (\d+ [+-]\d{4})")


class Merged(NamedTuple):
    """A three-way merge of trees: the tree when it merged cleanly, else the conflicted paths."""

    tree: str | None
    conflicts: list[str]


def three_way(clone: Path, base: str, ours: str, theirs: str) -> Merged:
    """Merge the trees of `ours` and `theirs` (commits or trees) with base's tree as base."""

    def root_child(tree_of: str, parent: str | None) -> str:
        args = ["commit-tree", f"{tree_of}^{{tree}}"] + (["-p", parent] if parent else [])
        return git_out(clone, *args, "-m", "devswarm: merge base")

    root = root_child(base, None)
    a, b = root_child(ours, root), root_child(theirs, root)
    proc = git(
        clone, "merge-tree", "--write-tree", "--name-only", "--no-messages", a, b, check=False
    )
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    if proc.returncode == 0 and lines:
        return Merged(lines[0].strip(), [])
    return Merged(None, sorted(set(lines[1:])) if proc.returncode == 1 else ["(merge failed)"])


def tree_of(clone: Path, commit: str) -> str:
    return git_out(clone, "rev-parse", f"{commit}^{{tree}}")


def replay_change(clone: Path, base: str, head: str, onto: str) -> str | Merged:
    """The commit that puts the change `base..head` on `onto` (head's message and author,
    committer devswarm), `onto` itself when the change is already there, or the Merged with the
    conflicted paths when it does not apply cleanly."""
    merged = three_way(clone, base, onto, head)
    if merged.tree is None:
        return merged
    if merged.tree == tree_of(clone, onto):
        return onto
    raw = git(clone, "cat-file", "commit", head).stdout
    header, _, message = raw.partition("\n\n")
    env: dict[str, str] = {}
    for line in header.splitlines():
        if line.startswith("author ") and (m := _AUTHOR_RE.fullmatch(line[7:])):
            env = {"GIT_AUTHOR_NAME": m[1], "GIT_AUTHOR_EMAIL": m[2], "GIT_AUTHOR_DATE": f"@{m[3]}"}
    made = git(clone, "commit-tree", merged.tree, "-p", onto, "-F", "-", input=message, env=env)
    return made.stdout.strip()


def revert_change(clone: Path, first: str, last: str, onto: str, message: str) -> str | Merged:
    """The commit on `onto` that undoes the commits `first..last` (first included), with
    `message`; the Merged with the conflicted paths when later commits changed the same lines."""
    merged = three_way(clone, last, onto, f"{first}^")
    if merged.tree is None:
        return merged
    return git(
        clone, "commit-tree", merged.tree, "-p", onto, "-F", "-", input=message
    ).stdout.strip()


def merge_base(clone: Path, a: str, b: str) -> str:
    """The best common ancestor of two commits."""
    return git_out(clone, "merge-base", a, b)


def contains(clone: Path, tip: str, commit: str) -> bool:
    """Whether `commit` is `tip` or one of its ancestors."""
    return git(clone, "merge-base", "--is-ancestor", commit, tip, check=False).returncode == 0


def changed_paths(clone: Path, first: str, last: str) -> list[str]:
    """The paths the commits `first..last` (first included) change."""
    out = git(clone, "diff", "--name-only", "--no-renames", f"{first}^", last, "--").stdout
    return [line for line in out.splitlines() if line]


def diff_text(clone: Path, first: str, last: str, limit: int = 6000) -> str:
    """The diff of the commits `first..last` (first included), cut to `limit` characters."""
    out = git(clone, "diff", "--no-color", "--no-renames", f"{first}^", last, "--").stdout
    return out if len(out) <= limit else out[:limit] + "\n[... diff cut ...]\n"
