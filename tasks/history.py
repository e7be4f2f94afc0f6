"""Prefect's view of a run → DuckDB: its flow and task runs, read from Prefect's API.

A run's flow runs are every `swarm: <run id>` root (a resumed run has several) and all their
descendants; devswarm.history turns them into records, joined to our agents by the store.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from uuid import UUID

from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterId,
    FlowRunFilterName,
    FlowRunFilterParentFlowRunId,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import StateType
from prefect.states import Crashed

from devswarm.errors import UserError
from devswarm.history import flow_run_record, task_run_record
from devswarm.ids import swarm_run_names
from devswarm.report.data import latest_run
from devswarm.store.store import open_writer
from devswarm.store.warehouse import open_readonly


def _paged(read: Callable[..., list], **kwargs: Any) -> list:
    """Every object a Prefect read_* call returns, 200 a page."""
    out: list = []
    while True:
        page = read(limit=200, offset=len(out), **kwargs)
        out.extend(page)
        if len(page) < 200:
            return out


def flow_run_tree(client: SyncPrefectClient, roots: Iterable[Any]) -> list[UUID]:
    """The ids of the root flow runs and all their descendant flow runs."""
    ids = [UUID(str(r)) for r in roots]
    frontier = list(ids)
    while frontier:
        children = _paged(
            client.read_flow_runs,
            flow_run_filter=FlowRunFilter(
                parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=frontier)
            ),
        )
        frontier = [c.id for c in children if c.id not in ids]
        ids.extend(frontier)
    return ids


def swarm_roots(client: SyncPrefectClient, run_id: str, **filters: Any) -> list[Any]:
    """The run's swarm flow runs (a resumed run has several), found by their names."""
    name = FlowRunFilterName(any_=swarm_run_names(run_id))
    return _paged(client.read_flow_runs, flow_run_filter=FlowRunFilter(name=name, **filters))


def fetch_history(
    run_id: str, roots: set[str], *, wait: float
) -> tuple[list[dict], list[dict], dict[str, str], int]:
    """Read a run's flow runs and their task runs from Prefect's API, waiting up to `wait`
    seconds for every state to be final. Returns (flow runs, task runs, flow names by id, runs
    not final)."""
    with get_client(sync_client=True) as client:
        found = {r.id for r in swarm_roots(client, run_id)} | {UUID(str(r)) for r in roots}
        ids = flow_run_tree(client, found)
        if not ids:
            return [], [], {}, 0
        deadline = time.monotonic() + wait
        while True:
            by_id = FlowRunFilter(id=FlowRunFilterId(any_=ids))
            flows = _paged(client.read_flow_runs, flow_run_filter=by_id)
            tasks = _paged(client.read_task_runs, flow_run_filter=by_id)
            not_final = sum(
                1 for r in [*flows, *tasks] if r.state is None or not r.state.is_final()
            )
            if not not_final or time.monotonic() >= deadline:
                break
            time.sleep(0.5)
        names = {str(fid): client.read_flow(fid).name for fid in {f.flow_id for f in flows}}
    return (
        [f.model_dump(exclude={"state"}) for f in flows],
        [t.model_dump(exclude={"state", "task_inputs"}) for t in tasks],
        names,
        not_final,
    )


def import_history(
    db: Path, run_id: str | None = None, *, wait: float = 60.0, flow_run_id: str | None = None
) -> dict[str, Any]:
    """Import the Prefect flow and task runs of one run (the latest if None) into the store.

    Waits up to `wait` seconds for their states to be final, then upserts them (idempotent:
    importing again updates the rows) and joins them to our agents. Returns counts.
    """
    try:
        with open_readonly(db) as store:
            run_id = run_id or latest_run(store)
            rows = store.query("SELECT flow_run_id FROM runs WHERE run_id = ?", [run_id])[1]
    except UserError:
        if run_id is None:
            raise
        rows = []  # the store may not have the run yet: Prefect is asked by its name
    if not rows and flow_run_id is None:
        raise UserError(f"no run {run_id!r} in the store")
    roots = {r for r in [flow_run_id, *(row[0] for row in rows)] if r}
    flow_runs, task_runs, flow_names, not_final = fetch_history(run_id, roots, wait=wait)
    if not flow_runs:
        raise UserError(f"Prefect has no flow runs of run {run_id!r} (is PREFECT_API_URL right?)")
    parents = {str(t["id"]): t.get("flow_run_id") for t in task_runs}
    subflows = {
        str(f["parent_task_run_id"]): f["id"] for f in flow_runs if f.get("parent_task_run_id")
    }
    records = [
        flow_run_record(
            f,
            flow_names.get(str(f.get("flow_id")), ""),
            run_id,
            parents.get(str(f.get("parent_task_run_id"))),
        )
        for f in flow_runs
    ] + [task_run_record(t, run_id, subflows.get(str(t["id"]))) for t in task_runs]
    joined = _write_history(db, run_id, records)
    return {
        "run_id": run_id,
        "flow_runs": len(flow_runs),
        "task_runs": len(task_runs),
        "joined_task_runs": joined,
        "not_final": not_final,
    }


def _write_history(db: Path, run_id: str, records: list[dict], timeout: float = 30.0) -> int:
    """Upsert into the warehouse, waiting while another process holds it."""
    with open_writer(db, timeout=timeout) as store:
        store.add_many(records, source="Prefect history")
        store.link_history(run_id)
        return store.query(
            "SELECT count(*) FROM prefect_task_runs WHERE run_id = ? AND agent_id IN"
            " (SELECT agent_id FROM agents)",
            [run_id],
        )[1][0][0]


def rename_flow_run(flow_run_id: Any, name: str) -> None:
    """Give a flow run the name it has in devswarm (a deployment's run, once its run id is
    known). Best effort: the name is a convenience; the run's records hold its id."""
    try:
        with get_client(sync_client=True) as client:
            client.update_flow_run(flow_run_id, name=name)
    except Exception as exc:
        logging.getLogger("devswarm").warning("flow run %s not renamed: %s", flow_run_id, exc)


def wait_for_history(flow_run_id: Any, timeout: float = 20.0) -> None:
    """Block until the server has recorded every task run of the flow run tree as final.

    On Prefect's temporary server, task-run events not yet written are lost (with tracebacks)
    if the process exits at once; so the client's event queue is drained first."""
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
        ids = flow_run_tree(client, [flow_run_id])
        while time.monotonic() < deadline:
            runs = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids)), limit=200
            )
            if runs and all(r.state is not None and r.state.is_final() for r in runs):
                return
            time.sleep(0.5)


def mark_crashed(run_id: str, flow_run_ids: Iterable[str] = ()) -> int:
    """Flow runs of this run that a dead process left Running are marked Crashed: those found
    by the run's name, and `flow_run_ids` (the swarm flow runs the run recorded: a deployment's
    run carries another name until the swarm knows its id)."""
    marked = 0
    live = FlowRunFilterState(
        type=FlowRunFilterStateType(any_=[StateType.RUNNING, StateType.PENDING])
    )
    with get_client(sync_client=True) as client:
        roots = {r.id for r in swarm_roots(client, run_id, state=live)}
        roots |= {UUID(str(i)) for i in flow_run_ids}
        for flow_run_id in flow_run_tree(client, roots):
            fr = client.read_flow_run(flow_run_id)
            if fr.state is not None and not fr.state.is_final():
                client.set_flow_run_state(
                    flow_run_id, Crashed(message="its process died; resumed"), force=True
                )
                marked += 1
    return marked
