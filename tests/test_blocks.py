"""Blocks: `devswarm init` saves them, flows load them, the API key stays a masked secret."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from devswarm.cli import app
from devswarm.errors import UserError
from tests.conftest import git, make_repo

KEY = "sk-block-secret-0123456789abcdef"
CALC = "def add(a, b):\n    return a + b\n"


def _init(*args: str, env: dict | None = None):
    return CliRunner().invoke(app, ["init", *args], env=env, catch_exceptions=False)


def test_init_refuses_bad_names_and_a_missing_endpoint(tmp_path: Path) -> None:
    none = _init(env={"OPENAI_API_KEY": "", "OPENAI_BASE_URL": ""})
    assert none.exit_code == 2 and "no model endpoint" in none.output
    bad = _init("--provider", "My Provider", env={"OPENAI_API_KEY": KEY})
    assert bad.exit_code == 2 and "lowercase letters, numbers and dashes" in bad.output
    plain = tmp_path / "plain"
    plain.mkdir()
    not_git = _init("--repo", str(plain), env={"OPENAI_API_KEY": KEY})
    assert not_git.exit_code == 2 and "not a git repository" in not_git.output
    for result in (none, bad, not_git):
        assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1


def test_init_saves_blocks_loaded_with_the_key_masked(prefect_server, tmp_path: Path) -> None:
    from prefect.client.orchestration import get_client

    from blocks import ModelProvider, Repository, Warehouse
    from flows.deploy import config_from_blocks

    repo = make_repo(tmp_path / "My_Project", {"calc.py": CALC, "GOAL.md": "Add mul.\n"})
    result = _init(
        "--provider", "offline", "--base-url", "http://127.0.0.1:9/v1", "--model", "offline-model",
        "--repo", str(repo), "--repository", "my-project", "--check", "python -m unittest -q",
        "--warehouse", "scratch", "--home", str(tmp_path / "data"),
        env={"OPENAI_API_KEY": KEY},
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "saved devswarm-repository/my-project" in result.output
    assert KEY not in result.output

    provider = ModelProvider.load("offline")
    assert provider.api_key.get_secret_value() == KEY
    assert provider.worker_model == provider.planner_model == "offline-model"
    # Masked wherever the block is serialised.
    assert KEY not in provider.model_dump_json()
    assert KEY not in json.dumps(provider.model_dump(mode="json"))
    assert KEY not in repr(provider.model_dump())
    with get_client(sync_client=True) as client:
        doc = client.read_block_document_by_name(
            "offline", "devswarm-model-provider", include_secrets=False
        )
    assert KEY not in json.dumps(doc.data, default=str)
    assert Repository.load("my-project").check == "python -m unittest -q"
    assert Warehouse.load("scratch").home == str((tmp_path / "data").resolve())

    config = config_from_blocks(
        "my-project", "offline", "scratch", goal_file="GOAL.md", max_cycles=2, max_cost_usd=1.5
    )
    assert config.goal == "Add mul.\n" and config.repo == repo.resolve()
    assert config.api_key.get_secret_value() == KEY and config.base_url == "http://127.0.0.1:9/v1"
    assert config.home == (tmp_path / "data").resolve() and config.max_cycles == 2
    assert config.budget.max_cost_usd == 1.5 and config.check == "python -m unittest -q"
    with pytest.raises(UserError, match="no devswarm repository block named 'nope'"):
        config_from_blocks("nope", "offline", goal="x")
    with pytest.raises(UserError, match="goal file"):
        config_from_blocks("my-project", "offline", goal_file="MISSING.md")


def test_swarm_from_blocks_completes_and_keeps_the_key_out_of_parameters(
    prefect_server, tmp_path: Path
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId
    from pydantic import SecretStr

    from blocks import ModelProvider, Repository, Warehouse
    from devswarm.offline.server import ModelServer, Scenario
    from flows.deploy import swarm_from_blocks

    repo = make_repo(tmp_path / "calc", {"calc.py": CALC, "GOAL.md": "Add mul.\n"})
    with ModelServer(Scenario.from_data(MUL_SCENARIO)) as model_server:
        ModelProvider(
            base_url=model_server.url, api_key=SecretStr(KEY), planner_model="offline-model",
            worker_model="offline-model", judge_model="offline-model",
        ).save("calc-provider", overwrite=True)  # fmt: skip
        Repository(path=str(repo), branch="devswarm/blocks").save("calc", overwrite=True)
        Warehouse(home=str(tmp_path / "data")).save("calc-data", overwrite=True)
        state = swarm_from_blocks(
            repository="calc", provider="calc-provider", warehouse="calc-data",
            max_cycles=1, max_workers=2, return_state=True,
        )  # fmt: skip
    summary = state.result()
    assert state.is_completed() and summary["status"] == "done"
    assert "def mul" in git(repo, "show", "devswarm/blocks:calc.py")
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(state.state_details.flow_run_id)
        children = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[run.id])
            )
        )
    assert run.parameters["repository"] == "calc"
    assert KEY not in json.dumps(run.parameters, default=str)
    names = sorted(c.name.split(": ")[0] for c in children)
    assert names == ["judge", "plan", "work"]
    # The deployment's run is the swarm's: it carries the run's name, as `devswarm run`'s does.
    assert run.name == f"swarm: {summary['run_id']}"
    assert all(c.state.is_completed() for c in children)


def tc(name: str, **arguments) -> dict:
    return {"name": name, "arguments": arguments}


MUL_SCENARIO = {
    "agents": [
        {
            "match": "planner/*",
            "steps": [
                {
                    "json": {
                        "summary": "one task",
                        "scopes": [],
                        "tasks": [
                            {
                                "id": "mul",
                                "title": "add mul",
                                "description": "Add mul(a, b).",
                                "acceptance": [],
                                "files": ["calc.py"],
                                "check": None,
                            }  # fmt: skip
                        ],
                    }
                }
            ],
        },
        {
            "match": "worker/*",
            "steps": [
                {
                    "tool_calls": [
                        tc(
                            "edit_file",
                            path="calc.py",
                            old="    return a + b\n",
                            new="    return a + b\n\n\ndef mul(a, b):\n    return a * b\n",
                        )
                    ]
                },
                {"tool_calls": [tc("finish", summary="added mul")]},
            ],
        },
        {
            "match": "judge/*",
            "steps": [{"json": {"decision": "done", "reasons": "ok", "score": 1.0}}],
        },
    ]
}


def test_run_takes_block_names_and_the_key_from_the_provider_block(
    prefect_server, tmp_path: Path
) -> None:
    """`devswarm run --repository-block --provider-block`: nothing else needed, no key in env."""
    from devswarm.offline.server import ModelServer, Scenario
    from tests.helpers import JUDGE_DONE, plan_reply, task, write_and_finish

    repo = make_repo(tmp_path / "proj", {"calc.py": CALC})
    scenario = {
        "agents": [
            {"match": "planner/*/followup-*", "steps": [plan_reply()]},
            {"match": "planner/*", "steps": [plan_reply(task("notes", ["NOTES.md"]))]},
            {"match": "worker/*", "steps": write_and_finish("NOTES.md", "notes\n")},
            JUDGE_DONE,
        ]
    }
    log = tmp_path / "requests.jsonl"
    with ModelServer(Scenario.from_data(scenario), log_path=log) as server:
        saved = _init(
            "--provider", "blk-offline", "--base-url", server.url, "--model", "offline-model",
            "--repo", str(repo), "--repository", "blk-proj",
            "--warehouse", "blk-data", "--home", str(tmp_path / "data"),
            env={"OPENAI_API_KEY": KEY},
        )  # fmt: skip
        assert saved.exit_code == 0, saved.output
        result = CliRunner().invoke(
            app,
            ["run", "--repository-block", "blk-proj", "--provider-block", "blk-offline",
             "--warehouse-block", "blk-data", "--goal", "write notes", "--branch", "devswarm/blk"],
            env={"OPENAI_API_KEY": "", "OPENAI_BASE_URL": ""},
            catch_exceptions=False,
        )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert git(repo, "show", "devswarm/blk:NOTES.md") == "notes"
    assert (tmp_path / "data" / "devswarm.duckdb").exists()
    # The endpoint came from the provider block: the swarm's calls reached this server.
    assert any(
        json.loads(line)["agent"].startswith("worker/") for line in log.read_text().splitlines()
    )
    assert KEY not in result.output
