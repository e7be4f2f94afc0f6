"""Pydantic models for everything that crosses a boundary: plans, tasks, reports, verdicts."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, Field, field_validator

_ID = re.compile(r"[^a-z0-9-]+")


def slug(text: str, limit: int = 40) -> str:
    """A lowercase id made of [a-z0-9-], used for task ids and agent ids."""
    return _ID.sub("-", text.lower()).strip("-")[:limit].strip("-") or "x"


class TaskSpec(BaseModel):
    """One unit of work a planner hands to a worker."""

    id: str = Field(
        description="Short unique id, lowercase words joined by '-', e.g. 'add-tokenizer'."
    )
    title: str = Field(description="One line: what the task delivers.")
    description: str = Field(
        description="What to change and why; enough for someone new to the code."
    )
    acceptance: list[str] = Field(
        default_factory=list, description="Concrete, checkable acceptance criteria."
    )
    files: list[str] = Field(
        default_factory=list, description="Files (or directories) this task may change."
    )
    check: str | None = Field(
        default=None,
        description="Optional shell command that must exit 0 when the task is done, "
        "e.g. 'python -m pytest -q tests/test_x.py'.",
    )
    size: Literal["s", "m", "l"] = Field(
        default="m", description="Estimated size: s (< 30 lines), m (< 150), l (< 300)."
    )
    depends_on: list[str] = Field(
        default_factory=list,
        description="Ids of tasks in this plan that must land before this one starts.",
    )

    @field_validator("id")
    @classmethod
    def _slug_id(cls, value: str) -> str:
        return slug(value)


class SubScope(BaseModel):
    """A part of the goal handed to a sub-planner, which owns the given paths."""

    name: str = Field(description="Short id of the scope, e.g. 'parser'.")
    goal: str = Field(description="What the sub-planner must achieve inside its paths.")
    paths: list[str] = Field(default_factory=list, description="Paths this scope owns.")

    @field_validator("name")
    @classmethod
    def _slug_name(cls, value: str) -> str:
        return slug(value, 24)


class Plan(BaseModel):
    """A planner's output: tasks for workers and scopes for sub-planners."""

    summary: str = Field(description="Two or three sentences: the approach and why.")
    tasks: list[TaskSpec] = Field(default_factory=list)
    scopes: list[SubScope] = Field(
        default_factory=list, description="Parts of the goal to hand to sub-planners (optional)."
    )


class Verdict(BaseModel):
    """The judge's decision at the end of a cycle."""

    decision: Literal["continue", "done", "stop"] = Field(
        description="continue: another cycle is worth it; done: the goal is met; "
        "stop: no further progress is possible."
    )
    reasons: str = Field(description="Why, in a few sentences, citing evidence.")
    score: float = Field(
        default=0.0, ge=0.0, le=1.0, description="How much of the goal is met, 0-1."
    )


class PlannedTask(BaseModel):
    """A task as the orchestrator tracks it: the spec plus where it came from."""

    spec: TaskSpec
    key: str  # unique in the run: c<cycle>.<plan path>.<task id>
    cycle: int
    plan_path: str
    planner_agent_id: str
    base_commit: str
    check: str | None = None  # the task's own check (spec.check)
    depends_on: list[str] = Field(default_factory=list)  # keys of tasks that must land first


class WorkerReport(BaseModel):
    """What a worker subflow returns to the swarm."""

    task_key: str
    agent_id: str
    # landed | failed | abandoned | stuck | limit:<name> | setup_failed | error | skipped |
    # stopped | budget_exhausted | crashed (the scheduler's, when a work subflow died twice)
    status: str
    commit: str | None = None
    # False: landed in devswarm's clone, not published to the user's branch (publish_error
    # says why); the run's end, the next run or `devswarm resume` publishes it first.
    published: bool | None = None
    publish_error: str | None = None
    handoff: str = ""
    reason: str | None = None
    conflicts: int = 0
    records: str | None = None  # path of the worker's JSONL records
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    diff_stat: str = ""


class CheckResult(BaseModel):
    """A shell check's outcome (exit code, cut output)."""

    command: str
    passed: bool
    exit_code: int | None
    output: str


def _overlaps(a: str, b: str) -> bool:
    a, b = a.strip("/"), b.strip("/")
    return (
        a == b or a.startswith(b + "/") or b.startswith(a + "/") or a in ("", ".") or b in ("", ".")
    )


def validate_plan(plan: Plan, scope_paths: list[str] | None = None) -> list[str]:
    """What is wrong with a plan (empty when nothing): ids, dependencies, scopes."""
    errors: list[str] = []
    ids = [t.id for t in plan.tasks]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        errors.append(f"task ids must be unique; repeated: {', '.join(dupes)}")
    known = set(ids)
    for t in plan.tasks:
        for dep in t.depends_on:
            if dep not in known:
                errors.append(f"task {t.id} depends on {dep}, which is not a task of this plan")
            elif dep == t.id:
                errors.append(f"task {t.id} depends on itself")
    graph = {t.id: [d for d in t.depends_on if d in known] for t in plan.tasks}
    if cycle := _find_cycle(graph):
        errors.append(f"dependencies form a cycle: {' -> '.join(cycle)}")
    names = [s.name for s in plan.scopes]
    if len(set(names)) != len(names):
        errors.append("scope names must be unique")
    for i, a in enumerate(plan.scopes):
        if not a.paths:
            errors.append(f"scope {a.name} owns no paths")
        for b in plan.scopes[i + 1 :]:
            for pa in a.paths:
                for pb in b.paths:
                    if _overlaps(pa, pb):
                        errors.append(f"scopes {a.name} and {b.name} overlap: {pa} / {pb}")
        if scope_paths:
            outside = [
                p
                for p in a.paths
                if not any(
                    _overlaps(p, own) and p.strip("/").startswith(own.strip("/"))
                    for own in scope_paths
                )
            ]
            if outside:
                errors.append(f"scope {a.name} owns paths outside your scope: {', '.join(outside)}")
    return errors


def _find_cycle(graph: dict[str, list[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in graph.get(node, []):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if state.get(nxt) is None and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in graph:
        if state.get(node) is None and (found := visit(node)):
            return found
    return None
