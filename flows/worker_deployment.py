"""Scale-out (--executor deployment): one worker in its own process, as a deployment's flow run.

The orchestrator's side and the exchange of reports and records are in tasks/scaleout.py; see
docs/scale-out.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, runtime
from pydantic import SecretStr

from blocks import ModelProvider, load
from devswarm.config import SwarmConfig, default_home
from devswarm.ids import WORK_RUN_NAME
from devswarm.roles.worker import task_worker_id, work_task
from devswarm.run.run import Run
from devswarm.schemas import PlannedTask, WorkerReport
from devswarm.settings import api_key_from_env
from tasks.artifacts import work_artifact
from tasks.events import events_to_prefect
from tasks.landing import land
from tasks.logs import story_to_prefect
from tasks.model import prefect_calls
from tasks.scaleout import ENTRYPOINT, deliver

ROOT = Path(__file__).resolve().parents[1]


@flow(
    name="work-remote",
    flow_run_name=WORK_RUN_NAME,
    persist_result=False,
    retries=1,  # as flows/work.py; a process that dies is resubmitted by the orchestrator
    retry_delay_seconds=0,
)
def work_remote(
    config: SwarmConfig, task: PlannedTask, attempt: int = 1, provider: str | None = None
) -> WorkerReport:
    """One worker in its own process: clone the shared remote, run the agent, land by push, and
    leave the report and records in the exchange. `provider` names a model provider block to
    read the API key from when the environment has no OPENAI_API_KEY."""
    key = api_key_from_env().get_secret_value() or (
        load(ModelProvider, provider).api_key.get_secret_value() if provider else ""
    )  # no key at all: an endpoint without keys (vLLM, Ollama, the offline server)
    config = config.model_copy(update={"api_key": SecretStr(key)})
    if config.result_storage:  # the run folder is the orchestrator's: work in our own
        config = config.model_copy(update={"home": default_home()})
    story_to_prefect()
    run = Run.for_worker(config, clones=default_home() / "workers")
    report: WorkerReport | None = None
    try:
        retried = runtime.flow_run.run_count > 1
        with events_to_prefect(run):
            report = work_task(
                run, prefect_calls, task, attempt=attempt, land=land, retried=retried
            )
        work_artifact(report, task)
    finally:  # records go back even when the worker crashed; the report only when it exists
        deliver(run, task_worker_id(run, task, attempt), str(runtime.flow_run.id), report)
        run.workspace.close()  # type: ignore[attr-defined]  # a RemoteWorkspace
        run.close()
    return report


def deploy_worker(
    pool: str, name: str = "devswarm-worker", source: str | Path = ROOT, **kwargs: Any
) -> Any:
    """Register the worker deployment on `pool` from this source tree (or a git URL); its id.

    The same as a prefect.yaml entry with entrypoint flows/worker_deployment.py:work_remote.
    """
    return work_remote.from_source(str(source), ENTRYPOINT).deploy(
        name=name, work_pool_name=pool, print_next_steps=False, ignore_warnings=True, **kwargs
    )
