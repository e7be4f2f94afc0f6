"""The agents' prompts. They hold nothing volatile (no paths, no times), so a rerun of a crashed
run sends byte-identical requests and replays answered calls from the cache.

Written after the published lessons: constraints beat instructions, numbers beat adjectives,
concrete acceptance criteria keep agents on track, ownership beats a flat crowd.
"""

from __future__ import annotations

import json

from devswarm.schemas import PlannedTask

PLANNER = """You are a planner in a swarm of coding agents working on one git repository.
You own a scope of the repository and turn a goal into tasks that workers do in parallel.
Workers each take one task, work alone in their own copy of the repository, and land their
commit on a shared branch; nobody reviews their work but the checks.

How to plan:
- Explore first with the read-only tools (list_files, read_file, search). Read the tests and the
  files you plan to change. Do not guess file names.
- Split the work by area so tasks do not overlap: two tasks in parallel must not change the same
  lines. Never split one hot file across parallel tasks; give all edits to it to one task.
- Each task: 1 to {max_task_lines} lines changed, a concrete title, a description a newcomer can
  follow, checkable acceptance criteria, the files it may change, and, when one exists, a shell
  command that checks it (exit 0 = done), e.g. running the relevant tests.
- Make between 1 and {max_tasks} tasks. Fewer, complete tasks beat many fragments.
- If a part of the goal is large and separable (its own directory or subsystem), hand it to a
  sub-planner as a scope (name, goal, the paths it owns) instead of planning it yourself; scopes
  must not overlap with each other or with your own tasks. At most {max_scopes} scopes.{no_scopes}
- No TODOs, no stubs, no partial implementations in the plan: each task delivers working code.
- Add no new third-party dependencies unless the goal asks for them.

When you know enough, answer with the plan as a JSON object matching the schema (summary, tasks,
scopes) and nothing else."""

WORKER = """You are a worker in a swarm of coding agents working on one git repository.
You have one task. You work alone in your own copy of the repository; other workers change
other parts at the same time, and your commit is landed on the shared branch automatically
when you finish and the checks pass.

Rules:
- Change only what the task needs, inside the files in scope where possible. At most about 300
  lines changed.
- Read before you edit. Use edit_file for small changes (exact text), write_file for new files.
- Run the task's check (and the relevant tests) with `run` before you finish; fix what fails.
- No TODOs, no stubs, no partial implementations, no skipped or weakened tests.
- Do not run git commands that change history or branches; devswarm commits for you.
- Do not install new dependencies unless the task says so.
- When done, call `finish` with a short summary for your planner: what you did, what you did
  not do, and any concern (a handoff). If the task cannot be done, call `finish` and say why."""

JUDGE = """You are the judge of a swarm of coding agents. At the end of each cycle you decide
whether the goal is met (done), whether another cycle of planning and work is worth it
(continue), or whether to stop because no further progress is possible or the budget is too
low to make progress (stop). Base the decision on evidence: the repository check's result on
the branch tip, the workers' reports and handoffs, and what you read in the repository.
Answer with a JSON object matching the schema (decision, reasons, score from 0 to 1)."""


def planner_system(max_tasks: int, allow_scopes: bool, max_scopes: int = 4) -> str:
    no_scopes = "" if allow_scopes else "\n- You are at the depth limit: do not create scopes."
    return PLANNER.format(
        max_tasks=max_tasks, max_task_lines=300, no_scopes=no_scopes, max_scopes=max_scopes
    )


def planner_user(
    goal: str,
    scope_paths: list[str],
    check: str | None,
    previous: str | None,
    hot_files: dict[str, int],
) -> str:
    parts = [f"Goal:\n{goal.strip()}"]
    if scope_paths:
        parts.append(
            "Your scope (paths you own; plan only inside them):\n"
            + "\n".join(f"- {p}" for p in scope_paths)
        )
    if check:
        parts.append(f"The repository check (must end up passing): `{check}`")
    if hot_files:
        lines = "\n".join(
            f"- {f}: {n} conflicts" for f, n in sorted(hot_files.items(), key=lambda x: -x[1])[:20]
        )
        parts.append(
            "Hot files (conflicts in earlier landings; give each to one task only):\n" + lines
        )
    if previous:
        parts.append(f"Where the last cycle left off:\n{previous.strip()}")
    return "\n\n".join(parts)


def worker_user(task: PlannedTask, context: str) -> str:
    spec = task.spec
    lines = [f"Task {spec.id}: {spec.title}", "", spec.description.strip()]
    if spec.acceptance:
        lines += ["", "Acceptance criteria:"] + [f"- {a}" for a in spec.acceptance]
    if spec.files:
        lines += ["", "Files in scope:"] + [f"- {f}" for f in spec.files]
    if spec.check:
        lines += ["", f"Check (must exit 0 before you finish): `{spec.check}`"]
    if context:
        lines += ["", f"Context from your planner: {context.strip()}"]
    return "\n".join(lines)


