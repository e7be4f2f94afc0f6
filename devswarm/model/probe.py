"""The capability probe: what an endpoint accepts for one model, learned once per run.

Free reads first (the model listing; on this machine llama.cpp's /props: context window and
parallel slots), then one tiny chat request, recorded like any call and tried again on
transient failures: does the server take `response_format` json_schema and the output-limit
field, does it report usage. A model the endpoint neither lists nor serves is refused here, in
one line.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from devswarm.errors import UserError
from devswarm.ids import probe_id
from devswarm.model.capabilities import (
    Capabilities,
    is_loopback,
    listed_models,
    listed_window,
    probe_request,
)
from devswarm.model.errors import ModelCallError, backoff_seconds
from devswarm.records import RecordLog

if TYPE_CHECKING:
    from devswarm.model.client import ModelClient

PROBE_ATTEMPTS = 3  # tries on transient failures (429, 5xx, timeouts), as a model call gets
log_ = logging.getLogger("devswarm.model")


def probe(client: ModelClient, model: str, *, run_id: str, log: RecordLog | None) -> Capabilities:
    """What `client`'s endpoint accepts for `model`, learned and remembered in its book."""
    if client.listing is None:
        client.preflight()
    free: dict[str, int] = {}
    if (window := listed_window(client.listing, model)) is not None:
        free["context_window"] = window
    if is_loopback(client.base_url):
        free.update(client.props())
    client.remember(model, client.book.get(model).model_copy(update=free))
    request = probe_request(model, client.book.get(model).output_limit)
    try:
        _call(client, request, probe_id(run_id, model), run_id, log)
    except ModelCallError as exc:
        if exc.status == 404 and model not in listed_models(client.listing):
            # Ollama and gateways list only some of what they serve: unlisted alone is no
            # proof, unlisted and refused is.
            raise UserError(
                f"the model endpoint {client.book.endpoint} does not know the model {model!r} "
                f"(not listed by GET /models, and a call answered 404: {exc})"
            ) from None
        if exc.unsupported is None and exc.error_type != "context_length_exceeded":
            log_.warning("the capability probe of %s failed: %s: %s", model, exc.error_type, exc)
    else:
        client.book.update(model, json_schema=True)
    return client.book.get(model)


def _call(
    client: ModelClient, request: dict[str, Any], agent_id: str, run_id: str, log: RecordLog | None
) -> None:
    """The probe's request, tried again on transient failures like any model call."""
    for attempt in range(1, PROBE_ATTEMPTS + 1):
        try:
            client.call(request, run_id=run_id, agent_id=agent_id, step=0, attempt=attempt, log=log)
            return
        except ModelCallError as exc:
            if not exc.transient or attempt == PROBE_ATTEMPTS:
                raise
            time.sleep(backoff_seconds(exc, attempt))
