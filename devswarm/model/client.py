"""One model call = one HTTP attempt through the official openai client, recorded as a row.

Retries are not done here (the client's own are off): the caller (a Prefect task) retries
transient failures visibly, so every attempt is one row that matches the server's request log.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
import zlib
from typing import Any

import httpx
import openai
from openai.types.chat import ChatCompletion
from pydantic import SecretStr

from devswarm.errors import UserError
from devswarm.model.errors import TRANSIENT_STATUS, ModelCallError
from devswarm.model.ledger import Ledger
from devswarm.model.pricing import Price
from devswarm.model.slots import ModelSlots
from devswarm.records import RecordLog, now, span_id

POOL_SIZE = 32  # calls in flight per HTTP connection pool (see ModelClient)


def request_hash(request: dict[str, Any]) -> str:
    """A stable hash of a chat request (messages, tools, model, format)."""
    blob = json.dumps(request, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def estimate_tokens(request: dict[str, Any]) -> int:
    """A cheap upper-ish estimate of a request's input tokens (4 characters a token)."""
    return math.ceil(len(json.dumps(request.get("messages", []), default=str)) / 4) + 64


def _retry_after(exc: openai.APIStatusError) -> float | None:
    value = exc.response.headers.get("retry-after") if exc.response is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _error_code(exc: openai.APIStatusError) -> str | None:
    body = exc.body if isinstance(exc.body, dict) else {}
    inner = body.get("error", body) if isinstance(body, dict) else {}
    return inner.get("code") if isinstance(inner, dict) else None


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
        max_in_flight: int = 32,
    ) -> None:
        self.base_url = base_url
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

    def pool(self, agent_id: str) -> openai.OpenAI:
        """The client (and connection pool) an agent's calls go through: always the same one."""
        return self._clients[zlib.crc32(agent_id.encode()) % len(self._clients)]

    def price(self, model: str) -> Price:
        return self._prices.get(model) or self._fallback

    def preflight(self) -> None:
        """Fail early, in one line, when the endpoint cannot be reached or refuses the key."""
        try:
            self._client.with_options(timeout=10.0).models.list()
        except openai.APIConnectionError as exc:
            raise UserError(
                f"cannot reach the model endpoint {self._client.base_url}: {exc}"
            ) from None
        except openai.AuthenticationError:
            raise UserError(
                f"the model endpoint {self._client.base_url} refused the API key (401)"
            ) from None
        except openai.APIStatusError:
            pass  # some servers have no /models; the first chat call will tell

    def chat(
        self,
        request: dict[str, Any],
        *,
        run_id: str,
        agent_id: str,
        step: int,
        attempt: int,
        log: RecordLog | None,
    ) -> dict[str, Any]:
        """Send one chat request; return a JSON-safe reply dict or raise ModelCallError.
        Waits for a slot first (oldest agent first); the row's time starts with the slot."""
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
                code = _error_code(exc)
                row.update(http_status=exc.status_code, error_type=code or type(exc).__name__)
                raise ModelCallError(
                    str(exc.message)[:500],
                    transient=exc.status_code in TRANSIENT_STATUS or exc.status_code >= 500,
                    status=exc.status_code,
                    error_type=code or type(exc).__name__,
                    retry_after=_retry_after(exc),
                ) from None
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
                input_tokens = usage.prompt_tokens if usage else 0
                output_tokens = usage.completion_tokens if usage else 0
                details = usage.prompt_tokens_details if usage else None
                cached = (details.cached_tokens or 0) if details else 0
                tokens, cost = (
                    input_tokens + output_tokens,
                    price.cost(input_tokens, cached, output_tokens),
                )
                choice = completion.choices[0]
                message = choice.message
                reply = {
                    "content": message.content,
                    "tool_calls": [
                        {"id": c.id, "name": c.function.name, "arguments": c.function.arguments}
                        for c in (message.tool_calls or [])
                        if getattr(c, "function", None) is not None
                    ],
                    "finish_reason": choice.finish_reason,
                    "input_tokens": input_tokens,
                    "output_tokens": output_tokens,
                    "cache_read_input_tokens": cached,
                    "cost_usd": cost,
                    "response_id": completion.id,
                    "response_model": completion.model,
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
                )
                return reply
            finally:
                if reservation is not None and self.ledger is not None:
                    self.ledger.settle(reservation, tokens, cost)
                ended = now()
                row.update(ended_at=ended, duration_ms=round((time.perf_counter() - t0) * 1000, 3))
                if log is not None:
                    log.write("llm_call", **row)
