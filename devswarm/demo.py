"""`devswarm demo`: the bundled repository, the offline model server, a real swarm run."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from devswarm.errors import UserError

DEMO = Path(__file__).parent / "demo"
MARKER = ".devswarm-demo"
DEMO_KEY = "sk-offline-demo-key"
CHECK = "python -m unittest discover -s tests -t ."
GIT_ENV = {
    "GIT_AUTHOR_NAME": "devswarm demo",
    "GIT_AUTHOR_EMAIL": "demo@devswarm.invalid",
    "GIT_COMMITTER_NAME": "devswarm demo",
    "GIT_COMMITTER_EMAIL": "demo@devswarm.invalid",
}


def make_demo_repo(dest: Path) -> Path:
    """Copy the bundled example project into dest and commit it on branch main."""
    shutil.copytree(DEMO / "repo", dest)
    env = {**os.environ, **GIT_ENV}
    git = [
        "git",
        "-c",
        "commit.gpgsign=false",
        "-c",
        "core.hooksPath=/dev/null",
        "-c",
        "init.defaultBranch=main",
    ]
    for args in (
        ["init", "-q"],
        ["add", "-A"],
        ["commit", "-q", "--no-verify", "-m", "textkit: tests for the work to do"],
    ):
        subprocess.run([*git, *args], cwd=dest, env=env, check=True, capture_output=True)
    return dest


def run_demo(directory: Path) -> dict[str, Any]:
    """Set up DIR/repo and DIR/data, serve the scripted model, run the swarm, return its summary."""
    from devswarm.cli import execute
    from devswarm.config import Models, SwarmConfig
    from devswarm.offline.server import ModelServer, Scenario

    directory = directory.expanduser().resolve()
    if directory.exists() and any(directory.iterdir()):
        # Only a folder an earlier demo made (it holds our marker) is replaced.
        if not (directory / MARKER).exists():
            raise UserError(f"{directory} exists and is not a demo folder; pass --dir NEW_DIR")
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    (directory / MARKER).write_text(
        "made by `devswarm demo`; a new demo run replaces this folder\n"
    )
    repo = make_demo_repo(directory / "textkit")
    data = directory / "data"
    scenario = Scenario.load(DEMO / "scenario.json")
    with ModelServer(scenario, log_path=data / "model-requests.jsonl") as server:
        cfg = SwarmConfig(
            goal=(repo / "GOAL.md").read_text(),
            repo=repo,
            branch="devswarm/demo",
            check=CHECK,
            base_url=server.url,
            models=Models.single("offline-model"),
            max_cycles=2,
            max_workers=4,
            home=data,
            api_key=SecretStr(DEMO_KEY),  # any string: the offline server checks none
        )
        summary = execute(cfg)
    summary["request_log"] = str(data / "model-requests.jsonl")
    summary["repo"] = str(repo)
    return summary
