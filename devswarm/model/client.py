"""One model call = one HTTP attempt through the official openai client, recorded as a row.

Retries are not done here (the client's own are off): the caller (a Prefect task) retries
transient failures visibly, so every attempt is one row that matches the server's request log.
What the endpoint accepts is learned as calls go (devswarm.model.capabilities): a refusal that
names a field is one warning line, and a server that reports no usage gets it estimated.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
import zlib
from typing import Any
from urllib.parse import urlsplit

import httpx
import openai
from openai.types.chat import ChatCompletion
from pydantic import SecretStr

from devswarm.errors import UserError
from devswarm.ids import model_call_cache_key
from devswarm.model.capabilities import (
    Capabilities,
    CapabilityBook,
    endpoint_concurrency,
    listed_models,
    props_limits,
)
from devswarm.model.errors import ModelCallError, from_status_error
from devswarm.model.ledger import Ledger
from devswarm.model.pricing import Price
from devswarm.model.probe import probe
from devswarm.model.slots import ModelSlots
from devswarm.records import RecordLog, now, span_id

POOL_SIZE = 32  # calls in flight per HTTP connection pool (see ModelClient)
log_ = logging.getLogger("devswarm.model")  # `log` is a RecordLog here


def request_hash(request: dict[str, Any]) -> str:
    """A stable hash of a chat request (messages, tools, model, format)."""
    blob = json.dumps(request, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def cache_key(run_id: str, agent_id: str, step: int, request: dict[str, Any]) -> str:
    """The cache key of one model call: Prefect caches the answer under it (tasks/model.py) and
    its `model_calls` row records it, with or without Prefect."""
    return model_call_cache_key(run_id, agent_id, step, request_hash(request))


def estimate_tokens(request: dict[str, Any]) -> int:
    """A cheap upper-ish estimate of a request's input tokens (4 characters a token)."""
    return math.ceil(len(json.dumps(request.get("messages", []), default=str)) / 4) + 64


def estimate_output_tokens(content: str | None, tool_calls: list[dict[str, Any]]) -> int:
    """An estimate of an answer's tokens (4 characters a token), for servers reporting none."""
    text = (content or "") + "".join(c["name"] + (c["arguments"] or "") for c in tool_calls)
    return max(1, math.ceil(len(text) / 4))


class InvalidResponse(Exception):
    """A 2xx answer that is not a chat completion."""


def _completion(raw: httpx.Response) -> ChatCompletion:
    """The answer as the client's ChatCompletion, built as leniently as the client builds it."""
    try:
        data = raw.json()
    except ValueError:
        raise InvalidResponse(f"the answer is not JSON: {raw.text[:200]!r}") from None
    if (
        not isinstance(data, dict)
        or not isinstance(data.get("choices"), list)
        or not data["choices"]
    ):
        raise InvalidResponse(f"the answer is not a chat completion: {raw.text[:200]!r}")
    return ChatCompletion.construct(**data)


