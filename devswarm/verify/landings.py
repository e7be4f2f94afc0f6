"""The landings on the branch as the verifier sees them: from git, grouped per landing.

A landing is one commit (the lane's replay) or several (a rebase of a worker's commits); its
commits are consecutive on the branch and carry the same trailers. The verifier bisects over
landings, not commits: a landing is what was a tip, and what a revert undoes.
"""

from __future__ import annotations

from dataclasses import dataclass

from devswarm.git.workspace import Workspace


@dataclass(frozen=True)
class Landing:
    """One landing on the branch: its first and last commit and its trailers."""

    first: str
    last: str  # the commit that was the tip after it landed
    subject: str
    run: str | None
    task: str | None
    agent: str | None
    revert: str | None  # the commit it reverts, when it is the verifier's revert


def landings_since(workspace: Workspace, green: str, tip: str) -> list[Landing]:
    """The landings in green..tip, oldest first."""
    out: list[Landing] = []
    for row in workspace.landed_trailers(f"{green}..{tip}"):
        prev = out[-1] if out else None
        same = (
            prev is not None
            and row["task"] is not None
            and not row["revert"]
            and not prev.revert
            and (prev.run, prev.task, prev.agent) == (row["run"], row["task"], row["agent"])
        )
        if same and prev is not None:
            out[-1] = Landing(
                prev.first, row["commit"], prev.subject, prev.run, prev.task, prev.agent, None
            )
        else:
            out.append(
                Landing(
                    row["commit"],
                    row["commit"],
                    row["subject"] or "",
                    row["run"],
                    row["task"],
                    row["agent"],
                    row["revert"],
                )
            )
    return out


def net_landed(rows: list[dict]) -> set[str]:
    """Task keys whose latest landing in `rows` (landed_trailers, oldest first) stands: a
    revert by the verifier takes its task off until the task lands again."""
    landed: set[str] = set()
    for row in rows:
        if not row.get("task"):
            continue
        if row.get("revert"):
            landed.discard(row["task"])
        else:
            landed.add(row["task"])
    return landed
