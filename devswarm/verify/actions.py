"""What a confirmed culprit gets (devswarm.verify.culprits acts): the tasks the verifier gives
back to the cycle, and its revert's message.

Policy `revert` lands a revert commit through the lane and gives the task back to the cycle as
its next attempt, from the (green) tip, with the check's output in its description. Policy
`repair` leaves the landing and gives a repair task (the output and the culprit's diff) to the
culprit's own planner: same plan path, so its handoff goes back to that planner.
"""

from __future__ import annotations

from devswarm.git.changes import changed_paths, diff_text
from devswarm.git.workspace import Workspace
from devswarm.ids import repair_task_id, task_key
from devswarm.roles import prompts
from devswarm.schemas import PlannedTask, TaskSpec
from devswarm.verify.landings import Landing

OUTPUT_TAIL = 3000  # characters of the check's output handed to an agent


def retry_task(task: PlannedTask, tip: str, check: str, output: str) -> PlannedTask:
    """The reverted task again, from `tip`, its description telling why (same key: a new
    landing of the same task after its revert)."""
    original = task.spec.description.split(prompts.REVERTED_NOTE)[0].rstrip()
    note = prompts.reverted(check, output[-OUTPUT_TAIL:])
    spec = task.spec.model_copy(update={"description": f"{original}\n\n{note}"})
    return task.model_copy(update={"spec": spec, "base_commit": tip}, deep=True)


def repair_task(
    workspace: Workspace,
    task: PlannedTask,
    culprit: Landing,
    tip: str,
    check: str,
    output: str,
    unique_key: str,
) -> PlannedTask:
    """A repair task for the culprit's planner: from the red `tip`, the check's output and the
    culprit's diff in its description, the culprit's files in scope."""
    spec = TaskSpec(
        id=repair_task_id(task.spec.id),
        title=f"Make the check pass again after '{task.spec.title}'"[:200],
        description=prompts.repair(
            check,
            output[-OUTPUT_TAIL:],
            task.spec.title,
            diff_text(workspace.clone, culprit.first, culprit.last),
        ),
        acceptance=[f"`{check}` exits 0 on the branch tip with your change"],
        files=changed_paths(workspace.clone, culprit.first, culprit.last),
        check=None,  # the repository check is the task's check: the lane's gate runs it
    )
    return PlannedTask(
        spec=spec,
        key=unique_key,
        cycle=task.cycle,
        plan_path=task.plan_path,
        planner_agent_id=task.planner_agent_id,
        base_commit=tip,
    )


def repair_key(task: PlannedTask) -> str:
    """The key a repair task of `task` asks for (Run.unique_task_key makes it unique)."""
    return task_key(task.cycle, task.plan_path, repair_task_id(task.spec.id))


def revert_message(culprit: Landing, check: str) -> str:
    return (
        f'Revert "{culprit.subject}"\n\n'
        f"With this landing of task {culprit.task} the repository check `{check}` fails, and it "
        f"passed before it: devswarm's verifier reverts {culprit.last}."
    )
