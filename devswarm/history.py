"""Prefect's history of a run as records: flow and task runs (Prefect's API objects given as
plain dicts, so nothing here imports Prefect) -> ``prefect_flow_runs`` / ``prefect_task_runs``
records, and the SQL that joins them to our agents once stored (LINK_STATEMENTS).

Prefect run names say what runs ("work: <task key>", "plan: cycle 2, root.api", "judge: cycle 2",
"swarm: <run id>", "<agent id>: step 3" for a model call; devswarm.ids); a flow run's parameters
name the task and cycle exactly, so they are read first and the name is the fallback. Names an
older devswarm gave ("work · <task id>", "plan · cycle 2 · root.api", ...) are read too.
"""

from __future__ import annotations

import json
import re
import sys
from typing import Any

from devswarm.ids import followup_id, judge_id, planner_id, worker_id
from devswarm.records import RECORDED_AT, now

_FLOW_ROLES = {
    "swarm": "swarm",
    "plan": "planner",
    "followup": "planner",
    "work": "worker",
    "work-remote": "worker",
    "judge": "judge",
}
# Today's names (devswarm.ids) and an older devswarm's, which had " · " between the parts.
_PLAN_NAME = re.compile(r"^plan(?::| ·) cycle (\d+)(?:,| ·) (.+)$")
_JUDGE_NAME = re.compile(r"^judge(?::| ·) cycle (\d+)$")
_STEP_NAME = re.compile(r"^(.+?)(?::| ·) step (\d+)$")
_TASK_NAME = re.compile(r"^(.+?)(?:: | · )(.*)$")  # "land: <agent id>" -> ("land", "<agent id>")


def prefect_span_id(uuid: Any) -> str | None:
    """An OpenTelemetry-sized span id (16 hex) from a Prefect run id."""
    return str(uuid).replace("-", "")[:16] if uuid else None


def _seconds(value: Any) -> float | None:
    if value is None:
        return None
    if hasattr(value, "total_seconds"):
        return value.total_seconds()
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _flow_agent(
    flow_name: str, name: str, params: dict[str, Any], run_id: str
) -> tuple[str | None, str | None, int | None]:
    """(agent_id, task key, cycle) of one of our flow runs, from its parameters or its name."""
    task = params.get("task") if isinstance(params.get("task"), dict) else {}
    spec = task.get("spec") if isinstance(task.get("spec"), dict) else {}
    if flow_name in ("work", "work-remote") and task.get("key") and spec.get("id"):
        attempt = params.get("attempt") or 1
        agent = worker_id(run_id, task.get("cycle"), task.get("plan_path"), spec["id"], attempt)
        return agent, task["key"], task.get("cycle")
    if flow_name == "followup" and task.get("planner_agent_id") and spec.get("id"):
        return followup_id(task["planner_agent_id"], spec["id"]), None, task.get("cycle")
    if flow_name == "plan":
        cycle, path = params.get("cycle"), params.get("plan_path")
        if cycle is None and (m := _PLAN_NAME.match(name)):
            cycle, path = int(m[1]), m[2]
        if cycle is not None:
            return planner_id(run_id, int(cycle), path or "root"), None, int(cycle)
    if flow_name == "judge":
        cycle = params.get("cycle")
        if cycle is None and (m := _JUDGE_NAME.match(name)):
            cycle = int(m[1])
        if cycle is not None:
            return judge_id(run_id, int(cycle)), None, int(cycle)
    return None, None, None


def flow_run_record(
    flow_run: dict[str, Any], flow_name: str, run_id: str, parent_flow_run_id: Any = None
) -> dict[str, Any]:
    """A ``prefect_flow_runs`` record from a Prefect FlowRun (as a dict) of our run ``run_id``."""
    name = flow_run.get("name") or ""
    params = flow_run.get("parameters") or {}
    agent_id, task_key, cycle = _flow_agent(flow_name, name, params, run_id)
    return {
        "kind": "prefect_flow_runs",
        "flow_run_id": str(flow_run["id"]),
        "run_id": run_id,
        "name": name,
        "flow_name": flow_name,
        "role": _FLOW_ROLES.get(flow_name),
        "agent_id": agent_id,
        "task_key": task_key,
        "cycle": cycle,
        "parent_flow_run_id": str(parent_flow_run_id) if parent_flow_run_id else None,
        "parent_task_run_id": _str(flow_run.get("parent_task_run_id")),
        "state_type": _state(flow_run.get("state_type")),
        "state_name": flow_run.get("state_name"),
        "run_count": flow_run.get("run_count"),
        "started_at": flow_run.get("start_time"),
        "ended_at": flow_run.get("end_time"),
        "total_run_time_s": _seconds(flow_run.get("total_run_time")),
        "created_at": flow_run.get("created"),
        "deployment_id": _str(flow_run.get("deployment_id")),
        "work_pool_name": flow_run.get("work_pool_name"),
        "tags": json.dumps(list(flow_run.get("tags") or [])),
        "span_id": prefect_span_id(flow_run["id"]),
        "parent_span_id": prefect_span_id(parent_flow_run_id),
        RECORDED_AT: now(),
    }


