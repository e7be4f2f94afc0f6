"""The landing lane: a worker's commits onto the branch's tip, then a compare-and-swap.

Landing is mechanical: read the tip, put the worker's commits onto it (one commit is replayed
with merge-tree + commit-tree, leaving the worktree alone: replay.py; several, a conflict, or
merge attributes on a file both sides changed go through `git rebase`), compare-and-swap the
branch with `git update-ref <ref> <new> <old>`. Inside one process a lane (a lock per clone
and branch) does this serially so workers don't thrash; the compare-and-swap still guards
against other processes. Every step here is plain git: the number of git processes per
landing is what the lane's throughput is measured in.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

from pydantic import BaseModel

from devswarm.errors import UserError
from devswarm.git.changes import Merged, revert_change
from devswarm.git.conflict import in_conflict, unmerged_paths
from devswarm.git.plumbing import GitError, first_line, git
from devswarm.git.refs import worktree_head
from devswarm.git.replay import replay
from devswarm.git.trailers import message_with_trailers
from devswarm.records import now

MAX_CAS_RETRIES = 50


class LandResult(BaseModel):
    """What happened to one landing attempt."""

    status: Literal["landed", "conflict", "refused", "error"]
    commit: str | None = None  # the commit that became the tip (None: nothing new landed)
    old_tip: str | None = None
    new_tip: str | None = None
    cas_retries: int = 0
    conflict_files: list[str] = []
    their_commits: list[str] = []  # "<short sha> <subject>" of tip-side commits touching them
    how: Literal["fast-forward", "replayed", "rebased"] | None = None  # how it reached the tip
    reason: str | None = None
    # Landed in the clone; did the user's refs/heads/<branch> reach new_tip? True; False with
    # publish_error ("landed in the clone, not published": the next run or resume publishes
    # it first); None where this workspace does not publish (a worker process in remote mode,
    # or nothing landed).
    published: bool | None = None
    publish_error: str | None = None
    wait_ms: float = 0.0  # time spent waiting for the landing lane
    duration_ms: float = 0.0
    landed_at: str | None = None  # when the branch moved (inside the lane: in branch order)


class Lander(Protocol):
    """What lands a worker's worktree: the workspace's lane, or the verifier's merge queue."""

    def land(self, worktree: Path) -> LandResult: ...


