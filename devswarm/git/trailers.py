"""Commit trailers: how git history joins DuckDB, and which tasks are already on the branch.

Every commit devswarm makes for a worker ends with `Devswarm-Run:`, `Devswarm-Task:` and
`Devswarm-Agent:` trailers (devswarm/ids.py). From them, landed_trailers() lists what landed
and landed_commit() tells whether a task is on the branch already, so a worker run again after
a crash never lands its task twice (the landing lane asks the same before every landing).

landed_commit() keeps an index of the branch's (run, task) trailers: built once (two git
processes), extended with the commits that reached the branch since (one), and kept up to
date for free by this process's own landings, whose trailers commit() noted.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from devswarm.git.plumbing import git
from devswarm.ids import TRAILERS

_TRAILER_KEY_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")
_MAX_NOTED = 10_000  # commits made but not (yet) landed, remembered for the lane

TaskKey = tuple[str, str]  # (run id, task key)


def message_with_trailers(message: str, trailers: dict[str, str]) -> str:
    """The message, a blank line, and one `Key: value` line per trailer (values on one line)."""
    body = message.strip() or "devswarm task"
    lines = []
    for key, value in trailers.items():
        if not _TRAILER_KEY_RE.fullmatch(key):
            raise ValueError(f"invalid trailer key: {key!r}")
        lines.append(f"{key}: {' '.join(str(value).split())}")
    return f"{body}\n\n" + "\n".join(lines) + "\n" if lines else f"{body}\n"


def read_trailers(clone: Path, rev_range: str) -> list[dict[str, str | None]]:
    """Commits in `rev_range`, oldest first, with their devswarm trailers: {"commit",
    "subject", "run", "task", "agent", "revert"} (None when a trailer is absent)."""
    fields = ["%H", "%s"] + [f"%(trailers:key={k},valueonly,unfold)" for k in TRAILERS.values()]
    fmt = "%x1f".join(fields) + "%x1e"
    out = git(
        clone, "log", "--reverse", f"--format={fmt}", "--end-of-options", rev_range, "--"
    ).stdout
    rows = []
    for record in out.split("\x1e"):
        parts = record.strip("\n").split("\x1f")
        if len(parts) != 2 + len(TRAILERS):
            continue
        row: dict[str, str | None] = {"commit": parts[0], "subject": parts[1]}
        for key, value in zip(TRAILERS, parts[2:], strict=True):
            row[key] = value.strip().split("\n")[0] or None
        rows.append(row)
    return rows


class TaskIndex:
    """(run, task) → the commit that landed it, as of `tip`; and the commits this process made
    (their sha → (run, task)), so the lane can add its own landings without asking git."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.tip: str | None = None
        self.landed: dict[TaskKey, str] = {}
        self.made: dict[str, TaskKey] = {}


class LandedTasks:
    """The trailer methods of a workspace."""

    clone: Path
    ref: str
    base_commit: str
    _tasks: TaskIndex

    if TYPE_CHECKING:

        def tip(self) -> str: ...

    def landed_trailers(self, rev_range: str | None = None) -> list[dict]:
        """Commits in `rev_range` (default base..branch), oldest first, with their devswarm
        trailers: {"commit", "subject", "run", "task", "agent"} (None when a trailer is absent)."""
        return read_trailers(self.clone, rev_range or f"{self.base_commit}..{self.ref}")

    def landed_commit(self, run_id: str, task_key: str) -> str | None:
        """The commit on the branch that landed task `task_key` of run `run_id` (its
        Devswarm-Run and Devswarm-Task trailers), or None. Call it before starting or landing
        a task again: a worker run again after a crash must not land it twice."""
        return self._landed_on((run_id, task_key), self.tip())

    def landed_tasks(self, run_id: str) -> set[str]:
        """The keys of run `run_id`'s tasks on the branch now (landings from before a resume
        included: the index reads past the run's base)."""
        tip = self.tip()
        with self._tasks.lock:
            if self._tasks.tip != tip:
                self._read_index(tip)
            return {task for run, task in self._tasks.landed if run == run_id}

    def _note_commit(self, sha: str, trailers: dict[str, str]) -> None:
        """Remember the task of a commit this process made for a worker (commit())."""
        run, task = trailers.get(TRAILERS["run"]), trailers.get(TRAILERS["task"])
        if run and task:
            with self._tasks.lock:
                if len(self._tasks.made) >= _MAX_NOTED:
                    self._tasks.made.clear()  # only costs a `git log` later
                self._tasks.made[sha] = (run, task)

    def _task_landed(self, head: str, tip: str) -> str | None:
        """For the lane: the commit that already landed the task of the worktree's `head`
        (a commit commit() made), or None. No process while the index is up to date."""
        key = self._tasks.made.get(head)
        return None if key is None else self._landed_on(key, tip)

    def _note_landing(self, head: str, old_tip: str, new_tip: str) -> None:
        """For the lane, after it moved the branch from `old_tip` to `new_tip` with the
        worktree whose HEAD was `head`: keep the index up to date without asking git."""
        index = self._tasks
        with index.lock:
            key = index.made.pop(head, None)
            if key is not None and index.tip == old_tip:
                index.landed[key] = new_tip
                index.tip = new_tip

    def _landed_on(self, key: TaskKey, tip: str) -> str | None:
        index = self._tasks
        with index.lock:
            if index.tip != tip:
                self._read_index(tip)
            found = index.landed.get(key)
        if found is None or found == tip:
            return found
        # The branch only moves forward, but another process may have reset it: check.
        on_branch = git(self.clone, "merge-base", "--is-ancestor", found, tip, check=False)
        return found if on_branch.returncode == 0 else None

    def _read_index(self, tip: str) -> None:
        """Bring the index (locked by the caller) to `tip`: the new commits since its tip, or,
        the first time, the landings down to the first commit without a devswarm trailer (the
        user's; a resumed run's base is past its earlier landings, so not base..tip)."""
        index = self._tasks
        if index.tip is not None:
            since = index.tip
        else:
            since = git(
                self.clone,
                "rev-list",
                "--first-parent",
                "-n1",
                "--invert-grep",
                f"--grep=^{TRAILERS['run']}: ",
                tip,
                "--",
            ).stdout.strip()
        for row in read_trailers(self.clone, f"{since}..{tip}" if since else tip):
            if not (row["run"] and row["task"]):
                continue
            if row.get("revert"):  # the verifier undid the task's landing: it may land again
                index.landed.pop((row["run"], row["task"]), None)
            else:  # the first landing of a task, if it ever landed twice
                index.landed.setdefault((row["run"], row["task"]), str(row["commit"]))
        index.tip = tip
