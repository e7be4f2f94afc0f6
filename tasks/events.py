"""devswarm's own Prefect events, `devswarm.<noun>.<verb>`, for automations and the Event Feed.

Every event is about a run: its resource is `devswarm.run.<run id>`, labelled with what an
automation may want to match on (`devswarm.status` on a finished run). The task, the agent and
the branch come as related resources (roles `task`, `agent`, `branch`). Emitted inside a flow
run, Prefect adds the flow run, its flow and its deployment as related resources too, so an
automation can act on them (examples/automation.yaml pauses the deployment).

Payloads hold counts, names and short values only; any value that contains a secret (the
process's own keys and auth strings, or `secrets` passed in) is replaced, never sent.

The core says what happened through run.progress.notify (devswarm/run/progress.py, which names
the events); `events_to_prefect` forwards that to Prefect while a flow runs. `run.finished` is
emitted by the swarm flow run itself (`run_finished`), so it names the deployment that started it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from prefect.events import Event, emit_event

from devswarm.run.progress import EVENTS, EventName
from devswarm.run.run import Run
from devswarm.sandbox.redact import process_secrets

EVENT_NAMES: tuple[str, ...] = tuple(f"devswarm.{name}" for name in EVENTS)

REDACTED = "[redacted]"
_MAX_TEXT = 300  # payload strings are labels and reasons, never file contents or transcripts
_MAX_ITEMS = 50  # list values (file names, task keys) are cut too: an event has a size limit


def emit(
    name: EventName,
    run_id: str,
    *,
    status: str | None = None,
    task: str | None = None,
    agent: str | None = None,
    branch: str | None = None,
    payload: Mapping[str, Any] | None = None,
    secrets: Iterable[str] = (),
) -> Event | None:
    """Emit `devswarm.<name>` about run `run_id` to the Prefect API.

    `status` labels the run resource (`devswarm.status`, for automations to match on);
    `task`, `agent` and `branch` become related resources. `payload` values must be scalars
    or lists of them; strings and lists are cut short. Returns the event, or None where Prefect emits
    nothing (no API configured). Never raises for a failed delivery: events are a side channel.
    """
    if name not in EVENTS:
        raise ValueError(f"unknown devswarm event {name!r}; known: {', '.join(EVENT_NAMES)}")
    hide = _Redactor(secrets)
    resource = {"prefect.resource.id": f"devswarm.run.{run_id}", "prefect.resource.name": run_id}
    if status is not None:
        resource["devswarm.status"] = status
    related = [
        {
            "prefect.resource.id": f"devswarm.{role}.{ident}",
            "prefect.resource.role": role,
            "prefect.resource.name": value,
        }
        for role, value, ident in (
            ("task", task, f"{run_id}.{task}"),  # task keys are unique within a run only
            ("agent", agent, agent),
            ("branch", branch, branch),
        )
        if value
    ]
    return emit_event(
        event=f"devswarm.{name}",
        resource=hide.labels(resource),
        related=[hide.labels(r) for r in related],
        payload=hide.payload(payload or {}),
    )


@contextlib.contextmanager
def events_to_prefect(run: Run) -> Iterator[None]:
    """While the block runs, the run's events (run.progress.notify) are Prefect events about
    the run on its branch, its secrets redacted."""

    def sink(name: str, fields: dict[str, Any]) -> None:
        task, agent = fields.pop("task", None), fields.pop("agent", None)
        emit(name, run.run_id, task=task, agent=agent, branch=run.branch, payload=fields,
             secrets=run.secrets)  # fmt: skip

    run.progress.sinks.append(sink)
    try:
        yield
    finally:
        run.progress.sinks.remove(sink)


def run_finished(run: Run, status: str) -> None:
    """`devswarm.run.finished`, labelled with the run's status; call it in the swarm flow run."""
    emit(
        "run.finished",
        run.run_id,
        status=status,
        branch=run.branch,
        payload={
            "cycles": len(run.state.cycles),
            "tasks_landed": run.progress.board()["landed"],
            "tasks_not_landed": run.progress.not_landed(),
            "tokens": run.ledger.tokens,
            "cost_usd": round(run.ledger.cost, 6),
        },
        secrets=run.secrets,
    )


class _Redactor:
    """Replaces any string holding a secret: `secrets`, and this process's own credentials
    (environment variables named like KEY, TOKEN, SECRET, PASSWORD, AUTH...)."""

    def __init__(self, secrets: Iterable[str]) -> None:
        self.needles = process_secrets(secrets)

    def text(self, value: str) -> str:
        return REDACTED if any(n in value for n in self.needles) else value

    def labels(self, labels: dict[str, str]) -> dict[str, str]:
        return {k: self.text(v) for k, v in labels.items()}

    def payload(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        return {str(k): self._value(k, v) for k, v in payload.items()}

    def _value(self, key: str, value: Any) -> Any:
        if isinstance(value, (list, tuple)):
            return [self._value(key, v) for v in value[:_MAX_ITEMS]]
        if value is None or isinstance(value, (bool, int, float)):
            return value
        if isinstance(value, str):
            return self.text(value)[:_MAX_TEXT]  # judged whole: a cut could split a secret
        raise TypeError(f"event payload {key!r}: {type(value).__name__} is not a plain value")
