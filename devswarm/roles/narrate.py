"""What the roles tell the run's log (run/story.py) beyond their tool steps: the plan a planner
returned, a worker's start, checks, landings and end, the judge's check and verdict. One line
each (a failed check adds the tail of its output); the landing's conflicts are also an event.
"""

from __future__ import annotations

from devswarm.git.landing import LandResult
from devswarm.run.run import Run
from devswarm.schemas import CheckResult, Plan, PlannedTask, Verdict, WorkerReport

_TAIL_LINES = 15


def planned(run: Run, agent_id: str, plan_path: str, plan: Plan, tasks: list[PlannedTask]) -> None:
    """The plan of `plan_path`: its summary, then each task and each scope on its own line."""
    tell = run.story.tell
    tell(
        "planner",
        agent_id,
        f"plan of {plan_path}: {len(tasks)} task(s), {len(plan.scopes)} scope(s): {plan.summary}",
    )
    for t in tasks:
        after = f"; after {', '.join(t.depends_on)}" if t.depends_on else ""
        tell("planner", agent_id, f"task {t.key}: {t.spec.title} [{_files(t.spec.files)}]{after}")
    for s in plan.scopes:
        tell("planner", agent_id, f"scope {plan_path}.{s.name}: {s.goal} [{_files(s.paths)}]")


def worker_started(run: Run, agent_id: str, task: PlannedTask, attempt: int) -> None:
    again = f", attempt {attempt}" if attempt > 1 else ""
    run.story.tell(
        "worker",
        agent_id,
        f"worker on {task.key}{again}: {task.spec.title} (base {task.base_commit[:10]}, "
        f"files {_files(task.spec.files)})",
    )


def check(run: Run, role: str, agent_id: str, what: str, result: CheckResult | None) -> None:
    """A check's result; the tail of its output when it failed."""
    if result is None:
        run.story.tell(role, agent_id, f"{what}: none configured")
        return
    if result.passed:
        run.story.tell(role, agent_id, f"{what} `{result.command}`: passes")
        return
    tail = "\n".join(result.output.rstrip().splitlines()[-_TAIL_LINES:]) or "(no output)"
    run.story.tell(
        role,
        agent_id,
        f"{what} `{result.command}`: fails (exit code {result.exit_code}); its last lines:\n{tail}",
        width=2_000,
    )


def landing(run: Run, task: PlannedTask, agent_id: str, result: LandResult, turn: int) -> None:
    """How the landing went: how the commit reached the tip and the new tip, or the conflict
    (also the event task.conflicted) and whether it goes back to the agent."""
    retries = f", {result.cas_retries} compare-and-swap retries" if result.cas_retries else ""
    if result.status == "landed":
        how = result.how or result.reason or "landed"
        old = (result.old_tip or "")[:10]
        run.story.tell(
            "worker",
            agent_id,
            f"landed {task.key}: {how} onto {old}, new tip {(result.new_tip or '')[:10]}{retries}"
            + ("" if result.published else ", not published to the user's repository"),
        )
    elif result.status == "conflict":
        turns = run.config.conflict_turns
        next_step = (
            f"back to the agent (turn {turn + 1} of {turns})" if turn < turns else "abandoned"
        )
        run.story.tell(
            "worker",
            agent_id,
            f"conflict landing {task.key} onto {(result.old_tip or '')[:10]} in "
            f"{_files(result.conflict_files)}{retries}; {next_step}",
        )
        run.progress.notify(
            "task.conflicted",
            task=task.key,
            agent=agent_id,
            files=result.conflict_files,
            their_commits=result.their_commits,
            turn=turn + 1,
        )
    else:
        run.story.tell("worker", agent_id, f"landing {result.status}: {result.reason}{retries}")


def worker_ended(run: Run, report: WorkerReport) -> None:
    reason = f": {report.reason}" if report.reason else ""
    commit = f" as {report.commit[:10]}" if report.commit else ""
    run.story.tell(
        "worker",
        report.agent_id,
        f"ended {report.status}{commit}{reason} ({report.input_tokens + report.output_tokens:,} "
        f"tokens, ${report.cost_usd:.4f})",
    )


def verdict(run: Run, agent_id: str, cycle: int, verdict: Verdict) -> None:
    run.story.tell(
        "judge",
        agent_id,
        f"verdict of cycle {cycle}: {verdict.decision} (score {verdict.score:.2f}): "
        f"{verdict.reasons}",
        width=1_000,
    )


def _files(files: list[str], most: int = 6) -> str:
    shown = ", ".join(files[:most])
    return shown + (f" and {len(files) - most} more" if len(files) > most else "") or "any"
