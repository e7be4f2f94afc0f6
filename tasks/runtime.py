"""Running the swarm flow from a process: key handling, and waiting for Prefect's history.

On Prefect's temporary server, task-run events not yet written are lost (with tracebacks) if the
process exits at once; so after the flow we drain the client's event queue and wait until every
task run of the flow run tree is in a final state.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from devswarm.config import SwarmConfig


def run_swarm(config: SwarmConfig) -> dict[str, Any]:
    """Run the swarm flow in this process and return its summary."""
    from devswarm.run.run import hand_over_key, new_run_name
    from flows.swarm import swarm

    if not config.run_name:
        config = config.model_copy(update={"run_name": new_run_name(config.repo)})

    # The key never travels as a flow parameter (Prefect stores parameters): it is handed to the
    # flow inside this process (or read from the environment or a provider block).
    hand_over_key(config.run_name, config.api_key)
    params = config.model_copy(update={"api_key": config.api_key.__class__("")})
    state = swarm(params, return_state=True)
    flow_run_id = state.state_details.flow_run_id
    wait_for_history(flow_run_id)
    import_history_quietly(config, flow_run_id)
    return state.result()


def import_history_quietly(config: SwarmConfig, flow_run_id: Any) -> None:
    """Copy the run's Prefect flow and task runs into DuckDB and refresh its HTML report.

    Best effort: `devswarm history import --run ID` does the same later.
    """
    from devswarm.commands.analysis import import_history
    from devswarm.report.html import write_html_report

    try:
        import_history(config.db_path, config.run_name, wait=5.0, flow_run_id=str(flow_run_id))
        report = config.home / "runs" / str(config.run_name) / "report.html"
        if report.exists():
            write_html_report(config.db_path, config.run_name, report)
    except Exception as exc:
        logging.getLogger("devswarm").warning(
            "Prefect history not imported (try: devswarm history import): %s", exc
        )


def flow_run_tree(client: Any, root: Any) -> list[Any]:
    """The ids of a flow run and all its descendant flow runs."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId

    ids, frontier = [root], [root]
    while frontier:
        children = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=frontier)
            ),
            limit=200,
        )
        frontier = [c.id for c in children if c.id not in ids]
        ids.extend(frontier)
    return ids


def wait_for_history(flow_run_id: Any, timeout: float = 20.0) -> None:
    """Block until the server has recorded every task run of the flow run tree as final."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.events.worker import EventsWorker

    try:
        EventsWorker.drain_all(timeout=10)
    except Exception:
        pass
    # The temporary server's recorder logs tracebacks for events it could not flush; the user
    # must not see them (the runs are complete either way).
    logging.getLogger("prefect.server").setLevel(logging.CRITICAL)
    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        ids = flow_run_tree(client, flow_run_id)
        while time.monotonic() < deadline:
            runs = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids)), limit=200
            )
            if runs and all(r.state is not None and r.state.is_final() for r in runs):
                return
            time.sleep(0.5)


def mark_crashed(run_name: str) -> int:
    """Flow runs of this run that a dead process left Running are marked Crashed."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterName,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.states import Crashed

    marked = 0
    with get_client(sync_client=True) as client:
        roots = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                name=FlowRunFilterName(any_=[f"swarm · {run_name}"]),
                state=FlowRunFilterState(
                    type=FlowRunFilterStateType(any_=[StateType.RUNNING, StateType.PENDING])
                ),
            )
        )
        for root in roots:
            for flow_run_id in flow_run_tree(client, root.id):
                fr = client.read_flow_run(flow_run_id)
                if fr.state is not None and not fr.state.is_final():
                    client.set_flow_run_state(
                        flow_run_id, Crashed(message="its process died; resumed"), force=True
                    )
                    marked += 1
    return marked
