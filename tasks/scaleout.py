"""Scale-out (--executor deployment), the Prefect side that is not a flow: the exchange of
reports and records between worker flow runs and the orchestrator, and the orchestrator's
work function that starts worker flow runs with run_deployment and waits for them.

    orchestrator (the swarm flow)                   worker process (a Prefect worker's flow run)
      deployment_work(run)(task, attempt)              work_remote(config, task, attempt)
        push the branch to the shared remote             Run.for_worker: a clone of the remote
        run_deployment(worker deployment)  ───────────►  agent → checks → commit → land: git push
        wait for the flow run to end                     report + records → the exchange
        pull the remote → clone → user's branch  ◄─────
        report + records ← the exchange; import them

`run_deployment` returns a flow-run record, not the report, so the worker leaves its report and
its JSONL records where both sides can read them: the run folder on a disk both see (the
default: a process work pool on this machine, or a shared volume), or a Prefect storage block
(`result_storage`, e.g. "s3-bucket/devswarm") for workers on other machines. The API key is
never a parameter: the worker reads it from its environment or from a model provider block.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from devswarm.errors import UserError
from devswarm.git.remote import init_bare_remote, remote_url
from devswarm.ids import WORK_RUN_NAME, file_safe
from devswarm.model.ledger import Reservation
from devswarm.records import now, read_records
from devswarm.roles.worker import task_worker_id
from devswarm.run.run import Run
from devswarm.scheduler import WorkerCrashed
from devswarm.schemas import PlannedTask, WorkerReport

ENTRYPOINT = "flows/worker_deployment.py:work_remote"
POLL_SECONDS = 1.0
WAIT_NOTICE_SECONDS = 60.0  # a flow run still Scheduled this long: is a Prefect worker running?
_log = logging.getLogger("devswarm")


# -- the exchange: reports and records, from the worker back to the orchestrator ---------------


def _files(agent_id: str, flow_run_id: str) -> list[str]:
    """What one worker flow run leaves, relative to the run folder: its records, transcript and
    report. The report is named after the flow run, so a report left by an earlier run of the
    same agent (before a crash and a resume) is never taken for this one's."""
    name = file_safe(agent_id)
    return [
        f"records/{name}.jsonl",
        f"transcripts/{name}.jsonl",
        f"reports/{name}-{flow_run_id}.json",
    ]


def _storage(slug: str) -> Any:
    """A Prefect storage block ("<block type slug>/<name>") that can read and write paths."""
    from prefect.blocks.core import Block

    try:
        block = Block.load(slug)
    except (ValueError, KeyError) as exc:
        raise UserError(f"no Prefect storage block {slug!r}: {exc}") from None
    if not (hasattr(block, "write_path") and hasattr(block, "read_path")):
        raise UserError(f"block {slug!r} cannot store files (it has no read_path/write_path)")
    return block


def deliver(run: Run, agent_id: str, flow_run_id: str, report: WorkerReport | None) -> None:
    """Worker side: write the report into the run folder, and copy the worker's files to the
    storage block when the run folder is not shared."""
    files = _files(agent_id, flow_run_id)
    if report is not None:
        path = run.dir / files[2]
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(report.model_dump_json())
        os.replace(tmp, path)  # the orchestrator never reads half a report
    if slug := run.config.result_storage:
        block = _storage(slug)
        for rel in files:
            if (run.dir / rel).exists():
                block.write_path(f"{run.run_id}/{rel}", (run.dir / rel).read_bytes())


def collect(run: Run, agent_id: str, flow_run_id: str) -> WorkerReport | None:
    """Orchestrator side: the report of the worker's flow run (None if it left none), its
    records and transcript copied into the run folder first when they went through a block."""
    files = _files(agent_id, flow_run_id)
    if slug := run.config.result_storage:
        block = _storage(slug)
        for rel in files:
            try:
                data = block.read_path(f"{run.run_id}/{rel}")
            except Exception:  # not there: the worker never wrote it
                continue
            (run.dir / rel).parent.mkdir(parents=True, exist_ok=True)
            (run.dir / rel).write_bytes(data)
    path = run.dir / files[2]
    if not path.exists():
        return None
    report = WorkerReport.model_validate_json(path.read_text())
    records = run.dir / files[0]
    report.records = str(records) if records.exists() else None  # a path of this machine
    return report


def usage(records: Path, since: str = "") -> tuple[int, float]:
    """Tokens and dollars of the model calls in a worker's records that started at `since`
    or later (ISO times: an agent's file may hold calls of a run before a crash)."""
    tokens, cost = 0, 0.0
    if records.exists():
        for r in read_records(records):
            if (
                r.get("kind") in {"model_call", "model_calls"}
                and (r.get("started_at") or "") >= since
            ):
                tokens += int(r.get("input_tokens") or 0) + int(r.get("output_tokens") or 0)
                cost += float(r.get("cost_usd") or 0.0)
    return tokens, cost


# -- the orchestrator ---------------------------------------------------------------------------


def shared_remote(run: Run) -> str:
    """The shared remote's URL, with the run's branch on it (a bare repository in the data
    folder unless config.remote names one; pushed, or followed if workers landed there)."""
    url = (
        remote_url(run.config.remote)
        if run.config.remote
        else init_bare_remote(run.config.home / "remotes" / f"{run.workspace.home.name}.git")
    )
    run.workspace.push_remote(url)
    return url


