"""An agent's transcript: JSONL, one message a line, appended as the conversation goes."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from devswarm.records import now


def append_messages(
    path: Path,
    agent_id: str,
    messages: list[dict[str, Any]],
    *,
    redact: Callable[[str], str] = str,
) -> None:
    """Append `messages` to the transcript at `path`, each line passed through `redact` (the
    run's secrets). Each line is written whole and flushed (closing the file), so a kill
    leaves at most a torn last line, which readers skip."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as f:
        for m in messages:
            line = json.dumps({"agent_id": agent_id, "at": now(), "message": m}, default=str)
            f.write(redact(line) + "\n")
            f.flush()