def task_run_record(
    task_run: dict[str, Any], run_id: str, subflow_run_id: Any = None
) -> dict[str, Any]:
    """A ``prefect_task_runs`` record from a Prefect TaskRun (as a dict) of our run ``run_id``.

    A model call's task run is named "<agent id>: step N", which gives agent_id and step, and a
    landing's "land: <agent id>"; other task runs get their agent when imported
    (Store.link_history: a subflow's stand-in the subflow's, any other its flow run's).
    """
    name = task_run.get("name") or ""
    agent_id, step = None, None
    if m := _STEP_NAME.match(name):
        agent_id, step = m[1], int(m[2])
        task_name = "model-call"
    elif subflow_run_id:  # the stand-in a parent flow run holds for a subflow run
        task_name = "subflow"
    else:
        parts = _TASK_NAME.match(name)
        task_name = parts[1] if parts else name
        if task_name == "land" and parts and parts[2].startswith("worker/"):
            agent_id = parts[2]  # today's landings name their worker (older ones a worktree)
    run_count = task_run.get("run_count") or 0
    policy = task_run.get("empirical_policy") or {}
    max_retries = policy.get("retries", policy.get("max_retries"))
    return {
        "kind": "prefect_task_runs",
        "task_run_id": str(task_run["id"]),
        "flow_run_id": _str(task_run.get("flow_run_id")),
        "run_id": run_id,
        "name": name,
        "task_name": task_name,
        "agent_id": agent_id,
        "step": step,
        "subflow_run_id": _str(subflow_run_id),
        "state_type": _state(task_run.get("state_type")),
        "state_name": task_run.get("state_name"),
        "run_count": run_count,
        "max_retries": max_retries,
        "retries": max(run_count - 1, 0),
        # Prefect marks a result served from its cache as a Completed state named "Cached".
        "cache_hit": task_run.get("state_name") == "Cached",
        "cache_key": task_run.get("cache_key"),
        "cache_expiration": task_run.get("cache_expiration"),
        "started_at": task_run.get("start_time"),
        "ended_at": task_run.get("end_time"),
        "total_run_time_s": _seconds(task_run.get("total_run_time")),
        "created_at": task_run.get("created"),
        "tags": json.dumps(list(task_run.get("tags") or [])),
        "span_id": prefect_span_id(task_run["id"]),
        "parent_span_id": prefect_span_id(task_run.get("flow_run_id")),
        RECORDED_AT: now(),
    }


def _str(value: Any) -> str | None:
    return str(value) if value else None


def _state(value: Any) -> str | None:
    # A StateType enum or its text ("COMPLETED").
    return getattr(value, "value", value) if value is not None else None


def current_flow_run_id() -> str | None:
    """The Prefect flow run this thread runs in, or None (outside Prefect, or Prefect unloaded).

    Reads Prefect's runtime module only if the process already imported it, so plain-Python
    callers never pay for (or depend on) importing Prefect.
    """
    module = sys.modules.get("prefect.runtime.flow_run")
    try:
        value = module.id if module is not None else None
    except Exception:  # no flow run context in this thread
        return None
    return str(value) if value else None


# What Store.link_history runs, in order ($run is our run id). A flow run gets the agent that
# recorded its id; else, for a work flow run, the worker of the task its name names that started
# while it ran. Then a task run without an agent gets its subflow's agent, else its flow run's.
LINK_STATEMENTS = (
    """
UPDATE prefect_flow_runs p SET agent_id = m.agent_id, task_key = coalesce(m.task_key, p.task_key),
    cycle = coalesce(m.cycle, p.cycle)
FROM (
    SELECT flow_run_id, any_value(agent_id) AS agent_id, any_value(task_key) AS task_key,
        any_value(cycle) AS cycle
    FROM agents WHERE run_id = $run AND flow_run_id IS NOT NULL GROUP BY flow_run_id
) m
WHERE p.flow_run_id = m.flow_run_id AND p.run_id = $run
""",
    """
UPDATE prefect_flow_runs p SET agent_id = a.agent_id, task_key = a.task_key, cycle = a.cycle
FROM (
    SELECT p2.flow_run_id,
        arg_min(a.agent_id, abs(epoch(a.started_at) - epoch(p2.started_at))) AS agent_id
    FROM prefect_flow_runs p2
    JOIN agents a ON a.run_id = p2.run_id AND a.role = 'worker'
        AND (a.task_key = regexp_replace(p2.name, '^work(: | · )', '')
            OR a.task_key LIKE '%.' || regexp_replace(p2.name, '^work(: | · )', ''))
        AND a.started_at BETWEEN p2.started_at - INTERVAL 5 SECOND
            AND coalesce(p2.ended_at, p2.started_at + INTERVAL 1 DAY)
    WHERE p2.run_id = $run AND p2.agent_id IS NULL AND p2.flow_name IN ('work', 'work-remote')
    GROUP BY p2.flow_run_id
) m
JOIN agents a ON a.agent_id = m.agent_id
WHERE p.flow_run_id = m.flow_run_id
""",
    """
UPDATE prefect_task_runs t SET agent_id = coalesce(
    (SELECT s.agent_id FROM prefect_flow_runs s WHERE s.flow_run_id = t.subflow_run_id),
    (SELECT f.agent_id FROM prefect_flow_runs f WHERE f.flow_run_id = t.flow_run_id))
WHERE t.run_id = $run AND t.agent_id IS NULL
""",
)
