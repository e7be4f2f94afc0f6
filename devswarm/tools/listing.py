"""The files under a root as the tools see them: git's view, remembered between tools.

In a git work tree that is tracked and untracked files, ignored ones left out; elsewhere a walk
that skips `.git`. Agents list and search again and again between edits, and each
`git ls-files` costs a process, so the whole root's list is kept until `forget()`.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping
from pathlib import Path

from devswarm.git.plumbing import ISOLATED_ENV, git_argv
from devswarm.tools.paths import relative

MAX_REMEMBERED = 5_000  # paths of git's file list kept between tools (× agents at once)


def read_only_git(env: Mapping[str, str], *args: str) -> tuple[list[str], dict[str, str]]:
    """argv and environment for one of the toolbox's own read-only git commands: they run
    outside the sandbox, on files an agent wrote, so with devswarm's safe settings and no
    user config, as every git command devswarm runs in a worktree (devswarm/git/plumbing.py)."""
    git_env = {
        **env,
        **ISOLATED_ENV,
        "GIT_OPTIONAL_LOCKS": "0",  # never take the index lock an agent's command may need
        "GIT_LITERAL_PATHSPECS": "1",  # a path like app/[id]/page.tsx is not a glob
    }
    return git_argv(args), git_env


class Listing:
    """The files under one root (its real path), listed with git run in `env`."""

    def __init__(self, real_root: str, env: Mapping[str, str]) -> None:
        self.real_root = real_root
        self.env = env
        self._files: list[str] | None = None  # git's view of the whole root, see files_under
        self._too_long = False

    def forget(self) -> None:
        """Drop the remembered list: something may have changed the files."""
        self._files = None

    def files_under(self, target: Path) -> list[str]:
        """Files under `target` (relative to root, sorted): git's view (tracked + untracked,
        ignored ones left out) in a git work tree, else a walk that skips .git.

        git's view of the whole root is kept until a writing tool runs or `forget()` (agents
        list and search again and again between edits; each `git ls-files` costs a process),
        unless it is longer than MAX_REMEMBERED paths."""
        rel = relative(self.real_root, target)
        files = self._files if self._files is not None else self._git_files(rel)
        if files is not None:
            if rel == ".":
                return files
            prefix = rel + "/"
            return [f for f in files if f == rel or f.startswith(prefix)]
        if target.is_file() or target.is_symlink():
            return [rel]
        found = []
        for dirpath, dirnames, filenames in os.walk(target):
            dirnames[:] = [d for d in dirnames if d.casefold() != ".git"]
            # os.walk doesn't follow a symlinked folder; like git, list the link itself
            links = [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]
            found += [
                relative(self.real_root, os.path.join(dirpath, f)) for f in (*filenames, *links)
            ]
        return sorted(found)

    def _git_files(self, rel: str) -> list[str] | None:
        """git's view of the files under `rel`, sorted, or None outside a git work tree. The
        whole root's is remembered (see files_under)."""
        argv, env = read_only_git(
            self.env, "ls-files", "-z", "--cached", "--others", "--exclude-standard"
        )
        whole = rel == "." or not self._too_long
        if not whole:
            argv += ["--", rel]  # the whole list was too long to keep: ask for the folder
        proc = subprocess.run(
            argv, cwd=self.real_root, env=env, stdin=subprocess.DEVNULL, capture_output=True
        )
        if proc.returncode != 0:
            return None
        names = {n for n in proc.stdout.decode("utf-8", "surrogateescape").split("\0") if n}
        files = []
        for name in names:
            full = os.path.join(self.real_root, name)
            # --cached lists files deleted from the work tree; --others lists nested repos
            if os.path.islink(full) or os.path.isfile(full):
                files.append(name)
        files.sort()
        if whole:
            self._too_long = len(files) > MAX_REMEMBERED
            if not self._too_long:
                self._files = files
        return files