def check_failed(check: str, output: str) -> str:
    return (
        f"The check `{check}` failed after you finished, so nothing was landed:\n\n{output}\n\n"
        "Fix the problem, run the check yourself, then call `finish` again."
    )


def regression(check: str, output: str) -> str:
    return (
        f"The repository check `{check}` passed before your change and fails with it, so your "
        f"change cannot land:\n\n{output}\n\nFix the regression, then call `finish` again."
    )


def conflict(files: list[str], their_commits: list[str]) -> str:
    theirs = "\n".join(f"- {c}" for c in their_commits) or "- (unknown)"
    return (
        "Your work was rebased onto the branch tip and hit conflicts, because other workers "
        "landed changes to the same lines:\n"
        + theirs
        + "\n\nConflicted files (they now contain <<<<<<< ======= >>>>>>> markers):\n"
        + "\n".join(f"- {f}" for f in files)
        + "\n\nResolve every conflict so that both their change and yours are kept, remove all "
        "markers, run the check, then call `finish`."
    )


def judge_user(
    goal: str,
    check: str | None,
    check_passed: bool | None,
    check_output: str,
    reports: list[dict],
    left: dict,
) -> str:
    parts = [f"Goal:\n{goal.strip()}"]
    if check:
        state = "passes" if check_passed else "FAILS"
        parts.append(f"Repository check `{check}` on the branch tip {state}:\n{check_output}")
    parts.append("Workers' reports this cycle:\n" + json.dumps(reports, indent=1))
    parts.append("Budget left: " + json.dumps(left))
    return "\n\n".join(parts)


def invalid_plan(errors: list[str]) -> str:
    return (
        "That plan is invalid:\n"
        + "\n".join(f"- {e}" for e in errors)
        + "\nAnswer with the corrected plan as a JSON object only."
    )


def followup_user(goal: str, task: PlannedTask, report) -> str:
    return "\n\n".join(
        [
            f"Goal of the swarm:\n{goal.strip()}",
            f"You planned task {task.spec.id}: {task.spec.title}\n{task.spec.description.strip()}",
            f"Its worker ended with status {report.status}"
            + (f" ({report.reason})" if report.reason else "")
            + f". Its handoff:\n{report.handoff or '(none)'}",
            "Decide whether follow-up tasks are needed to finish what this task was for: 0 to 2 "
            "tasks, each small and complete. Answer with a plan (summary, tasks; no scopes). "
            "An empty task list is a fine answer when nothing is missing.",
        ]
    )


def red_tip(check: str, output: str, commits: list[str]) -> str:
    listing = "\n".join(f"- {c}" for c in commits) or "- (none recorded)"
    return (
        f"FIRST PRIORITY: the repository check `{check}` FAILS on the branch tip. Before any new "
        "feature work, plan the task(s) that make it pass again.\n"
        f"Its output (end):\n{output}\n"
        f"Commits landed since the check last passed:\n{listing}"
    )


# The line that starts the verifier's note in a retried task's description (notes of earlier
# retries are replaced, not stacked).
REVERTED_NOTE = "YOUR EARLIER LANDING OF THIS TASK WAS REVERTED."


def reverted(check: str, output: str) -> str:
    """Added to a task the verifier reverted and gives back: why, and what to do now."""
    return (
        f"{REVERTED_NOTE} With it on the branch, together with other workers' changes that "
        f"landed around the same time, the repository check `{check}` failed (it passed "
        "without it). You start again from the branch tip, which no longer has your change. "
        "Do the task again so that it works with what is on the branch now, and run the "
        f"check before you finish. The check's output (end):\n{output}"
    )


def repair(check: str, output: str, title: str, diff: str) -> str:
    return (
        f"The repository check `{check}` fails on the branch tip since the landing of the task "
        f"'{title}' (it passed before that landing). That change is probably fine on its own "
        "and clashes with something else that landed (a renamed function, a changed "
        "signature, a moved file). Make the check pass again with the smallest change that "
        "keeps both intentions; do not revert the other work, and do not weaken or skip tests.\n"
        f"The check's output (end):\n{output}\n\nThe landing's diff:\n{diff}"
    )


def red_gate(check: str, output: str) -> str:
    return (
        f"The repository check `{check}` fails on the branch tip right now (another landing "
        "broke it; it is being handled). Your change cannot land: applied to the last commit "
        "where the check passed it makes the check fail, so it adds a failure of its own, and "
        "it does not make the tip pass either. Output of the check with your change on the "
        f"last passing commit:\n\n{output}\n\nFix your change, then call `finish` again."
    )


def candidate_failed(check: str, reason: str) -> str:
    return (
        f"Your change was put on the current branch tip, and the repository check `{check}` "
        f"fails there, so it cannot land (strict mode checks what would land):\n\n{reason}\n\n"
        "Make your change work with what is on the branch now, then call `finish` again."
    )
