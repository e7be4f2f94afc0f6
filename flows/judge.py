"""The judge flow: the full check on the tip, then a structured verdict."""

from __future__ import annotations

from prefect import flow

from devswarm.run.run import get_run, judge_cycle
from devswarm.schemas import Verdict, WorkerReport
from tasks.model import prefect_calls


@flow(
    name="judge",
    flow_run_name="judge · cycle {cycle}",
    persist_result=False,
    validate_parameters=False,  # called in-process with typed objects; see flows/work.py
)
def judge(run_id: str, cycle: int, reports: list[WorkerReport]) -> Verdict:
    run = get_run(run_id)
    verdict, check = judge_cycle(run, prefect_calls, cycle=cycle, reports=reports)
    from prefect.artifacts import create_markdown_artifact

    create_markdown_artifact(
        key="judge-verdict",
        markdown=f"# Cycle {cycle}: {verdict.decision}\n\nscore {verdict.score:.2f}\n\n{verdict.reasons}\n\n"
        + (
            f"check on tip: {'passes' if check.passed else 'fails'}"
            if check
            else "no repository check"
        ),
        description=f"Judge verdict, cycle {cycle}",
    )
    return verdict
