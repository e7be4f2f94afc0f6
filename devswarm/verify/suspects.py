"""The landings a red tip may be blamed on, and the commits that stand for them in a bisection.

Between the last green tip and a red tip there may be a culprit the verifier already reverted
(its revert is in the range too) and, behind it, a second break that the first one hid: every
tip between the culprit and its revert is red because of the culprit. So a landing is judged
with the culprits before it undone that were still on the branch at that point: its probe is
its commit with those reverts replayed on top (plain git objects, no worktree). Reverted
landings are no suspects themselves; a revert is (undoing a landing may break what used it).
"""

from __future__ import annotations

from pathlib import Path

from devswarm.git.changes import Merged, revert_change
from devswarm.verify.landings import Landing


class Suspects:
    """The suspects of a range of landings (oldest first) and the commit to check for each."""

    def __init__(self, clone: Path, units: list[Landing]) -> None:
        self.clone, self.units = clone, units
        revert_at = {u.revert: i for i, u in enumerate(units) if u.revert}
        self.reverted = {i: revert_at[u.last] for i, u in enumerate(units) if u.last in revert_at}
        self.indices = [i for i in range(len(units)) if i not in self.reverted]
        self._probes: dict[int, str] = {}

    def shadowed(self, i: int) -> bool:
        """Whether landing i was a tip while an earlier culprit of the range was still on the
        branch (between the culprit and its revert): a red tip, whatever its own change."""
        return any(j < i < at for j, at in self.reverted.items())

    def __len__(self) -> int:
        return len(self.indices)

    def landing(self, k: int) -> Landing:
        """The k-th suspect."""
        return self.units[self.indices[k]]

    def probed(self) -> list[str]:
        """The probe commits made so far (the ones a bisection checked)."""
        return list(self._probes.values())

    def probe(self, k: int) -> str:
        """The commit that stands for the k-th suspect: its own, with the reverts of earlier
        culprits still on the branch there replayed on top (its own commit if one conflicts)."""
        i = self.indices[k]
        if i not in self._probes:
            commit = self.units[i].last
            for j, at in sorted(self.reverted.items()):
                if j < i < at:
                    culprit = self.units[j]
                    made = revert_change(
                        self.clone, culprit.first, culprit.last, commit, f"probe: undo {j}"
                    )
                    if isinstance(made, Merged):
                        commit = self.units[i].last
                        break
                    commit = made
            self._probes[i] = commit
        return self._probes[i]
