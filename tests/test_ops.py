"""Day-to-day commands on a finished run: runs, logs, and a stop request's file."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from devswarm.cli import app
from tests.conftest import make_repo
from tests.helpers import JUDGE_DONE, plan_reply, task, write_and_finish


def test_runs_lists_a_run_and_logs_shows_an_agents_transcript(swarm_run, tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "user", {"README.md": "x\n"})
    scenario = {
        "agents": [
            {"match": "planner/*", "steps": [plan_reply(task("notes", ["NOTES.md"]))]},
            {
                "match": "worker/*",
                "steps": write_and_finish("NOTES.md", "hello notes\n", summary="wrote the notes"),
            },
            JUDGE_DONE,
        ]
    }
    summary, _ = swarm_run(scenario, repo)
    home = str(tmp_path / "data")
    runner = CliRunner()

    listed = runner.invoke(app, ["runs", "--home", home], catch_exceptions=False)
    assert listed.exit_code == 0
    row = next(line for line in listed.output.splitlines() if summary["run_id"][:20] in line)
    assert "done" in row

    logs = runner.invoke(
        app, ["logs", summary["run_id"], "--agent", "notes", "--home", home], catch_exceptions=False
    )
    assert logs.exit_code == 0
    assert (
        "write_file" in logs.output
        and "hello notes" in logs.output
        and "wrote the notes" in logs.output
    )
    assert "planner/" not in logs.output  # only the agent asked for

    missing = runner.invoke(app, ["logs", "no-such-run", "--home", home])
    assert missing.exit_code == 2 and "no run no-such-run" in missing.output

    stop = runner.invoke(app, ["stop", summary["run_id"], "--home", home], catch_exceptions=False)
    assert stop.exit_code == 0
    assert (tmp_path / "data" / "runs" / summary["run_id"] / "STOP").exists()
