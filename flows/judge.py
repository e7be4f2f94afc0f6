"""The judge flow: the full check on the tip, then a structured verdict."""

from __future__ import annotations

from prefect import flow

from devswarm.ids import JUDGE_RUN_NAME
from devswarm.roles.judge import judge_cycle
from devswarm.run.registry import get_run
from devswarm.schemas import Verdict, WorkerReport
from tasks.artifacts import verdict_artifact
from tasks.model import prefect_calls


@flow(
    name="judge",
    flow_run_name=JUDGE_RUN_NAME,
    persist_result=False,
    validate_parameters=False,  # called in-process with typed objects; see flows/work.py
)
def judge(run_id: str, cycle: int, reports: list[WorkerReport]) -> Verdict:
    verdict, check = judge_cycle(get_run(run_id), prefect_calls, cycle=cycle, reports=reports)
    verdict_artifact(cycle, verdict, check)
    return verdict
