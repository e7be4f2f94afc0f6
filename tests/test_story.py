"""What a run tells its watchers, without Prefect: the log lines (devswarm/run/story.py: short,
redacted, bounded), the counters a progress bar reads, the events the core notifies (budget,
tasks), and how a run's end is worded for its flow run's state."""

from __future__ import annotations

import base64
import json
import logging
from pathlib import Path

import pytest

from devswarm.config import Models, SwarmConfig
from devswarm.model.ledger import BudgetExhausted, Ledger
from devswarm.run.cycles import run_ending, settled_event
from devswarm.run.progress import Progress
from devswarm.run.run import Run
from devswarm.run.story import Story, tool_step_line
from devswarm.schemas import Verdict, WorkerReport
from devswarm.tools.specs import ToolResult
from tests.conftest import make_repo

SECRET = "sk-story-secret-0123456789abcdef"


def test_a_tool_step_is_one_short_line_without_the_files_contents() -> None:
    text = "SECRET-FILE-TEXT\n" * 500
    write = tool_step_line(
        2, "write_file", json.dumps({"path": "a.py", "content": text}), ToolResult(output="wrote")
    )
    assert write == "step 3: write_file path='a.py' content=<8500 chars> -> wrote"
    read = tool_step_line(0, "read_file", '{"path": "a.py"}', ToolResult(output=text))
    assert read == "step 1: read_file path='a.py' -> ok, 500 lines of output"
    found = tool_step_line(0, "search", '{"pattern": "x"}', ToolResult(output="a.py:1: x\nb"))
    assert found == "step 1: search pattern='x' -> ok, 2 lines of output"
    edit = tool_step_line(
        4, "edit_file", json.dumps({"path": "a.py", "old": text, "new": "y"}), ToolResult(output="")
    )
    assert "SECRET-FILE-TEXT" not in edit and "old=<8500 chars> new=<1 chars>" in edit
    ran = tool_step_line(
        1,
        "run",
        json.dumps({"command": "pytest -q " + "x" * 200}),
        ToolResult(output="exit code 1\nE"),
    )
    assert ran.startswith("step 2: run command='pytest -q xxx") and ran.endswith("-> exit code 1")
    assert "(210 chars)" in ran and len(ran) < 160
    bad = tool_step_line(
        0, "edit_file", "{not json", ToolResult(output="bad\nmore", error_type="x")
    )
    assert bad == "step 1: edit_file (unreadable arguments, 9 chars) -> x: bad"