class LandingLane:
    """The landing methods of a workspace: land() and the steps it takes inside the lane."""

    clone: Path
    ref: str
    _lane: AbstractContextManager[object]
    _publishes: bool
    _replayed = ("", "")  # (the last commit _replay made, its tree): a fact, never stale

    if TYPE_CHECKING:

        def tip(self) -> str: ...

        def publish(self) -> None: ...

        def _task_landed(self, head: str, tip: str) -> str | None: ...

        def _note_landing(self, head: str, old_tip: str, new_tip: str) -> None: ...

    def land(
        self, worktree: Path, *, gate: Callable[[str], str | None] | None = None
    ) -> LandResult:
        """Put the worktree's commits on the branch: onto the tip, compare-and-swap, publish.

        `gate(candidate_sha)` runs just before the swap; a string refuses the landing. A worktree
        whose HEAD or changes are already on the branch is reported as landed (so a retried
        landing is safe).
        """
        worktree = Path(worktree)
        return self._through_lane(lambda: self._land_in_lane(worktree, gate))

    def land_made(self, make: Callable[[str], str | LandResult]) -> LandResult:
        """Land a commit made from the tip inside the lane: `make(tip)` returns a commit whose
        parent is `tip` (a revert, a candidate the merge queue checked), or a LandResult that
        refuses; then compare-and-swap and publish as land() does. `make` must be quick (plain
        git objects, milliseconds): the lane is held while it runs."""
        return self._through_lane(lambda: self._made_in_lane(make))

    def _through_lane(self, body: Callable[[], LandResult]) -> LandResult:
        """`body` inside the lane, timed; then publish what landed."""
        start = time.perf_counter()
        with self._lane:
            waited = time.perf_counter() - start
            try:
                result = body()
            except GitError as exc:  # e.g. the worktree is gone; the branch was not touched
                result = LandResult(status="error", reason=str(exc))
        result.wait_ms = waited * 1000
        if result.status == "landed" and self._publishes:
            try:
                self.publish()
                result.published = True
            except UserError as exc:
                result.published, result.publish_error = False, str(exc)
                result.reason = str(exc)
        result.duration_ms = (time.perf_counter() - start) * 1000
        return result

    def _made_in_lane(self, make: Callable[[str], str | LandResult]) -> LandResult:
        result = LandResult(status="error", reason="not attempted")
        for retries in range(MAX_CAS_RETRIES + 1):
            tip = self.tip()
            made = make(tip)
            if isinstance(made, LandResult):
                return made
            failure = self._swap(made, tip)
            if failure is None:
                return LandResult(
                    status="landed",
                    commit=made,
                    old_tip=tip,
                    new_tip=made,
                    cas_retries=retries,
                    landed_at=now(),
                )
            result = LandResult(status="error", cas_retries=retries, reason=first_line(failure))
        return result

    def revert(self, first: str, last: str, message: str, trailers: dict[str, str]) -> LandResult:
        """Land, through the lane, a commit on the tip that undoes the commits `first..last`
        (first included): status "conflict" with the files when later landings changed the
        same lines (nothing lands then)."""
        text = message_with_trailers(message, trailers)

        def make(tip: str) -> str | LandResult:
            made = revert_change(self.clone, first, last, tip, text)
            if isinstance(made, Merged):
                return LandResult(
                    status="conflict",
                    commit=last,
                    old_tip=tip,
                    conflict_files=made.conflicts,
                    reason=f"the revert of {last[:12]} conflicts in {', '.join(made.conflicts)}",
                )
            return made

        return self.land_made(make)

    def _land_in_lane(self, wt: Path, gate: Callable[[str], str | None] | None) -> LandResult:
        if in_conflict(wt):
            return LandResult(
                status="error", reason="a conflict turn is open: continue_conflict() or abort first"
            )
        retries = 0
        last_err = ""
        for _ in range(MAX_CAS_RETRIES + 1):
            tip, head = self._read_tips(wt)
            if landed := self._task_landed(head, tip):  # a worker run again after a crash
                return _unmoved(landed, tip, retries, "the task is already on the branch")
            mb = git(wt, "merge-base", head, tip, check=False).stdout.strip()
            if mb == head:  # nothing new, or landed by an earlier attempt
                return _unmoved(head, tip, retries, "already on the branch")
            if mb == tip:
                candidate, how = head, "fast-forward"
            elif replayed := self._replay(tip, mb, head):
                candidate, how = replayed, "replayed"
            else:
                failed = self._rebase_for_landing(wt, tip, mb, head)
                if failed is not None:
                    failed.cas_retries = retries
                    return failed
                candidate, how = worktree_head(wt), "rebased"
            if candidate == tip:  # every change was already on the branch
                return _unmoved(None, tip, retries, "the changes were already on the branch")
            if gate is not None:
                refusal = gate(candidate)
                if refusal is not None:
                    return LandResult(
                        status="refused",
                        commit=candidate,
                        old_tip=tip,
                        cas_retries=retries,
                        reason=refusal,
                    )
            failure = self._swap(candidate, tip)
            if failure is None:
                self._note_landing(head, tip, candidate)
                return LandResult(
                    status="landed",
                    commit=candidate,
                    old_tip=tip,
                    new_tip=candidate,
                    cas_retries=retries,
                    how=how,
                    landed_at=now(),
                )
            # Another process moved the branch (or holds its lock): read the tip again.
            retries += 1
            last_err = failure
            time.sleep(random.uniform(0, 0.002 * min(retries, 10)))
        return LandResult(
            status="error",
            cas_retries=retries,
            reason=f"gave up after {retries} compare-and-swap retries: {first_line(last_err)}",
        )

    def _read_tips(self, wt: Path) -> tuple[str, str]:
        """(the branch's tip, the worktree's HEAD). A stale tip only makes the swap fail."""
        return self.tip(), worktree_head(wt)

    def _swap(self, candidate: str, tip: str) -> str | None:
        """Compare-and-swap the branch from `tip` to `candidate`; None, or why it lost the race."""
        cas = git(
            self.clone, "update-ref", "-m", "devswarm: land", self.ref, candidate, tip, check=False
        )
        return None if cas.returncode == 0 else cas.stderr

    def _replay(self, tip: str, mb: str, head: str) -> str | None:
        """The worker's one commit replayed onto `tip` without touching its worktree
        (replay.py), or None: the rebase decides."""
        known_tip, known_tree = self._replayed
        done = replay(self.clone, tip, mb, head, known_tree if known_tip == tip else None)
        if done is None:
            return None
        self._replayed = done  # most landings go onto the one before: its tree is known
        return done[0]

    def _rebase_for_landing(self, wt: Path, tip: str, mb: str, head: str) -> LandResult | None:
        """Rebase the worktree onto `tip` (what _replay cannot do); None when it went through,
        else the error or the conflict (the rebase aborted, the files and their commits)."""
        proc = git(wt, "rebase", "--quiet", tip, check=False)
        if proc.returncode == 0:
            return None
        if not in_conflict(wt):
            return LandResult(
                status="error", commit=head, old_tip=tip, reason=first_line(proc.stderr)
            )
        files = unmerged_paths(wt)
        git(wt, "rebase", "--abort", check=False)
        if not files:
            return LandResult(
                status="error", commit=head, old_tip=tip, reason=first_line(proc.stderr)
            )
        log = git(wt, "log", "--format=%h %s", "-n", "20", f"{mb}..{tip}", "--", *files).stdout
        return LandResult(
            status="conflict",
            commit=head,
            old_tip=tip,
            conflict_files=files,
            their_commits=[line for line in log.splitlines() if line],
            reason=f"rebase onto {tip[:12]} conflicts in {', '.join(files)}",
        )


def _unmoved(commit: str | None, tip: str, retries: int, reason: str) -> LandResult:
    """Landed, with nothing new for the branch: it stays at `tip`."""
    return LandResult(
        status="landed", commit=commit, old_tip=tip, new_tip=tip, cas_retries=retries, reason=reason
    )
