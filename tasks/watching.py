"""What a Prefect user sees of a swarm run: while it goes, its story in the swarm run's log (and
every subflow's own), its events, its live progress and board; at its end, the summary
artifact, the run.finished event, and a final state that says what happened.

The final state: Completed only when the judge said done; Cancelled when a person's stop
drained the run; Failed, with the reason as its message, when a budget ran out, the judge
stopped the run or gave no verdict (devswarm/run/cycles.py run_ending). The summary is the
state's data either way, so `devswarm run` still prints it and exits with its status's code.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from prefect.states import Cancelled, Completed, Failed, State

from devswarm.run.cycles import end_run, run_ending
from devswarm.run.run import Run
from devswarm.schemas import Verdict
from tasks.artifacts import summary_artifact
from tasks.events import events_to_prefect, run_finished
from tasks.live_artifacts import live_artifacts
from tasks.logs import story_to_prefect, swarm_log

_STATES = {"completed": Completed, "failed": Failed, "cancelled": Cancelled}


@contextlib.contextmanager
def watched(run: Run, flow_run_id: str) -> Iterator[None]:
    """The run's log lines, events and live artifacts in Prefect while the block runs (call it
    in the swarm flow run)."""
    story_to_prefect()
    with swarm_log(run, flow_run_id), events_to_prefect(run), live_artifacts(run):
        yield


def ended(run: Run, status: str, flow_run_id: str) -> Path | None:
    """The run's end (devswarm.run.cycles.end_run), then its run.finished event, emitted by
    the swarm flow run itself so it names the deployment that started it; the report's path."""
    try:
        return end_run(run, status, flow_run_id)
    finally:
        run_finished(run, status)


def final_state(run: Run, status: str, verdict: Verdict | None, report: Path | None) -> State:
    """The summary artifact, then the swarm flow run's final state, holding the summary."""
    summary = run.summary(status, verdict, report)
    summary_artifact(summary)
    kind, message = run_ending(run, status, verdict)
    return _STATES[kind](message=run.story.redact(message, 500), data=summary)
