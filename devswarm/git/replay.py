"""Replaying a worker's one commit onto the tip without a worktree: merge-tree + commit-tree.

The replay makes the commit `git rebase` would make (the same merge, author and message;
committer devswarm) in three small git processes (merge-tree, cat-file, commit-tree) instead of
a rebase's checkout and state files: under load a rebase costs ~18 ms of CPU, these ~7. The
merge base is the only one of tip and head (head's parent is their best common ancestor), so
the merge is exactly the cherry-pick a rebase does.

Except for attributes. merge-tree in the no-checkout clone reads no `.gitattributes` from the
trees it merges (git 2.39 has no `--attr-source`), while a rebase in the worktree reads the
tip's. They matter only where a file is merged line by line, a path both sides changed
(merge-tree reports "Auto-merging" for it): there, when a `.gitattributes` in one of the path's
folders, in the tip or in the commit, may set `merge` (`-merge`, `merge=binary`, `merge=union`,
a driver of its own) or `binary` (which unsets it), the replay steps aside and the lane rebases.
Those files are read in the same cat-file that reads the commit, so this costs no process.
"""

from __future__ import annotations

import re
from pathlib import Path

from devswarm.git.plumbing import git_bytes

_SHA_RE = re.compile(rb"[0-9a-f]{40}(?:[0-9a-f]{24})?")
_AUTHOR_RE = re.compile(rb"(.*) <(.*)> (\d+ [+-]\d{4})")
# Words in a .gitattributes that can change how a file merges (a macro defined with `[attr]`
# still spells what it sets). Deliberately broad: a false alarm only costs a rebase.
_MERGE_WORDS = (b"merge", b"binary")


def replay(
    clone: Path, tip: str, mb: str, head: str, tip_tree: str | None
) -> tuple[str, str] | None:
    """`head` (one plain commit on `mb`) put on `tip`: (the new commit, its tree), or (tip, its
    tree) if it changes nothing there. None when it is not one plain commit on `mb` (a merge, a
    signed commit, another encoding), does not merge cleanly, or attributes may change the
    merge: the rebase then lands it or reports the conflict. `tip_tree`: the tip's tree if the
    caller knows it (the last replay's), saving a lookup."""
    merged = git_bytes(
        clone, "merge-tree", "--write-tree", "--messages", "-z", tip, head, check=False
    )
    parsed = _merge_result(merged.stdout) if merged.returncode == 0 else None  # 1: conflicts
    if parsed is None:
        return None
    tree, merged_paths = parsed
    names = [head] + ([] if tip_tree else [f"{tip}^{{tree}}"])
    attributes = sorted(
        {f"{side}:{f}" for p in merged_paths for f in _attribute_files(p) for side in (tip, head)}
    )
    if any("\n" in name for name in attributes):
        return None  # cat-file reads one name a line
    objects = _cat_batch(clone, names + attributes)
    if objects is None or objects[0] is None:
        return None
    if tip_tree is None:
        tip_tree = objects[1][0] if objects[1] else None
    if tip_tree is None or any(
        o is not None and o[1] == "blob" and any(w in o[2] for w in _MERGE_WORDS)
        for o in objects[len(names) :]
    ):
        return None
    commit = _plain_commit(objects[0][2], mb)
    if commit is None:
        return None
    if tree == tip_tree:
        return tip, tree
    (name, email, date), message = commit
    env = {"GIT_AUTHOR_NAME": name, "GIT_AUTHOR_EMAIL": email, "GIT_AUTHOR_DATE": f"@{date}"}
    new = git_bytes(clone, "commit-tree", tree, "-p", tip, "-F", "-", input=message, env=env)
    return new.stdout.decode().strip(), tree


def _merge_result(out: bytes) -> tuple[str, list[str]] | None:
    """(tree, paths merge-tree's messages name) from `merge-tree --write-tree --messages -z`
    of a clean merge: `<tree> NUL`, then `NUL` and messages, each `<n> NUL <path>... NUL <type>
    NUL <text> NUL`. None if it reads otherwise."""
    parts = out.split(b"\0")
    if not _SHA_RE.fullmatch(parts[0]):
        return None
    paths: list[str] = []
    i = 2 if len(parts) > 2 and parts[1] == b"" else 1
    try:
        while i < len(parts) and parts[i] != b"":
            n = int(parts[i])
            paths += [p.decode("utf-8", "surrogateescape") for p in parts[i + 1 : i + 1 + n]]
            i += n + 3
    except ValueError:
        return None
    return parts[0].decode(), paths


def _attribute_files(path: str) -> list[str]:
    """The `.gitattributes` files that can apply to `path`: one in each of its folders."""
    folders = path.split("/")[:-1]
    return [".gitattributes"] + [
        "/".join(folders[: i + 1]) + "/.gitattributes" for i in range(len(folders))
    ]


def _cat_batch(clone: Path, names: list[str]) -> list[tuple[str, str, bytes] | None] | None:
    """(id, type, content) of each named object, None for one that is missing; None if git's
    answer reads otherwise."""
    query = "".join(f"{n}\n" for n in names).encode("utf-8", "surrogateescape")
    out = git_bytes(clone, "cat-file", "--batch", input=query, check=False)
    if out.returncode != 0:
        return None
    data, pos = out.stdout, 0
    found: list[tuple[str, str, bytes] | None] = []
    for _ in names:
        end = data.find(b"\n", pos)
        if end < 0:
            return None
        header, pos = data[pos:end].split(b" "), end + 1
        if len(header) != 3 or not _SHA_RE.fullmatch(header[0]):
            found.append(None)  # "<name> missing" (or ambiguous)
            continue
        size = int(header[2])
        found.append((header[0].decode(), header[1].decode(), data[pos : pos + size]))
        pos += size + 1
    return found


def _plain_commit(raw: bytes, parent: str) -> tuple[tuple[str, str, str], bytes] | None:
    """((author name, email, date), message) of a commit with one parent, `parent`, and no
    other header (no signature, no encoding); None otherwise."""
    header, sep, message = raw.partition(b"\n\n")
    fields = [line.split(b" ", 1) for line in header.split(b"\n")]
    if not sep or [f[0] for f in fields] != [b"tree", b"parent", b"author", b"committer"]:
        return None
    if fields[1][1].decode() != parent or not (author := _AUTHOR_RE.fullmatch(fields[2][1])):
        return None
    name, email, date = (g.decode("utf-8", "surrogateescape") for g in author.groups())
    return (name, email, date), message