def worker_config(run: Run, remote: str) -> dict[str, Any]:
    """The config a worker process gets, as JSON: the shared remote, the budget left now, the
    run's name; never the API key."""
    left = run.ledger.left()
    budget = run.config.budget.model_copy(
        update={
            "max_tokens": max(0, int(left["tokens"])),
            "max_cost_usd": max(0.0, float(left["cost_usd"])),
            "max_wall_seconds": max(0.0, float(left["seconds"])),
        }
    )
    config = run.config.model_copy(
        update={"remote": remote, "budget": budget, "run_id": run.run_id}
    )
    return config.model_dump(mode="json", exclude={"api_key"})


def deployment_work(run: Run) -> Callable[[PlannedTask, int], WorkerReport]:
    """The scheduler's work function for --executor deployment: (task, attempt) -> report.

    Raises UserError if the worker deployment does not exist. A worker flow run that crashed
    without a report (its process died) raises WorkerCrashed, so the scheduler resubmits it
    once; one that failed (it raised, after its own flow retries) raises RuntimeError.
    """
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():  # a temporary server lives in this process: none can reach it
        raise UserError(
            "--executor deployment needs a Prefect server that Prefect workers reach: "
            "devswarm server start, then set PREFECT_API_URL"
        )
    name = run.config.worker_deployment
    try:
        with get_client(sync_client=True) as client:
            deployment = client.read_deployment_by_name(name)
    except ObjectNotFound:
        raise UserError(
            f"no deployment {name!r} on the Prefect server; deploy the worker flow "
            f"({ENTRYPOINT}) to a work pool first (docs/scale-out.md)"
        ) from None
    remote = shared_remote(run)
    pool = deployment.work_pool_name

    def work(task: PlannedTask, attempt: int) -> WorkerReport:
        agent_id = task_worker_id(run, task, attempt)
        since = now()
        run.progress.bump("working")
        try:
            flow_run = _run_and_wait(run, name, pool, task, attempt, remote)
        finally:
            run.progress.bump("working", -1)
            _pull(run, remote)  # whatever the worker landed reaches the user's branch
        report = collect(run, agent_id, str(flow_run.id))
        if report is not None and report.records:
            # The worker kept its own ledger; the run's learns what it spent.
            tokens, cost = usage(Path(report.records), since)
            run.ledger.settle(Reservation(0, 0.0), tokens, cost)
        if report is not None:
            return report
        state = flow_run.state
        if state is not None and state.is_cancelled():
            return WorkerReport(
                task_key=task.key, agent_id=agent_id, status="stopped", reason="cancelled"
            )
        ended = (
            f"worker flow run {flow_run.name} ended {state.type.value if state else '?'} "
            f"without a report: {(state.message if state else '') or ''}"[:400]
        )
        if state is None or state.is_crashed():  # its process died: the scheduler resubmits
            raise WorkerCrashed(ended)
        raise RuntimeError(ended)  # it raised, after its own Prefect flow retries

    return work


def _run_and_wait(
    run: Run, name: str, pool: str | None, task: PlannedTask, attempt: int, remote: str
) -> Any:
    """Start the worker's flow run (a child of the swarm flow run) and wait for its end.

    When the swarm drains, workers that can see the run folder are asked to stop (its STOP
    file) at their next step, like local workers."""
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_RESULTS_LOCAL_STORAGE_PATH

    env = {}
    if not run.config.result_storage:
        # Answered model calls are cached where this process caches them, so a resumed run
        # replays the workers' calls too (a default storage block on the workers wins).
        env["PREFECT_RESULTS_LOCAL_STORAGE_PATH"] = str(PREFECT_RESULTS_LOCAL_STORAGE_PATH.value())
    flow_run = run_deployment(
        name,
        parameters={
            "config": worker_config(run, remote),
            "task": task.model_dump(mode="json"),
            "attempt": attempt,
        },
        flow_run_name=WORK_RUN_NAME.format(task=task),
        timeout=0,
        job_variables={"env": env} if env else None,
    )
    started, told_stop, told_wait = time.monotonic(), False, False
    with get_client(sync_client=True) as client:
        while True:
            flow_run = client.read_flow_run(flow_run.id)
            state = flow_run.state
            if state is not None and state.is_final():
                return flow_run
            if not told_stop and not run.config.result_storage and run.should_stop():
                (run.dir / "STOP").write_text(f"{run.stop_reason or 'stop requested'}\n")
                told_stop = True
            waited = time.monotonic() - started
            if not told_wait and waited > WAIT_NOTICE_SECONDS and state and state.is_scheduled():
                run.progress.emit(
                    f"{task.key}: waiting {waited:.0f} s for a Prefect worker on work pool "
                    f"{pool!r} (is `prefect worker start --pool {pool}` running?)"
                )
                told_wait = True
            time.sleep(POLL_SECONDS)


def _pull(run: Run, remote: str) -> None:
    try:
        run.workspace.pull_remote(remote)
    except UserError as exc:  # the landing is safe on the remote; the next pull retries
        _log.warning("run %s: %s", run.run_id, exc)
