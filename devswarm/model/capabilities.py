"""What one endpoint and model accept, learned once and remembered (also in a run's state).

Learned cheaply: the model listing and, on a loopback endpoint, llama.cpp's /props (context
window, parallel slots) cost no tokens; one tiny chat request tells whether `response_format`
json_schema and the output-limit field are accepted and whether usage is reported. Everything
else is learned from the first refusal that names it (see devswarm.model.errors), never by
sending the same refused request twice.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, Field

if TYPE_CHECKING:
    from devswarm.model.errors import ModelCallError

log = logging.getLogger("devswarm.model")
OutputLimit = Literal["max_tokens", "max_completion_tokens"]
LOOPBACK_CONCURRENCY = 4  # a laptop's llama.cpp, Ollama or LM Studio serves few requests at once
REMOTE_CONCURRENCY = 32  # a hosted endpoint: its rate limits, not its slots, are the bound
# Where OpenAI-compatible servers list a model's context window in GET /models.
WINDOW_KEYS = ("max_model_len", "context_window", "context_length", "max_context_length")


class Capabilities(BaseModel):
    """What an endpoint accepts for one model; None: not known yet."""

    json_schema: bool | None = None  # response_format {"type": "json_schema"}
    json_object: bool | None = None  # response_format {"type": "json_object"}
    native_tools: bool | None = None  # the `tools` field (False: describe tools in the prompt)
    parallel_tool_calls: bool | None = None  # the `parallel_tool_calls` field
    output_limit: OutputLimit = "max_tokens"  # the field that caps an answer's length
    usage_reported: bool | None = None  # False: devswarm estimates tokens itself
    context_window: int | None = Field(default=None, ge=1)  # tokens
    max_concurrent_requests: int | None = Field(default=None, ge=1)

    def refused(self, field: str, request: dict[str, Any]) -> Capabilities:
        """These capabilities after the server refused `field` of `request`."""
        update: dict[str, Any] = {}
        if field == "response_format":
            kind = (request.get("response_format") or {}).get("type")
            if kind in ("json_schema", "json_object"):
                update[kind] = False
        elif field == "tools":
            update["native_tools"] = False
        elif field == "parallel_tool_calls":
            update["parallel_tool_calls"] = False
        elif field in ("max_tokens", "max_completion_tokens"):
            update["output_limit"] = (
                "max_completion_tokens" if field == "max_tokens" else "max_tokens"
            )
        return self.model_copy(update=update)

    def agent_options(self) -> dict[str, Any]:
        """The Agent's constructor options these capabilities call for."""
        return {
            "structured_output": self.json_schema is not False,
            "output_limit": self.output_limit,
            "text_tools": self.native_tools is False,
            "json_mode": self.json_schema is False and self.json_object is True,
            "tools_unconfirmed": self.native_tools is None,
        }


class CapabilityBook:
    """Capabilities per model of one endpoint, learned as calls go (thread-safe); each new
    limitation is said once, in one warning line."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint  # host and port only: never credentials
        self._caps: dict[str, Capabilities] = {}
        self._lock = threading.Lock()
        self._said: set[tuple[str, str]] = set()

    def get(self, model: str) -> Capabilities:
        """What is known for `model` (a copy)."""
        with self._lock:
            return self._caps.get(model, Capabilities()).model_copy()

    def remember(self, model: str, caps: Capabilities) -> None:
        """Replace what is known for `model` (e.g. from a resumed run's state)."""
        with self._lock:
            self._caps[model] = caps.model_copy()

    def update(self, model: str, **fields: Any) -> None:
        """Set some fields for `model`."""
        with self._lock:
            self._caps[model] = self._caps.get(model, Capabilities()).model_copy(update=fields)

    def learn(self, model: str, error: ModelCallError, request: dict[str, Any]) -> None:
        """Take what a failed request taught: a refused field, a context window."""
        if error.unsupported is None and error.context_window is None:
            return
        with self._lock:
            caps = self._caps.get(model, Capabilities())
            if error.unsupported is not None:
                caps = caps.refused(error.unsupported, request)
                kind = (request.get("response_format") or {}).get("type")
                if kind == "json_schema" and "json_object" in str(error):
                    caps = caps.model_copy(update={"json_object": True})  # offered instead
            if error.context_window is not None:
                caps = caps.model_copy(update={"context_window": error.context_window})
            self._caps[model] = caps
        if error.unsupported is not None:
            self._say(
                model,
                error.unsupported,
                f"{self.endpoint} does not accept {error.unsupported} for {model} "
                f"(HTTP {error.status}); devswarm works around it",
            )

    def usage_missing(self, model: str) -> None:
        """The endpoint answered without token usage: remember it, say it once."""
        self.update(model, usage_reported=False)
        self._say(
            model,
            "usage",
            f"{self.endpoint} reports no token usage for {model}; devswarm estimates it "
            "(4 characters a token) and marks those calls usage_estimated",
        )

    def _say(self, model: str, what: str, line: str) -> None:
        with self._lock:
            if (model, what) in self._said:
                return
            self._said.add((model, what))
        log.warning(line)


def is_loopback(base_url: str | None) -> bool:
    """Whether the endpoint is on this machine (127.0.0.0/8, ::1, localhost)."""
    host = urlsplit(base_url or "").hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def endpoint_concurrency(base_url: str | None, configured: int | None = None) -> int:
    """Model calls in flight at once: as configured, else few for a loopback server (requests
    queue in devswarm rather than time out in the server), else many."""
    if configured is not None:
        return max(1, configured)
    return LOOPBACK_CONCURRENCY if is_loopback(base_url) else REMOTE_CONCURRENCY


def listed_models(listing: Any) -> set[str]:
    """The model ids GET /models listed (none when it answered nothing usable)."""
    entries = listing.get("data") if isinstance(listing, dict) else None
    return {
        e["id"]
        for e in (entries if isinstance(entries, list) else [])
        if isinstance(e, dict) and isinstance(e.get("id"), str)
    }


def listed_window(listing: Any, model: str) -> int | None:
    """The context window GET /models gives for `model` (vLLM's max_model_len and the like)."""
    entries = listing.get("data") if isinstance(listing, dict) else None
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, dict) or entry.get("id") != model:
            continue
        for source in (entry, entry.get("meta")):
            if isinstance(source, dict):
                for key in (*WINDOW_KEYS, "n_ctx"):  # not n_ctx_train: not what is served
                    if isinstance(source.get(key), int) and source[key] > 0:
                        return source[key]
    return None


def props_limits(props: Any) -> dict[str, int]:
    """Context window and parallel slots from llama.cpp's GET /props."""
    found: dict[str, int] = {}
    if not isinstance(props, dict):
        return found
    settings = props.get("default_generation_settings")
    n_ctx = settings.get("n_ctx") if isinstance(settings, dict) else None
    if isinstance(n_ctx, int) and n_ctx > 0:
        found["context_window"] = n_ctx
    slots = props.get("total_slots")
    if isinstance(slots, int) and slots > 0:
        found["max_concurrent_requests"] = slots
    return found


def probe_request(model: str, output_limit: OutputLimit) -> dict[str, Any]:
    """The one tiny chat request of a probe: does the server take json_schema and this field?"""
    return {
        "model": model,
        "messages": [{"role": "user", "content": 'Reply with the JSON object {"ok": true}.'}],
        output_limit: 16,
        "response_format": {
            "type": "json_schema",
            "json_schema": {
                "name": "Probe",
                "schema": {
                    "type": "object",
                    "properties": {"ok": {"type": "boolean"}},
                    "required": ["ok"],
                },
            },
        },
    }
