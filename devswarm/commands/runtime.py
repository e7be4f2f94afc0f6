"""Running the swarm flow from a process: the key handed over, Prefect's history waited for.

On Prefect's temporary server, task-run events not yet written are lost (with tracebacks) if the
process exits at once; so after the flow we drain the client's event queue and wait until every
task run of the flow run tree is in a final state, then copy the history into DuckDB.
"""

from __future__ import annotations

import logging
from typing import Any

from devswarm.config import SwarmConfig
from devswarm.ids import new_run_id
from devswarm.report.html import write_html_report
from devswarm.run.registry import hand_over_key
from flows.swarm import swarm
from tasks.history import import_history, wait_for_history


def run_swarm(config: SwarmConfig) -> dict[str, Any]:
    """Run the swarm flow in this process and return its summary."""
    if not config.run_id:
        config = config.model_copy(update={"run_id": new_run_id(config.repo)})
    # The key never travels as a flow parameter (Prefect stores parameters): it is handed to the
    # flow inside this process (or read from the environment or a provider block).
    hand_over_key(config.run_id, config.api_key)
    params = config.model_copy(update={"api_key": config.api_key.__class__("")})
    state = swarm(params, return_state=True)
    flow_run_id = state.state_details.flow_run_id
    wait_for_history(flow_run_id)
    import_history_quietly(config, flow_run_id)
    # A run that ran out of budget ends Failed, a drained one Cancelled: both hold the summary.
    summary = state.result(raise_on_failure=False)
    if isinstance(summary, BaseException):  # the flow itself raised: its error, as before
        raise summary
    return summary


def import_history_quietly(config: SwarmConfig, flow_run_id: Any) -> None:
    """Copy the run's Prefect flow and task runs into DuckDB and refresh its HTML report.

    Best effort: `devswarm history import --run ID` does the same later.
    """
    try:
        import_history(config.db_path, config.run_id, wait=5.0, flow_run_id=str(flow_run_id))
        report = config.home / "runs" / str(config.run_id) / "report.html"
        if report.exists():
            write_html_report(config.db_path, config.run_id, report)
    except Exception as exc:
        logging.getLogger("devswarm").warning(
            "Prefect history not imported (try: devswarm history import): %s", exc
        )
