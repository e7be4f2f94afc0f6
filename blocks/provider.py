"""Model provider block: any OpenAI-compatible endpoint, its key, a model per role, prices."""

from __future__ import annotations

from prefect.blocks.core import Block
from pydantic import Field, SecretStr

from devswarm.config import Models, Price


class ModelProvider(Block):
    """An OpenAI-compatible endpoint (OpenAI, vLLM, Ollama, llama.cpp server, ...)."""

    _block_type_slug = "devswarm-model-provider"
    _block_type_name = "devswarm model provider"
    _description = (
        "Where devswarm's agents get their models: base URL, API key, model per role, prices."
    )

    base_url: str | None = Field(
        default=None, description="e.g. https://api.openai.com/v1 or http://localhost:8000/v1"
    )
    api_key: SecretStr = Field(
        default=SecretStr(""), description="API key (stored encrypted; never logged)"
    )
    planner_model: str = "gpt-4.1"
    worker_model: str = "gpt-4.1-mini"
    judge_model: str = "gpt-4.1"
    prices: dict[str, Price] = Field(
        default_factory=dict, description="US$ per million tokens, per model"
    )

    def models(self) -> Models:
        return Models(planner=self.planner_model, worker=self.worker_model, judge=self.judge_model)
