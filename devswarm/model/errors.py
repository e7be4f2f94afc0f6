"""A failed model call, and how long to wait before trying it again."""

from __future__ import annotations

TRANSIENT_STATUS = {408, 409, 425, 429}
MAX_BACKOFF = 60.0  # seconds; a longer Retry-After is cut to this


class ModelCallError(Exception):
    """A failed HTTP attempt. `transient` ones are worth retrying."""

    def __init__(
        self,
        message: str,
        *,
        transient: bool,
        status: int | None = None,
        error_type: str = "error",
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.transient = transient
        self.status = status
        self.error_type = error_type
        self.retry_after = retry_after


def backoff_seconds(exc: ModelCallError, attempt: int) -> float:
    """How long to wait before attempt `attempt + 1`: the server's Retry-After when it sent one
    (0 included: it means now), else 1 s, 2 s, 4 s, ... doubling; never more than a minute."""
    wait = exc.retry_after if exc.retry_after is not None else 0.5 * 2**attempt
    return min(wait, MAX_BACKOFF)
