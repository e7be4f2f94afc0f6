"""The repository check a worker's change must pass before it goes to the landing lane.

The usual case: the check passes with the change in the worker's worktree, and the verifier
checks what actually lands. A change that turns a passing base red is a regression: refused.
While the tip is red (or the worker's base is), the gate compares against the last green tip
instead of switching off: the change is replayed there and may land if the check passes
there (it adds no new failure) or if, replayed on the red tip, it makes the tip pass (a fix).
Only a run that has never had a green tip (the suite is red until the work is done) has nothing
to compare against; its landings go through as before.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from devswarm.git.changes import Merged, merge_base, replay_change
from devswarm.git.refs import worktree_head
from devswarm.roles import prompts
from devswarm.schemas import CheckResult

if TYPE_CHECKING:
    from devswarm.run.run import Run


def repository_gate(run: Run, wt: Path) -> tuple[str, str] | None:
    """None when the worker's committed change may go to the lane; else (what to tell its
    agent, the report's reason)."""
    check = run.config.check
    if not check or run.merge_queue is not None:
        return None  # strict mode: the merge queue checks each candidate as it would land
    ws, checks = run.workspace, run.checks
    tip = ws.tip()
    head = worktree_head(wt)
    base = merge_base(ws.clone, head, tip)
    mine = checks.run(check, wt)  # the change on its base
    before = None if mine.passed else checks.at(base)
    if before is not None and before.passed:
        return (
            prompts.regression(check, mine.output),
            f"the change turns the passing check `{check}` red",
        )
    known = checks.known(tip)
    tip_red = (known is not None and not known.passed) or before is not None
    green = run.state.last_green
    if (mine.passed and not tip_red) or green is None:
        return None
    if mine.passed and base in (green, tip):
        return None  # it passes on the last green tip, or it makes the red tip pass
    on_green = _replayed_check(run, base, head, green)
    if on_green.passed:
        return None  # it adds no failure of its own
    if tip != base and _replayed_check(run, base, head, tip).passed:
        return None  # it makes the red tip pass: a fix
    return (
        prompts.red_gate(check, on_green.output),
        f"the tip is red and the change fails `{check}` on the last green tip {green[:10]}",
    )


def _replayed_check(run: Run, base: str, head: str, onto: str) -> CheckResult:
    """The repository check with the change base..head replayed on `onto` (cached per commit)."""
    made = replay_change(run.workspace.clone, base, head, onto)
    if isinstance(made, Merged):
        return CheckResult(
            command=run.config.check or "",
            passed=False,
            exit_code=None,
            output=f"the change does not apply there: conflicts in {', '.join(made.conflicts)}",
        )
    return run.checks.at(made) or CheckResult(command="", passed=True, exit_code=0, output="")
