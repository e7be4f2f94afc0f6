"""Run reports registered for the report server: one file per registration in the server
folder's reports/ (0700), named by an unguessable token and naming one report file.

A run registers its report (`register_report`); the report server (report_http.py) serves a
report only for a token registered here, so nothing else of the file system is reachable.
"""

from __future__ import annotations

import json
import re
import secrets
from pathlib import Path

from devswarm.server.folder import ServerPaths, write_private

# secrets.token_urlsafe(32): 43 characters of [A-Za-z0-9_-]; anything else is not a token.
TOKEN = re.compile(r"[A-Za-z0-9_-]{43}")


def register_report(root: Path, report_path: Path, run_id: str) -> str:
    """Register `report_path` (a run's report.html) with the server folder `root`; its token."""
    paths = ServerPaths(root)
    paths.reports.mkdir(mode=0o700, exist_ok=True)
    token = secrets.token_urlsafe(32)
    entry = {"run_id": run_id, "path": str(Path(report_path).resolve())}
    write_private(paths.reports / f"{token}.json", json.dumps(entry))
    return token


def registered_report(root: Path, token: str) -> Path | None:
    """The report file registered under `token`, or None for anything not a registered token."""
    if not TOKEN.fullmatch(token):
        return None  # also keeps "..", "/" and the like out of the path below
    try:
        entry = json.loads((ServerPaths(root).reports / f"{token}.json").read_text())
        path = Path(entry["path"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return path if path.is_absolute() else None
