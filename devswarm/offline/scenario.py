"""The offline server's scenario: what it answers, as pydantic models, and how a file is loaded.

The format is documented in docs/model-server.md.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from devswarm.errors import UserError


class _Strict(BaseModel):
    # A typo in a scenario should fail loudly, not silently change the script.
    model_config = ConfigDict(extra="forbid")


class ScriptedFail(_Strict):
    """A scripted fault: answer `status` while the request's attempt <= `attempts`."""

    status: int = Field(ge=400, le=599)
    retry_after: float | None = Field(default=None, ge=0)
    attempts: int = Field(default=1, ge=1)
    message: str | None = None


class ToolCallSpec(_Strict):
    """One tool call in a scripted reply; `arguments` is JSON-encoded unless already a string."""

    name: str = Field(min_length=1)
    arguments: dict[str, Any] | str = Field(default_factory=dict)


class Reply(_Strict):
    """One scripted assistant reply."""

    content: str | None = None
    tool_calls: list[ToolCallSpec] = Field(default_factory=list)
    json_value: Any = Field(default=None, alias="json")
    latency: float | None = Field(default=None, ge=0)
    fail: ScriptedFail | None = None

    @model_validator(mode="after")
    def _content_or_json(self) -> Reply:
        if self.has_json and self.content is not None:
            raise ValueError("a reply has either content or json, not both")
        return self

    @property
    def has_json(self) -> bool:
        """Whether the scenario gave a `json` key (its value may be null)."""
        return "json_value" in self.model_fields_set

    def text(self) -> str | None:
        """The assistant message content this reply produces."""
        if self.has_json:
            return json.dumps(self.json_value, ensure_ascii=False)
        if self.content is None and not self.tool_calls:
            return ""
        return self.content


class StatusFault(_Strict):
    """Answer with an HTTP error status (and a Retry-After header when given)."""

    type: Literal["status"]
    status: int = Field(ge=400, le=599)
    retry_after: float | None = Field(default=None, ge=0)
    weight: float = Field(default=1.0, gt=0)


class TimeoutFault(_Strict):
    """Sleep `delay` seconds, then answer normally (the client has usually given up by then)."""

    type: Literal["timeout"]
    delay: float = Field(default=30.0, ge=0)
    weight: float = Field(default=1.0, gt=0)


class MalformedArgumentsFault(_Strict):
    """Cut the first tool call's arguments so they are not valid JSON."""

    type: Literal["malformed_arguments"]
    weight: float = Field(default=1.0, gt=0)


class ContextLengthFault(_Strict):
    """Answer 400 context_length_exceeded as OpenAI does."""

    type: Literal["context_length_exceeded"]
    weight: float = Field(default=1.0, gt=0)


FaultKind = Annotated[
    StatusFault | TimeoutFault | MalformedArgumentsFault | ContextLengthFault,
    Field(discriminator="type"),
]


class Faults(_Strict):
    """Seeded random faults: a fraction `rate` of requests with attempt <= max_attempt."""

    seed: int | str = 0
    rate: float = Field(default=0.0, ge=0.0, le=1.0)
    max_attempt: int = Field(default=3, ge=0)
    kinds: list[FaultKind] = Field(default_factory=list)

    @model_validator(mode="after")
    def _kinds_when_rate(self) -> Faults:
        if self.rate > 0 and not self.kinds:
            raise ValueError("faults.rate > 0 needs at least one entry in faults.kinds")
        return self


class Rule(_Strict):
    """Steps for agents matching `match` once a user/tool message contains `contains`."""

    match: str = "*"
    contains: str = Field(min_length=1)
    steps: list[Reply] = Field(default_factory=list)


class AgentScript(_Strict):
    """Steps for agents whose id matches the fnmatch pattern `match`."""

    match: str
    steps: list[Reply] = Field(default_factory=list)


class ServerProfile(_Strict):
    """Where the server behaves like a weak one (vLLM, Ollama, llama.cpp, LM Studio, a gateway).

    Every default is OpenAI's behaviour. A refusal is named for the server whose answer (status
    and body) it imitates; docs/model-server.md shows each.
    """

    json_schema: Literal["accepted", "vllm", "fastapi", "llama.cpp", "llama-cpp-python"] = (
        "accepted"
    )
    json_object: Literal["accepted", "lm-studio"] = "accepted"
    # Native tool calls, or none: `tools` ignored, or refused by Ollama's or vLLM's rule.
    tools: Literal["native", "ignored", "ollama", "vllm"] = "native"
    # Without native tool calls, scripted calls come back as text in this model's style.
    tool_call_text: Literal["hermes", "llama3", "mistral", "fenced", "json"] = "hermes"
    usage: bool = True  # false: completions carry no `usage` object
    # What GET /v1/models lists, when not every served model (gateways list partially).
    listed_models: list[str] | None = None
    # Chat requests answered at once; past it, `reject` (Ollama's 503) or `queue` (llama.cpp).
    max_concurrent: int | None = Field(default=None, ge=1)
    when_busy: Literal["reject", "queue"] = "reject"


class Scenario(_Strict):
    """What the offline server answers; see docs/model-server.md."""

    models: list[str] = Field(default_factory=lambda: ["offline-model"], min_length=1)
    latency: float = Field(default=0.0, ge=0)
    structured_output: Literal["json_schema", "json_object", "none"] = "json_schema"
    # The request field capping the answer's length: OpenAI's newest models refuse max_tokens.
    output_limit: Literal["max_tokens", "max_completion_tokens", "either"] = "either"
    faults: Faults = Field(default_factory=Faults)
    rules: list[Rule] = Field(default_factory=list)
    agents: list[AgentScript] = Field(default_factory=list)
    default: Reply | None = None
    server: ServerProfile = Field(default_factory=ServerProfile)

    @model_validator(mode="after")
    def _consistent_server(self) -> Scenario:
        profile = self.server
        # `structured_output` is the older, shorter form: two settings for one thing would clash.
        if self.structured_output != "json_schema" and (
            profile.json_schema != "accepted" or profile.json_object != "accepted"
        ):
            raise ValueError("give structured_output or server.json_schema/json_object, not both")
        unserved = sorted(set(profile.listed_models or []) - set(self.models))
        if unserved:
            raise ValueError(f"server.listed_models names models not in models: {unserved}")
        return self

    @classmethod
    def from_data(cls, data: object, source: str = "scenario") -> Scenario:
        """Validate a parsed scenario; raises UserError with a one-line message."""
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            errors = exc.errors()
            first = errors[0]
            where = ".".join(str(part) for part in first["loc"]) or "(top level)"
            more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
            raise UserError(f"{source}: {where}: {first['msg']}{more}") from None

    @classmethod
    def load(cls, path: Path) -> Scenario:
        """Read and validate a scenario JSON file; raises UserError with a one-line message."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise UserError(f"scenario file not found: {path}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise UserError(f"cannot read scenario {path}: {exc}") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UserError(
                f"{path}: not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
            ) from None
        return cls.from_data(data, source=str(path))