class ModelClient:
    """A thread-safe wrapper around one OpenAI-compatible endpoint."""

    def __init__(
        self,
        base_url: str | None,
        api_key: SecretStr,
        *,
        timeout: float = 120.0,
        prices: dict[str, Price | None] | None = None,
        fallback_price: Price | None = None,
        ledger: Ledger | None = None,
        max_in_flight: int | None = None,
    ) -> None:
        """`max_in_flight`: model calls at once across the swarm; None: few for a loopback
        endpoint, many for a remote one (capabilities.endpoint_concurrency)."""
        self.base_url = base_url
        max_in_flight = endpoint_concurrency(base_url, max_in_flight)
        # One client (one connection pool) per POOL_SIZE calls in flight: httpcore scans every
        # connection of its pool when a request starts and when a response closes, so one pool
        # for 200 calls at once cost ~4 % of the swarm process's CPU (bench/scale.py, py-spy).
        self._clients = [
            openai.OpenAI(
                base_url=base_url,
                api_key=api_key.get_secret_value() or "not-needed",
                max_retries=0,
                timeout=timeout,
            )
            for _ in range(max(1, math.ceil(max_in_flight / POOL_SIZE)))
        ]
        self._client = self._clients[0]
        self._prices = prices or {}
        self._fallback = fallback_price or Price(input=5.0, output=15.0)
        self.ledger = ledger
        # A cap on calls in flight across the swarm, so parallel workers don't start 429 storms.
        self.slots = ModelSlots(max_in_flight)
        # What the endpoint accepts, per model; the host only in warnings (no credentials).
        self.book = CapabilityBook(urlsplit(str(self._client.base_url)).netloc.rpartition("@")[2])
        self.listing: Any = None  # GET /models, kept from preflight for the probe

    def pool(self, agent_id: str) -> openai.OpenAI:
        """The client (and connection pool) an agent's calls go through: always the same one."""
        return self._clients[zlib.crc32(agent_id.encode()) % len(self._clients)]

    def price(self, model: str) -> Price:
        return self._prices.get(model) or self._fallback

    def preflight(self) -> None:
        """Fail early, in one line, when the endpoint cannot be reached or refuses the key."""
        try:
            raw = self._client.get("/models", cast_to=httpx.Response, options={"timeout": 10.0})
        except openai.APIConnectionError as exc:
            raise UserError(
                f"cannot reach the model endpoint {self._client.base_url}: {exc}"
            ) from None
        except openai.AuthenticationError:
            raise UserError(
                f"the model endpoint {self._client.base_url} refused the API key (401)"
            ) from None
        except openai.APIStatusError:
            return  # some servers have no /models; the first chat call will tell
        try:
            self.listing = raw.json()
        except ValueError:
            self.listing = None

    def listed_models(self) -> set[str] | None:
        """The model ids GET /models listed at preflight; None when there was no listing."""
        if not isinstance(self.listing, dict) or not isinstance(self.listing.get("data"), list):
            return None
        return listed_models(self.listing)

    def probe(self, model: str, *, run_id: str, log: RecordLog | None) -> Capabilities:
        """Learn what the endpoint accepts for `model` (devswarm.model.probe)."""
        return probe(self, model, run_id=run_id, log=log)

    def remember(self, model: str, caps: Capabilities) -> None:
        """Take capabilities learned earlier (a resumed run's state): nothing is learned twice.
        A server with fewer parallel slots than calls allowed in flight gets fewer at once."""
        self.book.remember(model, caps)
        if caps.max_concurrent_requests is not None:
            self.slots.resize(min(self.slots.capacity, caps.max_concurrent_requests))

    def _fewer_at_once(self, model: str, error: ModelCallError) -> None:
        """The server is busy with the calls in flight: fewer at once from now on (requests
        queue in devswarm instead), remembered with the model's capabilities."""
        before, after = self.slots.busy()
        if after < before:
            self.book.update(model, max_concurrent_requests=after)
            log_.warning(
                "%s is busy (HTTP %s): at most %d model calls at once from now on",
                self.book.endpoint,
                error.status,
                after,
            )

    def props(self) -> dict[str, int]:
        """llama.cpp's GET /props (at the server's root, beside /v1); {} from other servers."""
        root = str(self._client.base_url).rstrip("/").removesuffix("/v1")
        try:
            raw = self._client.get(
                f"{root}/props", cast_to=httpx.Response, options={"timeout": 10.0}
            )
            return props_limits(raw.json())
        except (openai.APIError, ValueError):
            return {}

    def call(
        self,
        request: dict[str, Any],
        *,
        run_id: str,
        agent_id: str,
        step: int,
        attempt: int,
        log: RecordLog | None,
        cache_key: str | None = None,
    ) -> dict[str, Any]:
        """Send one chat request; return a JSON-safe reply dict or raise ModelCallError.
        Waits for a slot first (oldest agent first); the row's time starts with the slot.
        `cache_key`: the call's (devswarm.model.client.cache_key), recorded in its row."""
        with self.slots.hold(agent_id):
            model = request["model"]
            price = self.price(model)
            reservation = None
            if self.ledger is not None:
                worst_in = estimate_tokens(request)
                worst_out = int(
                    request.get("max_tokens") or request.get("max_completion_tokens") or 4096
                )
                reservation = self.ledger.reserve(
                    worst_in + worst_out, price.cost(worst_in, 0, worst_out)
                )
            started, t0 = now(), time.perf_counter()
            headers = {"X-Devswarm-Agent": agent_id, "X-Devswarm-Attempt": str(attempt)}
            row: dict[str, Any] = {
                "call_id": span_id(agent_id, str(step), str(attempt), started),
                "run_id": run_id,
                "agent_id": agent_id,
                "step": step,
                "attempt": attempt,
                "operation_name": "chat",
                "provider_name": "openai",
                "request_model": model,
                "started_at": started,
                "cache_key": cache_key,
                "span_id": span_id(agent_id, str(step), str(attempt), started, "llm"),
                "parent_span_id": span_id(agent_id),
            }
            tokens, cost = 0, 0.0
            try:
                # The client's own request path (auth, retries off, status errors, timeouts) with the
                # request as JSON already: `chat.completions.create` first walks every message
                # through its TypedDict transform, ~18 % of the swarm process's CPU (bench/scale.py).
                raw = self.pool(agent_id).post(
                    "/chat/completions",
                    body=request,
                    cast_to=httpx.Response,
                    options={"headers": headers},
                )
                row["http_status"] = raw.status_code
                completion = _completion(raw)
            except openai.APIStatusError as exc:
                error = from_status_error(exc, request)
                row.update(http_status=exc.status_code, error_type=error.error_type)
                self.book.learn(model, error, request)
                if error.busy:
                    self._fewer_at_once(model, error)
                raise error from None
            except openai.APITimeoutError:
                row.update(error_type="timeout")
                raise ModelCallError(
                    "the model call timed out", transient=True, error_type="timeout"
                ) from None
            except openai.APIConnectionError as exc:
                row.update(error_type="connection_error")
                raise ModelCallError(
                    str(exc), transient=True, error_type="connection_error"
                ) from None
            except (openai.APIResponseValidationError, InvalidResponse) as exc:
                row.update(error_type="invalid_response")
                raise ModelCallError(
                    str(exc)[:500], transient=True, error_type="invalid_response"
                ) from None
            else:
                usage = completion.usage
                choice = completion.choices[0]
                message = choice.message
                calls = [
                    {"id": c.id, "name": c.function.name, "arguments": c.function.arguments}
                    for c in (message.tool_calls or [])
                    if getattr(c, "function", None) is not None
                ]
                if calls and self.book.get(model).native_tools is None:
                    self.book.update(model, native_tools=True)  # seen: never doubted again
                estimated = usage is None or not (usage.prompt_tokens or usage.completion_tokens)
                if estimated:  # the server reports none: estimated, so budgets stay enforced
                    input_tokens = estimate_tokens(request)
                    output_tokens = estimate_output_tokens(message.content, calls)
                    self.book.usage_missing(model)
                else:
                    assert usage is not None
                    input_tokens = usage.prompt_tokens or 0
                    output_tokens = usage.completion_tokens or 0
                details = usage.prompt_tokens_details if usage else None
                cached = (details.cached_tokens or 0) if details else 0
                tokens, cost = (
                    input_tokens + output_tokens,
                    price.cost(input_tokens, cached, output_tokens),
                )
                reply = {
                    "content": message.content,
                    "tool_calls": calls,
                    "finish_reason": choice.finish_reason,
                    "input_tokens": input_tokens,
                    "output_tokens": output_tokens,
                    "cache_read_input_tokens": cached,
                    "cost_usd": cost,
                    "response_id": completion.id,
                    "response_model": completion.model,
                    "usage_estimated": estimated,
                }
                row.update(
                    http_status=raw.status_code,
                    response_id=completion.id,
                    response_model=completion.model,
                    input_tokens=input_tokens,
                    output_tokens=output_tokens,
                    cache_read_input_tokens=cached,
                    cost_usd=cost,
                    finish_reasons=json.dumps([choice.finish_reason]),
                    usage_estimated=estimated,
                )
                return reply
            finally:
                if reservation is not None and self.ledger is not None:
                    self.ledger.settle(reservation, tokens, cost)
                ended = now()
                row.update(ended_at=ended, duration_ms=round((time.perf_counter() - t0) * 1000, 3))
                if log is not None:
                    log.write("model_call", **row)
