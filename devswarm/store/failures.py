"""DuckDB's errors as the one line a user sees, with "busy" (another process holds the file)
told apart, since that one is worth retrying shortly."""

from __future__ import annotations

from pathlib import Path

from devswarm.errors import UserError


def is_lock_error(exc: BaseException) -> bool:
    """True if DuckDB's ``exc`` says the file is held: by another process (IOException "Could
    not set lock ... Conflicting lock"), or by this process with another configuration."""
    text = str(exc)
    return (
        "Could not set lock" in text
        or "Conflicting lock" in text
        or "different configuration" in text
    )


def is_busy(exc: BaseException | None) -> bool:
    """True if ``exc`` says another process holds a store file (worth retrying shortly)."""
    while exc is not None:
        if is_lock_error(exc):
            return True
        exc = exc.__cause__  # a UserError raised from DuckDB's lock error
    return False


def busy_error(path: Path) -> UserError:
    """The error for a store file another process is writing."""
    return UserError(
        f"the store {path} is being written by another process; try again when the run ends"
    )


def one_line(exc: BaseException) -> str:
    """The first line of an error's message (DuckDB's run to several)."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
