"""Every name devswarm gives: run names, agent ids, task keys, file-safe names, commit trailers,
Prefect run names and model-call cache keys — formed here and nowhere else.

Ids are derived, never random (but for the run name's suffix): a resumed run rebuilds the same
agent ids, so its model calls hit Prefect's cache, and its records upsert the same rows.

    run        <repo>-<UTC stamp>-<4 hex>                 textkit-20261206-101500-3fa9
    task key   c<cycle>.<plan path>.<task id>             c1.root.api.add-tokenizer
    planner    planner/<run>/c<cycle>/<plan path>
    follow-up  <planner id>/followup-<task id>
    worker     worker/<run>/c<cycle>/<plan path>/<task id>/a<attempt>
    judge      judge/<run>/c<cycle>
    verifier   verifier/<run>                             (its reverts' Devswarm-Agent)
"""

from __future__ import annotations

import re
import secrets
from datetime import UTC, datetime
from pathlib import Path

from devswarm.records import span_id

_SLUG = re.compile(r"[^a-z0-9-]+")
_FILE_SAFE = re.compile(r"[^A-Za-z0-9._-]+")

# Commit trailers: git history joins DuckDB through them (field name -> trailer key).
TRAILERS = {
    "run": "Devswarm-Run",
    "task": "Devswarm-Task",
    "agent": "Devswarm-Agent",
    "revert": "Devswarm-Revert",  # on the verifier's reverts: the commit reverted
}

# Prefect run names (templates over the flow's parameters; Prefect fills them in), in ASCII:
# the Prefect UI's older run graph drops every other character. They are lookup keys too:
# history import and crash marking find a run's flow runs by them, and read the names an older
# devswarm gave (with " · " where ": " and ", " are now) as well.
SWARM_RUN_NAME = "swarm: {config.run_id}"
PLAN_RUN_NAME = "plan: cycle {cycle}, {plan_path}"
FOLLOWUP_RUN_NAME = "followup: {task.key}"
WORK_RUN_NAME = "work: {task.key}"
JUDGE_RUN_NAME = "judge: cycle {cycle}"
LAND_RUN_NAME = "land: {agent_id}"
MODEL_CALL_RUN_NAME = "{agent_id}: step {step}"
OLD_SEPARATOR = " · "


def slug(text: str, limit: int = 40) -> str:
    """A lowercase id made of [a-z0-9-], used for task ids, scope names and run names."""
    return _SLUG.sub("-", text.lower()).strip("-")[:limit].strip("-") or "x"


def is_slug(text: str, limit: int = 80) -> bool:
    """Whether `text` is already a slug (a name that is safe as a folder and a branch part)."""
    return bool(text) and len(text) <= limit and slug(text, limit) == text


def landing_branch(run_id: str) -> str:
    """The branch a run lands on when the user names none."""
    return f"devswarm/{run_id}"


def new_run_id(repo: Path) -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return f"{slug(repo.name, 24)}-{stamp}-{secrets.token_hex(2)}"


def file_safe(name: str) -> str:
    """A name usable as one file or folder name (agent ids hold slashes)."""
    return _FILE_SAFE.sub("_", name)


def repo_key(repo: Path | str) -> str:
    """The folder name of a repository's private clone in the data folder."""
    return f"{slug(Path(repo).name, 24)}-{span_id(str(repo))[:8]}"


def task_key(cycle: int, plan_path: str, task_id: str) -> str:
    return f"c{cycle}.{plan_path}.{task_id}"


def planner_id(run_id: str, cycle: int, plan_path: str) -> str:
    return f"planner/{run_id}/c{cycle}/{plan_path}"


def followup_id(planner_agent_id: str, task_id: str) -> str:
    return f"{planner_agent_id}/followup-{task_id}"


def worker_id(run_id: str, cycle: int, plan_path: str, task_id: str, attempt: int = 1) -> str:
    return f"worker/{run_id}/c{cycle}/{plan_path}/{task_id}/a{attempt}"


def judge_id(run_id: str, cycle: int) -> str:
    return f"judge/{run_id}/c{cycle}"


def probe_id(run_id: str, model: str) -> str:
    """The agent id of the capability probe of `model` in a run (its model_calls row)."""
    return f"preflight/{run_id}/{model}"


def verifier_id(run_id: str) -> str:
    return f"verifier/{run_id}"


def repair_task_id(task_id: str) -> str:
    """The id of the repair task for a culprit's task (its key: task_key(...) of it)."""
    return slug(f"repair-{task_id}")


def trailers(run_id: str, task: str, agent_id: str) -> dict[str, str]:
    """The trailers of a worker's commit."""
    return {TRAILERS["run"]: run_id, TRAILERS["task"]: task, TRAILERS["agent"]: agent_id}


def revert_trailers(run_id: str, task: str, reverted: str) -> dict[str, str]:
    """The trailers of the verifier's revert of `reverted`, a landing of task `task`."""
    return {**trailers(run_id, task, verifier_id(run_id)), TRAILERS["revert"]: reverted}


def swarm_run_names(run_id: str) -> list[str]:
    """The names the swarm flow run of `run_id` has, or had under an older devswarm."""
    return [SWARM_RUN_NAME.replace("{config.run_id}", run_id), f"swarm{OLD_SEPARATOR}{run_id}"]


def model_call_cache_key(run_id: str, agent_id: str, step: int, request_hash: str) -> str:
    """Prefect's cache key of one model call: a resumed run replays the same request for free."""
    return f"devswarm-{run_id}-{agent_id.replace('/', '_')}-{step}-{request_hash}"
