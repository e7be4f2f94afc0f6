"""The agent loop: one short obvious loop; Prefect only wraps the model call.

    messages → model → tool calls → observations → ... until finish (or a structured answer)

Recoverable problems (unknown tool, bad arguments, a command timeout, an answer that fails its
schema) go back to the model as messages; terminal ones (finished, limits, stuck, stopped) end
the loop with a status. Records and the transcript are written as they happen (each message a
line, flushed before the next action), so a crash never loses what happened.

Where the server is the problem (context too long, no structured output, the other output-limit
field, no native tools), devswarm.agent.compat picks the fallback and this loop carries it out.
With `text_tools` the tools are described in the prompt and the calls the model writes as text
(devswarm.agent.textcalls) take the same path as native ones: run in order, recorded as rows,
fed to the stuck detector; a call that cannot be read is a tool-call error row and a message
to the model. Their results go back in one user message (such servers may refuse tool roles).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from devswarm.agent.compat import (
    HARD_BUDGET,
    json_mode,
    json_mode_offered,
    next_fallback,
    parse_json_answer,
    prepare_messages,
    schema_prompt,
)
from devswarm.agent.stuck import NO_TOOL_CALL, StuckDetector
from devswarm.agent.textcalls import TextCalls, parse_text_calls, tool_responses, tools_prompt
from devswarm.agent.transcript import append_messages
from devswarm.config import AgentLimits
from devswarm.model.errors import ModelCallError
from devswarm.model.ledger import BudgetExhausted
from devswarm.records import RecordLog, now, span_id
from devswarm.tools.toolbox import Toolbox, ToolResult

ModelFn = Callable[[dict[str, Any], int], dict[str, Any]]
ToolWatcher = Callable[[int, str, str, ToolResult], None]  # (step, tool, arguments, result)
DRAINED = ("stopped", "budget_exhausted")  # ends that are the run's doing, not the model's


class Outcome(BaseModel):
    """How an agent run ended."""

    status: str  # finished | stuck | limit:<name> | budget_exhausted | stopped | error
    reason: str = ""
    steps: int = 0
    finish: dict[str, Any] | None = None  # the finish tool's arguments (workers)
    answer: dict[str, Any] | None = None  # the validated structured answer (planners, judges)
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0


class Agent:
    """One conversation with one model, its toolbox and its limits."""

    def __init__(
        self,
        *,
        agent_id: str,
        run_id: str,
        role: str,
        model: str,
        call: ModelFn,
        toolbox: Toolbox,
        system: str,
        user: str,
        limits: AgentLimits,
        log: RecordLog,
        transcript: Path | None = None,
        answer_schema: type[BaseModel] | None = None,
        should_stop: Callable[[], str | None] = lambda: None,
        stuck: StuckDetector | None = None,
        structured_output: bool = True,
        output_limit: str = "max_tokens",
        text_tools: bool = False,
        on_tool: ToolWatcher | None = None,
        redact: Callable[[str], str] = str,
        json_mode: bool = False,
        tools_unconfirmed: bool = False,
    ) -> None:
        """`call(request, step)` sends one chat request (retrying transient failures itself) and
        returns the reply dict of `ModelClient.chat`, or raises ModelCallError. With an
        `answer_schema` the agent ends on a valid JSON answer; without one, on `finish`.
        `structured_output=False`: never send `response_format` (the schema goes in the prompt).
        `output_limit`: the request field for `limits.max_output_tokens`; switched (and kept) when
        the server refuses it and names the other.
        `text_tools=True`: never send `tools`; describe them in the system prompt and read the
        calls the model writes as text (switched on when the server refuses `tools`).
        `on_tool(step, name, arguments, result)` hears each tool call after it ran (the log).
        `redact` cleans tool output and every saved line of the run's secrets (Run.redact):
        what a command printed reaches the model, the transcript and the records only so.
        `json_mode=True` (with structured_output=False): ask for JSON mode with the schema
        beside it (switched on when a refusal of json_schema offers json_object).
        `tools_unconfirmed=True`: the endpoint never answered a native tool call yet, so a reply
        without any call switches to text tools (the server may ignore `tools`)."""
        self.agent_id, self.run_id, self.role, self.model = agent_id, run_id, role, model
        self.call, self.toolbox, self.limits, self.log = call, toolbox, limits, log
        self.transcript = transcript
        self.answer_schema = answer_schema
        self.should_stop = should_stop
        self.stuck = stuck or StuckDetector()
        self.structured_output = structured_output
        self.output_limit = output_limit
        self.text_tools = text_tools
        self.on_tool = on_tool
        self.redact = redact
        self.json_mode = json_mode and not structured_output
        self.tools_unconfirmed = tools_unconfirmed
        self.specs = toolbox.specs()
        if text_tools and self.specs:
            system = f"{system}\n\n{tools_prompt(self.specs)}"
        self.messages: list[dict[str, Any]] = [
            {"role": "system", "content": system},
            {"role": "user", "content": user},
        ]
        if answer_schema is not None and not structured_output:
            self.messages.append({"role": "user", "content": schema_prompt(answer_schema)})
        self.outcome = Outcome(status="running")
        self.started = time.monotonic()
        self._saved = 0
        self._bad_answers = 0
        self._save()

    # -- the loop ---------------------------------------------------------------------------

    def run(self) -> Outcome:
        """Run until a terminal status; may be called again after `tell()`."""
        self.toolbox.forget()  # checks or a rebase may have changed files since the last run
        try:
            while True:
                if (end := self._limit_reached()) is not None:
                    return self._end(*end)
                try:
                    reply = self._query()
                except BudgetExhausted as exc:
                    return self._end("budget_exhausted", f"global budget exhausted: {exc}")
                except ModelCallError as exc:
                    return self._end("error", f"model call failed: {exc.error_type}: {exc}")
                if (done := self._observe(reply)) is not None:
                    return done
                if (pattern := self.stuck.check()) is not None:
                    return self._end("stuck", pattern)
        finally:
            self._save()

    def tell(self, text: str) -> None:
        """Give the agent a new message (a failed check, a conflict) before running it again."""
        self._add({"role": "user", "content": text})
        self.outcome = Outcome(status="running", steps=self.outcome.steps, **self._usage())

    # -- one step ---------------------------------------------------------------------------

    def _request(self, shorten_hard: bool) -> dict[str, Any]:
        messages = (
            prepare_messages(self.messages, budget=HARD_BUDGET, keep_recent=0)
            if shorten_hard
            else prepare_messages(self.messages)
        )
        request: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            self.output_limit: self.limits.max_output_tokens,
        }
        if self.specs and not self.text_tools:
            request["tools"] = self.specs
        if self.answer_schema is not None and self.structured_output:
            request["response_format"] = {
                "type": "json_schema",
                "json_schema": {
                    "name": self.answer_schema.__name__,
                    "schema": self.answer_schema.model_json_schema(),
                },
            }
        elif self.answer_schema is not None and self.json_mode:
            request["response_format"] = json_mode(self.answer_schema)
        return request

    def _query(self) -> dict[str, Any]:
        step = self.outcome.steps
        shorten_hard = False
        tried = {self.output_limit}
        while True:  # at most four sends: each fallback is taken once
            request = self._request(shorten_hard)
            try:
                reply = self.call(request, step)
                break
            except ModelCallError as exc:
                fallback = next_fallback(
                    exc,
                    request,
                    shortened=shorten_hard,
                    output_limit=self.output_limit,
                    tried_limits=tried,
                )
                if fallback is None:
                    raise
                kind, other = fallback
                if kind == "shorten":
                    shorten_hard = True  # cut every tool output and try once more
                elif kind == "output_limit" and other is not None:
                    tried.add(other)
                    self.output_limit = other  # for the rest of this agent (and its run)
                elif kind == "text_tools":
                    self.text_tools = True  # for the rest of this agent: tools in the prompt
                    self._add({"role": "user", "content": tools_prompt(self.specs)})
                else:
                    self._structured_output_off(json_mode_offered(exc))
        self.outcome.steps += 1
        self.outcome.input_tokens += reply.get("input_tokens", 0)
        self.outcome.output_tokens += reply.get("output_tokens", 0)
        self.outcome.cost_usd += reply.get("cost_usd", 0.0)
        return reply

    def _structured_output_off(self, json_mode_offered: bool) -> None:
        # Remembered for the rest of this agent: json_schema refused (then JSON mode, when the
        # refusal offered it), or JSON mode refused too. The schema goes in the prompt once.
        if self.structured_output:
            assert self.answer_schema is not None
            self._add({"role": "user", "content": schema_prompt(self.answer_schema)})
        self.json_mode = self.structured_output and json_mode_offered
        self.structured_output = False

    def _observe(self, reply: dict[str, Any]) -> Outcome | None:
        calls = reply.get("tool_calls") or []
        content = reply.get("content")
        written = TextCalls()
        if not calls and self.specs:  # text calls also where the server ignored `tools`
            written = parse_text_calls(content, self.specs)
        message: dict[str, Any] = {"role": "assistant", "content": content}
        if calls:
            message["tool_calls"] = [
                {
                    "id": c["id"],
                    "type": "function",
                    "function": {"name": c["name"], "arguments": c["arguments"]},
                }
                for c in calls
            ]
        if calls:
            self.tools_unconfirmed = False
        self._add(message)  # saved before any tool runs: a kill mid-command keeps the intent
        step = self.outcome.steps - 1
        if not calls and not written.attempted:
            return self._answer(content)
        finished: dict[str, Any] | None = None
        responses: list[tuple[str, str]] = []
        for c in calls or written.calls:
            result = self._run(step, c["id"], c["name"], c["arguments"])
            if calls:
                self._add({"role": "tool", "tool_call_id": c["id"], "content": result.output})
            responses.append((c["name"], result.output))
            if result.finish is not None:
                finished = result.finish
        for e in written.errors:
            name = e["name"] or "(unread)"
            output = f'{e["error"]}. Write each call as <tool_call>{{"name": ..., "arguments": {{...}}}}</tool_call>.'
            self._record(step, str(e["id"]), name, str(e["written"]), output, "invalid_tool_call")
            self.stuck.add(f"{name} {e['written']}", output, "invalid_tool_call")
            responses.append((name, output))
        if not calls:
            self._add({"role": "user", "content": tool_responses(responses)})
        if finished is not None:
            self.outcome.finish = finished
            return self._end("finished", "")
        return None

    def _run(self, step: int, call_id: str, name: str, arguments: str) -> ToolResult:
        """Run one tool call, record it as a row and feed the stuck detector."""
        t0, started = time.perf_counter(), now()
        result = self._call_tool(name, arguments)
        result.output = self.redact(result.output)
        self._record(
            step, call_id, name, str(arguments), result.output, result.error_type, t0, started
        )
        self.stuck.add(f"{name} {arguments}", result.output, result.error_type)
        if self.on_tool is not None:
            self.on_tool(step, name, str(arguments), result)
        return result

    def _record(
        self,
        step: int,
        call_id: str,
        name: str,
        arguments: str,
        output: str,
        error_type: str | None,
        t0: float | None = None,
        started: str | None = None,
    ) -> None:
        self.log.write(
            "tool_call",
            run_id=self.run_id,
            agent_id=self.agent_id,
            step=step,
            tool_call_id=call_id,
            tool_name=name,
            arguments=self.redact(arguments)[:4096],
            output_excerpt=self.redact(output)[:2048],
            error_type=error_type,
            duration_ms=round((time.perf_counter() - t0) * 1000, 3) if t0 is not None else 0.0,
            started_at=started or now(),
            span_id=span_id(self.agent_id, str(step), call_id),
            parent_span_id=span_id(self.agent_id),
        )

    def _call_tool(self, name: str, arguments: str) -> ToolResult:
        try:
            return self.toolbox.call(name, arguments)
        except Exception as exc:  # a bug in a tool must not kill an unattended worker
            return ToolResult(
                output=f"{name} failed inside devswarm ({type(exc).__name__}: {exc}); "
                "try another way",
                error_type="internal_error",
            )

    def _answer(self, content: str | None) -> Outcome | None:
        if self.answer_schema is None:
            self.stuck.add(NO_TOOL_CALL, content or "")
            nudge = "Use the tools to do the work; call `finish` when the task is done."
            if self.tools_unconfirmed and not self.text_tools and self.specs:
                # No call at all from an endpoint never seen to answer one natively: it may
                # ignore `tools` (llama.cpp without --jinja), so the model never saw them.
                self.text_tools = True
                nudge = f"{nudge}\n\n{tools_prompt(self.specs)}"
            self._add({"role": "user", "content": nudge})
            return None
        try:
            answer = parse_json_answer(content, self.answer_schema)
        except (ValidationError, ValueError) as exc:
            self._bad_answers += 1
            if self._bad_answers > 2:
                return self._end("error", f"no valid {self.answer_schema.__name__} after 3 answers")
            errors = str(exc).splitlines()[:12]
            self._add(
                {
                    "role": "user",
                    "content": f"That answer is not a valid {self.answer_schema.__name__} JSON object:\n"
                    + "\n".join(errors)
                    + "\nReply with the corrected JSON object only.",
                }
            )
            return None
        self.outcome.answer = answer.model_dump(mode="json")
        return self._end("finished", "")

    # -- limits, records --------------------------------------------------------------------

    def _limit_reached(self) -> tuple[str, str] | None:
        if reason := self.should_stop():
            return "stopped", reason
        o, lim = self.outcome, self.limits
        if o.steps >= lim.max_steps:
            return "limit:steps", f"reached {lim.max_steps} steps"
        if o.input_tokens + o.output_tokens >= lim.max_tokens:
            return (
                "limit:tokens",
                f"used {o.input_tokens + o.output_tokens} tokens (cap {lim.max_tokens})",
            )
        if o.cost_usd >= lim.max_cost_usd:
            return "limit:cost", f"spent ${o.cost_usd:.4f} (cap ${lim.max_cost_usd})"
        if time.monotonic() - self.started >= lim.max_wall_seconds:
            return "limit:wall_seconds", f"ran {lim.max_wall_seconds:g} s (cap)"
        return None

    def _usage(self) -> dict[str, Any]:
        o = self.outcome
        return {
            "input_tokens": o.input_tokens,
            "output_tokens": o.output_tokens,
            "cost_usd": o.cost_usd,
        }

    def _end(self, status: str, reason: str) -> Outcome:
        self.outcome.status, self.outcome.reason = status, reason
        return self.outcome

    def _add(self, message: dict[str, Any]) -> None:
        self.messages.append(message)
        self._save()

    def _save(self) -> None:
        """Append the messages not yet saved to the transcript (redacted of the run's secrets):
        called after every message, so the file is never more than one message behind."""
        if self.transcript is not None and self._saved < len(self.messages):
            messages = self.messages[self._saved :]
            append_messages(self.transcript, self.agent_id, messages, redact=self.redact)
            self._saved = len(self.messages)
