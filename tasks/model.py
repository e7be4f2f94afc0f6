"""The model call as a Prefect task: visible retries on transient errors, a cached result.

The cache key is deterministic (run name, agent id, step, request hash) and the prompts hold
nothing volatile, so re-running a crashed run replays answered calls without paying again.
"""

from __future__ import annotations

import time
from typing import Any

from prefect import task
from prefect.runtime import task_run

from devswarm.agent import ModelFn
from devswarm.budget import BudgetExhausted
from devswarm.llm import ModelCallError, request_hash
from devswarm.swarm import Run, get_run

MAX_ATTEMPTS = 5


def _cache_key(_context: Any, parameters: dict[str, Any]) -> str:
    return "devswarm-{}-{}-{}-{}".format(
        parameters["run_id"],
        parameters["agent_id"].replace("/", "_"),
        parameters["step"],
        request_hash(parameters["request"]),
    )


def _transient(_task: Any, _task_run: Any, state: Any) -> bool:
    try:
        state.result()
    except ModelCallError as exc:
        return exc.transient
    except Exception:
        return False
    return False


@task(
    name="model-call",
    task_run_name="{agent_id} · step {step}",
    retries=MAX_ATTEMPTS - 1,
    retry_delay_seconds=0,  # the wait happens inside the task: it alone can read Retry-After
    retry_condition_fn=_transient,
    cache_key_fn=_cache_key,
    persist_result=True,
    log_prints=False,
)
def model_call(run_id: str, agent_id: str, step: int, request: dict[str, Any]) -> dict[str, Any]:
    """One chat completion (one HTTP attempt per Prefect task attempt)."""
    run = get_run(run_id)
    attempt = task_run.run_count or 1
    try:
        return run.client.chat(
            request,
            run_id=run_id,
            agent_id=agent_id,
            step=step,
            attempt=attempt,
            log=run.agent_log(agent_id),
        )
    except ModelCallError as exc:
        if exc.transient and attempt < MAX_ATTEMPTS:
            time.sleep(
                min(exc.retry_after if exc.retry_after is not None else 0.5 * 2**attempt, 60.0)
            )
        raise


def prefect_calls(run: Run, agent_id: str) -> ModelFn:
    """The agent's model function: every call goes through the `model_call` Prefect task."""

    def call(request: dict[str, Any], step: int) -> dict[str, Any]:
        if reason := run.ledger.exhausted:  # drained: no Prefect task run for a call never sent
            raise BudgetExhausted(reason)
        return model_call(run.run_id, agent_id, step, request)

    return call
