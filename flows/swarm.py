"""The swarm flow: cycles of plan → work → judge until the judge says done/stop or a budget ends.

swarm ── plan (root) ── sub-plans (concurrent, recursive)
      ── work × N (each planner's tasks start as it returns them; bounded, streamed;
         handoffs → follow-up plans)
      ── judge
"""

from __future__ import annotations

from functools import partial
from typing import Any

from prefect import flow
from prefect.runtime import flow_run
from prefect.states import State

from devswarm.config import SwarmConfig
from devswarm.ids import SWARM_RUN_NAME
from devswarm.run import cycles
from devswarm.run.registry import drain_on_signals
from devswarm.run.run import Run
from devswarm.schemas import PlannedTask, Verdict, WorkerReport
from flows.judge import judge
from flows.plan import followup, plan
from flows.work import work
from tasks.scaleout import deployment_work
from tasks.subflows import STARTS, off_main_thread, subflows_without_heartbeats
from tasks.watching import ended, final_state, watched


@flow(name="swarm", flow_run_name=SWARM_RUN_NAME, persist_result=False)
def swarm(config: SwarmConfig) -> State:
    """Run (or resume) the whole swarm for one goal on one repository. Its final state says how
    it ended; its data is the run's summary (tasks/watching.py)."""
    run = cycles.start_run(config, str(flow_run.id))
    verdict: Verdict | None = None
    status = "crashed"
    try:
        with (
            watched(run, str(flow_run.id)),
            drain_on_signals(run.progress.emit),
            subflows_without_heartbeats(),
        ):
            verdict = run_cycles(run)
        status = run.final_status(verdict)
    finally:
        report = ended(run, status, str(flow_run.id))
    return final_state(run, status, verdict, report)


def run_cycles(run: Run) -> Verdict | None:
    """Plan and work (no barrier: each planner's tasks start as it returns them) → judge, until
    the judge says done/stop, a budget ends, or a drain. Planners and the judge run off the
    main thread, so the drain's signal handler stays in place."""
    verdict = None
    while (cycle := cycles.next_cycle(run)) is not None:
        previous = run.state.cycles[-1]["summary"] if run.state.cycles else None
        root = partial(plan, run.run_id, cycle, "root", run.config.goal, [], 0, previous)
        reports = cycles.plan_and_work(run, cycle, root, _work_fn(run), followup)
        if run.should_stop():  # drained: the judge would be a call past the budget
            break
        verdict = off_main_thread(judge, run.run_id, cycle, reports)
        cycles.finish_cycle(run, cycle, verdict, reports)
        run.progress.emit(f"cycle {cycle}: judge says {verdict.decision}: {verdict.reasons[:160]}")
        if verdict.decision != "continue":
            break
    return verdict


def _work_fn(run: Run) -> Any:
    if run.config.executor == "deployment":  # each worker a flow run on a work pool
        return deployment_work(run)

    def start(task: PlannedTask, attempt: int) -> WorkerReport:
        with STARTS.starting():  # a few subflow starts at once: the first bodies run sooner
            return work(run.run_id, task, attempt)

    return start
