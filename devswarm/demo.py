"""`devswarm demo`: the bundled repository, the offline model server, a real swarm run."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from pydantic import SecretStr

from devswarm.config import Models, SwarmConfig
from devswarm.errors import UserError
from devswarm.offline.server import ModelServer, Scenario

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


def prepare(directory: Path) -> Path:
    """A fresh demo folder with the example repository in DIR/textkit (data goes to DIR/data).
    Only a folder an earlier demo made (it holds our marker) is replaced."""
    directory = directory.expanduser().resolve()
    if directory.exists() and any(directory.iterdir()):
        if not (directory / MARKER).exists():
            raise UserError(f"{directory} exists and is not a demo folder; pass --dir NEW_DIR")
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    (directory / MARKER).write_text(
        "made by `devswarm demo`; a new demo run replaces this folder\n"
    )
    make_demo_repo(directory / "textkit")
    return directory


def demo_server(directory: Path) -> ModelServer:
    """The offline model server with the demo's scenario, logging to DIR/data."""
    scenario = Scenario.load(DEMO / "scenario.json")
    return ModelServer(scenario, log_path=directory / "data" / "model-requests.jsonl")


def demo_config(directory: Path, base_url: str) -> SwarmConfig:
    """The demo run's configuration: the example repository, its check, the offline model."""
    repo = directory / "textkit"
    return SwarmConfig(
        goal=(repo / "GOAL.md").read_text(),
        repo=repo,
        branch="devswarm/demo",
        check=CHECK,
        base_url=base_url,
        models=Models.single("offline-model"),
        max_cycles=2,
        max_workers=4,
        max_model_calls_at_once=32,  # the offline server takes many: the demo keeps its speed
        home=directory / "data",
        api_key=SecretStr(DEMO_KEY),  # any string: the offline server checks none
    )
