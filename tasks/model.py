"""The model call as a Prefect task: visible retries on transient errors, a cached result.

The cache key is deterministic (run id, agent id, step, request hash) and the prompts hold
nothing volatile, so re-running a crashed run replays answered calls without paying again.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

from prefect import task
from prefect.concurrency.sync import concurrency
from prefect.runtime import task_run
from prefect.utilities.annotations import quote

from devswarm.agent.loop import ModelFn
from devswarm.ids import MODEL_CALL_RUN_NAME
from devswarm.model.client import cache_key
from devswarm.model.errors import ModelCallError, backoff_seconds
from devswarm.model.ledger import BudgetExhausted
from devswarm.run.registry import get_run
from devswarm.run.run import Run

MAX_ATTEMPTS = 5
REFUSED = "devswarm_refused"  # a task result carrying an expected refusal, not a completion
# A Prefect global concurrency limit on model calls, shared by worker processes (--executor
# deployment); inside one process the model client's own semaphore is the cap.
MODEL_CALL_LIMIT = "devswarm-model-calls"
_LIMIT_READY: set[str] = set()


def ensure_model_call_limit(cap: int) -> None:
    """Create the global limit on model calls with `cap` slots if it is missing (once per
    process). An existing limit is kept as it is: whoever tuned it knows the account's quota."""
    if MODEL_CALL_LIMIT in _LIMIT_READY:
        return
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(MODEL_CALL_LIMIT)
        except ObjectNotFound:
            with contextlib.suppress(ObjectAlreadyExists):  # another process was first
                client.create_global_concurrency_limit(
                    GlobalConcurrencyLimitCreate(name=MODEL_CALL_LIMIT, limit=max(1, cap))
                )
    _LIMIT_READY.add(MODEL_CALL_LIMIT)


def _call_slot(run: Run) -> contextlib.AbstractContextManager[Any]:
    """A slot of the swarm-wide limit when workers are separate processes, else nothing."""
    if run.config.executor != "deployment":
        return contextlib.nullcontext()
    ensure_model_call_limit(run.client.slots.capacity)
    return concurrency(MODEL_CALL_LIMIT, occupy=1)


def _cache_key(_context: Any, parameters: dict[str, Any]) -> str:
    return parameters["cache_key"]  # computed once per call, by prefect_calls


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
    task_run_name=MODEL_CALL_RUN_NAME,
    retries=MAX_ATTEMPTS - 1,
    retry_delay_seconds=0,  # the wait happens inside the task: it alone can read Retry-After
    retry_condition_fn=_transient,
    cache_key_fn=_cache_key,
    persist_result=True,
    log_prints=False,
)
def model_call(
    run_id: str, agent_id: str, step: int, request: dict[str, Any], cache_key: str
) -> dict[str, Any]:
    """One chat completion (one HTTP attempt per Prefect task attempt), cached under
    `cache_key` (devswarm.model.client.cache_key of the other parameters)."""
    run = get_run(run_id)
    attempt = task_run.run_count or 1
    try:
        with _call_slot(run):  # released before a retry's wait below
            return run.client.call(
                request,
                run_id=run_id,
                agent_id=agent_id,
                step=step,
                attempt=attempt,
                log=run.agent_log(agent_id),
                cache_key=cache_key,
            )
    except ModelCallError as exc:
        if exc.expected:  # returned, not raised: Prefect would log it as an ERROR with a traceback
            return {REFUSED: exc.as_dict()}
        if exc.transient and attempt < MAX_ATTEMPTS:
            time.sleep(backoff_seconds(exc, attempt))
        raise


def prefect_calls(run: Run, agent_id: str) -> ModelFn:
    """The agent's model function: every call goes through the `model_call` Prefect task."""

    def call(request: dict[str, Any], step: int) -> dict[str, Any]:
        if reason := run.ledger.exhausted:  # drained: no Prefect task run for a call never sent
            raise BudgetExhausted(reason)
        # quote: Prefect would walk the whole request (every message) twice per call looking for
        # futures, ~13 % of the swarm process's CPU (bench/scale.py); the task gets the dict.
        key = cache_key(run.run_id, agent_id, step, request)
        reply = model_call(run.run_id, agent_id, step, quote(request), key)
        if REFUSED in reply:  # the agent takes its fallback (or ends in one line)
            raise ModelCallError.from_dict(reply[REFUSED])
        return reply

    return call
