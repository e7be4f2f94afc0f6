"""Artifacts of a swarm run, read back through the Prefect client: one of each kind, stable keys."""

from __future__ import annotations

import json
import re
from pathlib import Path

from tests.conftest import git, make_repo
from tests.helpers import JUDGE_DONE, plan_reply, task, write_and_finish

KEY = re.compile(r"^[a-z0-9-]+$")


def test_each_kind_of_artifact_is_readable_with_a_stable_key(swarm_run, tmp_path: Path) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        FlowRunFilter,
        FlowRunFilterName,
    )

    from tasks.history import flow_run_tree

    repo = make_repo(tmp_path / "user", {"README.md": "x\n", "sub/keep.txt": ""})
    scenario = {
        "agents": [
            {"match": "planner/*/followup-*", "steps": [plan_reply()]},
            {
                "match": "planner/*/root",
                "steps": [
                    plan_reply(
                        task("top", ["top.txt"]),
                        scopes=[{"name": "sub_area", "goal": "do the sub area", "paths": ["sub"]}],
                    )
                ],
            },
            {
                "match": "planner/*/root.sub-area",
                "steps": [plan_reply(task("deep", ["sub/deep.txt"]))],
            },
            {"match": "worker/*/top/*", "steps": write_and_finish("top.txt", "top\n", "wrote top")},
            {"match": "worker/*/deep/*", "steps": write_and_finish("sub/deep.txt", "deep\n")},
            JUDGE_DONE,
        ]
    }
    summary, _ = swarm_run(scenario, repo)
    assert summary["status"] == "done"

    with get_client(sync_client=True) as client:
        [root] = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                name=FlowRunFilterName(any_=[f"swarm: {summary['run_id']}"])
            )
        )
        ids = flow_run_tree(client, [root.id])
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=ids))
        )
    by_key = {a.key: a for a in artifacts}
    # Keys hold no run id or time, so each kind is one history across runs in the UI.
    assert set(by_key) == {
        "plan-root",
        "plan-root-sub-area",
        "work-top",
        "work-deep",
        "judge-verdict",
        "swarm-summary",
        "swarm-progress",  # updated in place as the run goes
        "swarm-board",
    }
    assert all(KEY.match(k) for k in by_key)

    # Plans: a table per planner, one row per task (and per handed-off scope).
    root_plan = by_key["plan-root"]
    assert root_plan.type == "table"
    # The API keeps table data as JSON text.
    root_rows = json.loads(root_plan.data) if isinstance(root_plan.data, str) else root_plan.data
    assert {r["task"] for r in root_rows} >= {"c1.root.top", "scope:sub-area"}
    assert "deep" in str(by_key["plan-root-sub-area"].data)

    # Workers: markdown with status and the landed commit.
    top = by_key["work-top"]
    assert top.type == "markdown"
    landed = git(repo, "rev-list", summary["branch"])
    assert "**landed**" in top.data
    assert any(sha in top.data for sha in landed.split())
    assert "wrote top" in top.data

    # Judge and run summary.
    assert by_key["judge-verdict"].type == "markdown" and "done" in by_key["judge-verdict"].data
    run_summary = by_key["swarm-summary"].data
    assert summary["run_id"] in run_summary and summary["db"] in run_summary
    assert summary["branch"] in run_summary
