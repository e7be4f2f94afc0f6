"""Commit trailers: how git history joins DuckDB.

Every commit devswarm makes for a worker ends with `Devswarm-Run:`, `Devswarm-Task:` and
`Devswarm-Agent:` trailers (devswarm/ids.py); landed_trailers() lists what landed with them.
"""

from __future__ import annotations

import re
from pathlib import Path

from devswarm.git.plumbing import git
from devswarm.ids import TRAILERS

_TRAILER_KEY_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")


def message_with_trailers(message: str, trailers: dict[str, str]) -> str:
    """The message, a blank line, and one `Key: value` line per trailer (values on one line)."""
    body = message.strip() or "devswarm task"
    lines = []
    for key, value in trailers.items():
        if not _TRAILER_KEY_RE.fullmatch(key):
            raise ValueError(f"invalid trailer key: {key!r}")
        lines.append(f"{key}: {' '.join(str(value).split())}")
    return f"{body}\n\n" + "\n".join(lines) + "\n" if lines else f"{body}\n"


def read_trailers(clone: Path, rev_range: str) -> list[dict[str, str | None]]:
    """Commits in `rev_range`, oldest first, with their devswarm trailers: {"commit",
    "subject", "run", "task", "agent"} (None when a trailer is absent)."""
    fields = ["%H", "%s"] + [f"%(trailers:key={k},valueonly,unfold)" for k in TRAILERS.values()]
    fmt = "%x1f".join(fields) + "%x1e"
    out = git(
        clone, "log", "--reverse", f"--format={fmt}", "--end-of-options", rev_range, "--"
    ).stdout
    rows = []
    for record in out.split("\x1e"):
        parts = record.strip("\n").split("\x1f")
        if len(parts) != 2 + len(TRAILERS):
            continue
        row: dict[str, str | None] = {"commit": parts[0], "subject": parts[1]}
        for key, value in zip(TRAILERS, parts[2:], strict=True):
            row[key] = value.strip().split("\n")[0] or None
        rows.append(row)
    return rows


class LandedTasks:
    """The trailer methods of a workspace."""

    clone: Path
    ref: str
    base_commit: str

    def landed_trailers(self, rev_range: str | None = None) -> list[dict]:
        """Commits in `rev_range` (default base..branch), oldest first, with their devswarm
        trailers: {"commit", "subject", "run", "task", "agent"} (None when a trailer is absent)."""
        return read_trailers(self.clone, rev_range or f"{self.base_commit}..{self.ref}")
