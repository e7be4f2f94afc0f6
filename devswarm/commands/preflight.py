"""What `devswarm run` and `resume` check before anything starts, so bad input is one line and
nothing is half-done: the repository and landing branch, the Prefect API the run would use, the
model ids the endpoint serves, and a working tree with changes the run will not see (a warning;
read without writing anything)."""

from __future__ import annotations

import base64
import os
from collections.abc import Iterable
from pathlib import Path

import httpx

from devswarm.config import SwarmConfig
from devswarm.errors import UserError
from devswarm.git.plumbing import check_branch_name
from devswarm.git.repo import open_repo, read_user_repository
from devswarm.ids import landing_branch
from devswarm.model.client import ModelClient


def check_repository(cfg: SwarmConfig) -> None:
    """Refuse, in one line and without writing anything, a repository path that is not a git
    repository, a landing branch name git refuses, or a branch checked out there."""
    branch = check_branch_name(cfg.branch or landing_branch(cfg.run_id or ""))
    read_user_repository(cfg.repo, branch)


def check_prefect_api() -> None:
    """Refuse, in one line, a PREFECT_API_URL that does not answer or refuses our credentials
    (otherwise Prefect would fail later with tracebacks, after a misleading note about its
    database). Without PREFECT_API_URL the run starts Prefect's temporary server: nothing to
    check."""
    url = os.environ.get("PREFECT_API_URL", "").strip()
    if not url:
        return
    base = url.rstrip("/")
    try:
        with httpx.Client(timeout=10.0) as client:
            client.get(f"{base}/health")  # answered without credentials
            answer = client.get(f"{base}/admin/version", headers=_credentials())
    except httpx.HTTPError as exc:
        why = str(exc) or type(exc).__name__
        raise UserError(
            f"cannot reach the Prefect API at {url} (PREFECT_API_URL): {why}; start that "
            "server, or unset PREFECT_API_URL to use a temporary one"
        ) from None
    if answer.status_code in (401, 403):
        given = "its credentials" if _credentials() else "a request without credentials"
        raise UserError(
            f"the Prefect API at {url} refused {given} ({answer.status_code}); set "
            "PREFECT_API_AUTH_STRING (devswarm server: the file <server folder>/auth)"
        )


def _credentials() -> dict[str, str]:
    """The header Prefect's client sends: basic auth from PREFECT_API_AUTH_STRING, else a
    bearer PREFECT_API_KEY (Prefect Cloud)."""
    if auth := os.environ.get("PREFECT_API_AUTH_STRING"):
        return {"Authorization": "Basic " + base64.b64encode(auth.encode()).decode()}
    if key := os.environ.get("PREFECT_API_KEY"):
        return {"Authorization": f"Bearer {key}"}
    return {}


def unlisted_warnings(client: ModelClient, models: Iterable[str]) -> list[str]:
    """A warning for each model the endpoint's GET /models does not list but serves (the
    capability probe, devswarm.model.probe, already refused one that is unlisted AND answers
    404: Ollama and gateways list only part of what they serve)."""
    listed = client.listed_models()
    if listed is None:
        return []
    return [
        f"warning: model {model!r} is not listed by the endpoint's GET /models; it answered "
        "a call, so the run goes on"
        for model in sorted(set(models) - listed)
    ]


def dirty_tree_warning(repo: Path, base: str) -> str | None:
    """One line when the user's working tree has changes the run will not see (it starts from
    the commit `base`), read without taking git's optional locks (open_repo), so not even the
    index is written."""
    try:
        with open_repo(repo) as r:
            changed = r.git.status("--porcelain", "--untracked-files=normal").splitlines()
            head = r.head.commit.hexsha if r.head.is_valid() else None
    except Exception:  # not our business here: the workspace says what is wrong with the repo
        return None
    if not changed or head is None:
        return None
    start = "HEAD" if base == head else "its landing branch"
    return (
        f"warning: {repo} has {len(changed)} uncommitted change(s); the run starts from {start} "
        f"({base[:12]}) and does not see them"
    )