def test_story_lines_are_redacted_in_any_encoding(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOME_SERVICE_TOKEN", "tok-from-the-environment-42")
    story = Story([SECRET])
    encoded = base64.b64encode(SECRET.encode()).decode()
    line = story.line("w1", f"key {SECRET}, b64 {encoded}, env tok-from-the-environment-42")
    assert line is not None
    assert SECRET not in line and encoded not in line and "tok-from-the" not in line
    assert line.count("[redacted]") == 3


def test_story_volume_is_bounded_per_agent_and_per_run_with_one_note_each(
    caplog: pytest.LogCaptureFixture,
) -> None:
    story = Story(per_agent=3, per_run=8)
    with caplog.at_level(logging.INFO, logger="devswarm"):
        for i in range(6):
            story.tell("worker", "w1", f"w1 line {i}")
        for i in range(6):
            story.tell("worker", "w2", f"w2 line {i}")
    said = [(r.name, r.getMessage()) for r in caplog.records]
    assert said[:4] == [("devswarm.worker", f"w1 line {i}") for i in range(3)] + [
        ("devswarm.worker", "(no more lines from w1: 3 lines is the cap per agent; "
         "its transcript has everything)")
    ]  # fmt: skip
    assert [m for _, m in said[4:6]] == ["w2 line 0", "w2 line 1"]  # lines 7 and 8 of the run
    assert said[6][1].startswith("(this run's log stops here: 8 lines is the cap per run")
    assert len(said) == 7
    assert story.line(None, "the run's own line") is None  # the run's cap holds for it too


def test_ledger_tells_once_when_a_budget_is_80_percent_spent_and_once_when_it_runs_out() -> None:
    heard: list[tuple[str, str]] = []
    ledger = Ledger(max_tokens=1000, max_cost_usd=100.0, max_wall_seconds=3600)
    ledger.on_budget = lambda kind, budget: heard.append((kind, budget))
    ledger.settle(ledger.reserve(700, 0.0), 700, 0.0)
    assert heard == []
    ledger.settle(ledger.reserve(100, 0.0), 100, 0.0)  # 800 of 1000
    ledger.settle(ledger.reserve(50, 0.0), 50, 0.0)
    assert heard == [("running-low", "tokens")]
    with pytest.raises(BudgetExhausted):
        ledger.reserve(500, 0.0)
    with pytest.raises(BudgetExhausted):
        ledger.reserve(1, 0.0)
    ledger.stop("stop requested")  # a person's stop is not a budget
    assert heard == [("running-low", "tokens"), ("exhausted", "tokens")]


def test_progress_reaches_100_when_every_task_settled_landed_or_not() -> None:
    progress = Progress()
    assert progress.percent_settled() == 0.0
    progress.bump("planned", 4)
    progress.bump("working")
    progress.count_report(WorkerReport(task_key="a", agent_id="w", status="landed"))
    assert progress.percent_settled() == 25.0
    progress.count_report(WorkerReport(task_key="b", agent_id="w", status="failed", conflicts=1))
    progress.count_report(WorkerReport(task_key="c", agent_id="w", status="limit:steps"))
    progress.bump("skipped")  # a task never started: its dependency failed
    progress.bump("working", -1)
    assert progress.board() == {
        "planning": 0, "planned": 4, "working": 0, "pending": 0, "landed": 1, "failed": 2,
        "skipped": 1, "settled": 4, "conflicts": 1,
    }  # fmt: skip
    assert progress.percent_settled() == 100.0


def test_events_reach_every_sink_even_when_one_breaks_and_unknown_names_are_refused() -> None:
    heard: list[tuple[str, dict]] = []

    def broken(name: str, fields: dict) -> None:
        raise RuntimeError("a broken watcher")

    progress = Progress(sinks=[broken, lambda name, fields: heard.append((name, fields))])
    progress.notify("tip.turned-red", commit="abc", culprit="c1.root.x")
    assert heard == [("tip.turned-red", {"commit": "abc", "culprit": "c1.root.x"})]
    with pytest.raises(ValueError, match="unknown devswarm event 'tip.exploded'"):
        progress.notify("tip.exploded")  # type: ignore[arg-type]


@pytest.fixture
def run(tmp_path: Path):
    repo = make_repo(tmp_path / "calc", {"calc.py": "x = 1\n"})
    config = SwarmConfig(
        goal="g", repo=repo, models=Models.single("m"), home=tmp_path / "data", base_url="http://x"
    )
    the_run = Run(config)
    yield the_run
    the_run.close()


def test_a_runs_end_is_worded_for_its_flow_runs_state(run: Run) -> None:
    done = Verdict(decision="done", reasons="all there")
    assert run_ending(run, "done", done) == (
        "completed",
        "the judge says done; 0 task(s) landed in 0 cycle(s)",
    )
    stop = Verdict(decision="stop", reasons="the goal cannot be met")
    assert run_ending(run, "stopped", stop)[0] == "failed"
    assert (
        "the judge stopped the run: the goal cannot be met" in run_ending(run, "stopped", stop)[1]
    )
    assert run_ending(run, "stopped", None)[0] == "failed"
    run.ledger.stop("cost")
    assert run_ending(run, "budget_exhausted", None) == (
        "failed",
        "budget exhausted (cost); 0 task(s) landed in 0 cycle(s)",
    )


def test_a_person_stopping_the_run_cancels_it(run: Run) -> None:
    run.stop("stopped by SIGTERM")
    status = run.final_status(None)
    assert status == "stopped"
    assert run_ending(run, status, None) == (
        "cancelled",
        "stopped by SIGTERM; drained, 0 task(s) landed in 0 cycle(s)",
    )


def test_budget_news_and_task_endings_become_events_and_event_lines(run: Run) -> None:
    events: list[tuple[str, dict]] = []
    lines: list[str] = []
    run.progress.sinks.append(lambda name, fields: events.append((name, fields)))
    run.progress.listeners.append(lines.append)
    run.ledger.max_tokens = 100
    run.ledger.settle(run.ledger.reserve(90, 0.0), 90, 0.0)
    with pytest.raises(BudgetExhausted):
        run.ledger.reserve(20, 0.0)
    assert events == [
        ("budget.running-low", {"budget": "tokens", "spent": 90, "cap": 100}),
        ("budget.exhausted", {"budget": "tokens", "spent": 90, "cap": 100}),
    ]
    assert lines == [
        "budget: 90 of 100 tokens spent (80%)",
        "budget: tokens exhausted (90 of 100); draining",
    ]
    events.clear()
    for status in ("landed", "abandoned", "stopped", "skipped", "budget_exhausted", "stuck"):
        settled_event(run, WorkerReport(task_key=f"t-{status}", agent_id="w", status=status))
    assert [(name, fields["task"]) for name, fields in events] == [
        ("task.landed", "t-landed"),
        ("task.abandoned", "t-abandoned"),
        ("task.abandoned", "t-stuck"),
    ]


def test_a_task_skipped_before_it_started_is_settled_and_not_landed(run: Run) -> None:
    from devswarm.roles.rows import record_skip
    from devswarm.schemas import PlannedTask, TaskSpec

    planned = PlannedTask(
        spec=TaskSpec(id="delta", title="do delta", description="d"),
        key="c1.root.delta",
        cycle=1,
        plan_path="root",
        planner_agent_id="planner/x/c1/root",
        base_commit=run.workspace.tip(),
    )
    run.progress.bump("planned")
    record_skip(run, planned, "dependency c1.root.gamma did not land")
    assert run.progress.board()["skipped"] == 1 and run.progress.percent_settled() == 100.0
    assert run.summary("done", None, None)["tasks_not_landed"] == 1
