"""What model calls cost: US dollars per million tokens, and list prices of common models."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

# A price is a finite amount, 0 for free (a nan would make every dollar cap pass).
Rate = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class Price(BaseModel):
    """US dollars per million tokens."""

    model_config = ConfigDict(extra="forbid")

    input: Rate
    cached_input: Rate | None = None
    output: Rate

    def cost(self, input_tokens: int, cached_tokens: int, output_tokens: int) -> float:
        """Cost of one call; cached input tokens are billed once, at the cached rate."""
        cached_rate = self.input if self.cached_input is None else self.cached_input
        fresh = max(0, input_tokens - cached_tokens)
        return (
            fresh * self.input + cached_tokens * cached_rate + output_tokens * self.output
        ) / 1e6


# A few list prices so common models are costed out of the box; anything else falls back.
KNOWN_PRICES: dict[str, Price] = {
    "gpt-4.1": Price(input=2.0, cached_input=0.5, output=8.0),
    "gpt-4.1-mini": Price(input=0.4, cached_input=0.1, output=1.6),
    "gpt-4o": Price(input=2.5, cached_input=1.25, output=10.0),
    "gpt-4o-mini": Price(input=0.15, cached_input=0.075, output=0.6),
    "offline-model": Price(input=1.0, cached_input=0.1, output=4.0),
}
