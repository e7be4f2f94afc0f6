"""Shared fixtures: a real Prefect test server, real git repositories, the offline model server."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

GIT_ENV = {
    "GIT_AUTHOR_NAME": "Test User",
    "GIT_AUTHOR_EMAIL": "user@example.invalid",
    "GIT_COMMITTER_NAME": "Test User",
    "GIT_COMMITTER_EMAIL": "user@example.invalid",
}


# The tests' own git: no hooks, no fsmonitor, no signing, and no machine's global or system
# config (so no driver, filter or identity of whoever runs the tests, and none planted by one).
_SAFE = (
    "-c",
    "core.hooksPath=/dev/null",
    "-c",
    "core.fsmonitor=false",
    "-c",
    "commit.gpgsign=false",
)


def git(cwd: Path, *args: str, check: bool = True, env: dict[str, str] | None = None) -> str:
    """Run git as the user would (their identity), returning stdout."""
    full = {**os.environ, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1", **GIT_ENV}
    proc = subprocess.run(
        ["git", *_SAFE, *args], cwd=cwd, env={**full, **(env or {})}, capture_output=True, text=True
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"git {args} failed: {proc.stderr}")
    return proc.stdout.strip()


@pytest.fixture
def isolated_git_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No global or system git config from the machine running the tests, for devswarm's git
    too (a module opts in: `pytestmark = pytest.mark.usefixtures("isolated_git_config")`)."""
    home = tmp_path / "userhome"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.delenv("GIT_CONFIG_GLOBAL", raising=False)


def make_repo(path: Path, files: dict[str, str], branch: str = "main") -> Path:
    """A user repository with one commit holding `files`."""
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q", "-b", branch)
    for name, text in files.items():
        f = path / name
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(text)
    git(path, "add", "-A")
    git(path, "-c", "commit.gpgsign=false", "commit", "-q", "--no-verify", "-m", "initial")
    return path


def snapshot(repo: Path) -> dict[str, Any]:
    """Everything of the user's repository a swarm must not touch (except its landing branch),
    read without writing anything (no optional locks: `git status` may otherwise refresh the
    index), the index's bytes included."""
    files = {
        str(p.relative_to(repo)): p.read_bytes()
        for p in sorted(repo.rglob("*"))
        if p.is_file() and ".git" not in p.relative_to(repo).parts
    }
    return {
        "head": git(repo, "symbolic-ref", "-q", "HEAD"),
        "head_commit": git(repo, "rev-parse", "HEAD"),
        "status": git(repo, "--no-optional-locks", "status", "--porcelain"),
        "index": hashlib.sha256((repo / ".git" / "index").read_bytes()).hexdigest(),
        "config": (repo / ".git" / "config").read_text(),
        "branches": {
            line.split()[1]: line.split()[0]
            for line in git(
                repo, "for-each-ref", "--format=%(objectname) %(refname)", "refs/heads"
            ).splitlines()
            if not line.split()[1].startswith("refs/heads/devswarm/")
        },
        "files": files,
    }


def chat_requests(log: Path) -> list[dict]:
    """The offline server's request log, chat completions only."""
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    return [r for r in lines if r["path"].endswith("/chat/completions")]


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """One real (temporary) Prefect server for the whole test session."""
    from prefect.testing.utilities import prefect_test_harness

    os.environ["PREFECT_RESULTS_LOCAL_STORAGE_PATH"] = str(
        tmp_path_factory.mktemp("prefect-results")
    )
    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def swarm_run(prefect_server: None, tmp_path: Path):
    """Run a whole swarm through real Prefect against a scenario; returns (summary, request log)."""
    from devswarm.commands.runtime import run_swarm
    from devswarm.config import Models, SwarmConfig
    from devswarm.offline.server import ModelServer, Scenario

    def run(scenario: dict, repo: Path, **options: Any) -> tuple[dict, Path]:
        log = tmp_path / f"requests-{len(list(tmp_path.glob('requests-*')))}.jsonl"
        with ModelServer(Scenario.from_data(scenario), log_path=log) as server:
            cfg = SwarmConfig(
                goal=options.pop("goal", "Make the tests pass."),
                repo=repo,
                base_url=server.url,
                models=Models.single("offline-model"),
                home=tmp_path / "data",
                max_cycles=options.pop("max_cycles", 1),
                max_workers=options.pop("max_workers", 4),
                **options,
            )
            os.environ["OPENAI_API_KEY"] = "sk-test-secret-0123456789"
            summary = run_swarm(cfg)
        return summary, log

    return run
