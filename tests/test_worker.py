"""Whole workers (devswarm.run.run.work_task) on a real Run: real git, real HTTP, no Prefect
(one test goes through Prefect). Safety of the user's repository, checks, conflicts, setup,
the sandbox notice, and what a killed worker leaves behind."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
import pytest
from pydantic import SecretStr

from devswarm.agent.loop import schema_prompt
from devswarm.config import Models, SwarmConfig
from devswarm.offline.server import ModelServer, Scenario
from devswarm.records import read_records
from devswarm.roles.worker import task_worker_id as worker_id
from devswarm.roles.worker import work_task
from devswarm.run.run import Run, plain_calls
from devswarm.sandbox.probe import sandbox_works
from devswarm.schemas import PlannedTask, TaskSpec, Verdict, WorkerReport
from tests.conftest import chat_requests, git, make_repo, snapshot
from tests.helpers import write_and_finish

KEY = "sk-test-secret-0123456789"
ROOT = Path(__file__).resolve().parent.parent
SANDBOX_MODES = [
    pytest.param(
        True,
        id="bwrap",
        marks=pytest.mark.skipif(not sandbox_works(), reason="bubblewrap does not work here"),
    ),
    pytest.param(False, id="no-bwrap"),
]
GREET = "def greet(name):\n    return 'Hello ' + name\n"


def tc(name: str, **arguments: Any) -> dict:
    return {"name": name, "arguments": arguments}


def calls(*tool_calls: dict) -> dict:
    return {"tool_calls": list(tool_calls)}


def finish(summary: str = "done") -> dict:
    return calls(tc("finish", summary=summary))


@contextmanager
def running(
    tmp_path: Path, scenario: dict, repo: Path, **options: Any
) -> Iterator[tuple[Run, Path]]:
    """A real Run against the offline server; yields it and the server's request log."""
    log = tmp_path / "requests.jsonl"
    with ModelServer(Scenario.from_data(scenario), log_path=log) as server:
        cfg = SwarmConfig(
            goal="Test goal.",
            repo=repo,
            base_url=server.url,
            api_key=SecretStr(KEY),
            models=Models.single("offline-model"),
            home=options.pop("home", tmp_path / "data"),
            run_id=options.pop("run_id", "t1"),
            **options,
        )
        run = Run(cfg)
        try:
            yield run, log
        finally:
            run.close()


def planned(run: Run, id: str, *, base: str | None = None, check: str | None = None) -> PlannedTask:
    return PlannedTask(
        spec=TaskSpec(id=id, title=f"do {id}", description=f"Do {id}.", check=check),
        key=f"c1.root.{id}",
        cycle=1,
        plan_path="root",
        planner_agent_id=f"planner/{run.run_id}/c1/root",
        base_commit=base or run.workspace.tip(),
        check=check,
    )


def work(run: Run, task: PlannedTask) -> WorkerReport:
    return work_task(run, plain_calls, task)


def tool_outputs(run: Run, task: PlannedTask) -> list[str]:
    path = run.agent_log(worker_id(run, task)).path
    return [r["output_excerpt"] for r in read_records(path) if r["kind"] == "tool_call"]


def rows(db: Path, sql: str) -> list[tuple]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def worktrees_left(run: Run) -> list[str]:
    ws = run.workspace
    listed = git(ws.clone, "worktree", "list", "--porcelain").splitlines()
    registered = [line for line in listed if line.startswith("worktree ")]
    on_disk = (
        sorted(p.name for p in ws.worktrees_dir.iterdir()) if ws.worktrees_dir.exists() else []
    )
    return [*registered[1:], *on_disk]  # the first entry is the clone itself


# -- the user's repository ---------------------------------------------------------------------


@pytest.mark.parametrize("sandbox", SANDBOX_MODES)
def test_agents_git_commands_leave_the_users_repository_untouched(
    tmp_path: Path, sandbox: bool
) -> None:
    repo = make_repo(tmp_path / "user", {"a.txt": "one\n"})
    (repo / "a.txt").write_text("two\n")
    git(repo, "commit", "-qam", "second")
    git(repo, "branch", "feature", "HEAD~1")
    before = snapshot(repo)
    attacks = [
        "git branch -f main HEAD~1",
        "git update-ref refs/heads/main HEAD~1",
        "git push",
        "git push origin HEAD:refs/heads/feature",
        "git push origin HEAD:refs/heads/sneaky",
        'git push "$(git remote get-url origin)" HEAD:refs/heads/sneaky2',
        "git push --force origin HEAD~1:refs/heads/main",
    ]
    scenario = {
        "agents": [
            {
                "match": "worker/*",
                "steps": [
                    calls(*(tc("run", command=c) for c in attacks)),
                    calls(tc("write_file", path="b.txt", content="work\n")),
                    finish(),
                ],
            }
        ]
    }
    with running(tmp_path, scenario, repo, sandbox=sandbox) as (run, _log):
        task = planned(run, "attack")
        report = work(run, task)
        outputs = tool_outputs(run, task)
    assert report.status == "landed"  # the work itself still lands, on devswarm's branch
    assert snapshot(repo) == before
    branches = git(repo, "for-each-ref", "--format=%(refname)", "refs/heads")
    assert "sneaky" not in branches
    for command, output in zip(attacks, outputs, strict=False):
        if command.startswith("git push"):
            assert not output.startswith("exit code 0"), (command, output)
    assert git(repo, "show", f"{run.branch}:b.txt") == "work"


@pytest.mark.parametrize("sandbox", SANDBOX_MODES)
def test_run_commands_never_see_the_api_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sandbox: bool
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("HARMLESS_LOOKING", f"Bearer {KEY}")
    repo = make_repo(tmp_path / "user", {"a.txt": "a\n"})
    scenario = {
        "agents": [
            {
                "match": "worker/*",
                "steps": [
                    calls(
                        tc("run", command='echo "key=${OPENAI_API_KEY:-absent}"'),
                        tc("run", command="env > env.txt"),
                    ),
                    finish(),
                ],
            }
        ]
    }
    with running(tmp_path, scenario, repo, sandbox=sandbox) as (run, _log):
        task = planned(run, "env")
        report = work(run, task)
        outputs = tool_outputs(run, task)
    assert report.status == "landed"
    assert outputs[0] == "exit code 0\nkey=absent\n"
    env = git(repo, "show", f"{run.branch}:env.txt")
    assert "PATH=" in env  # the file is the real environment
    assert KEY not in env and "OPENAI_" not in env and "PREFECT_" not in env
    assert KEY not in json.dumps([json.loads(line) for line in log_lines(run)])


def log_lines(run: Run) -> list[str]:
    lines: list[str] = []
    for folder in ("records", "transcripts"):
        for path in sorted((run.dir / folder).glob("*.jsonl")):
            lines += path.read_text().splitlines()
    return lines


# -- checks and conflicts ----------------------------------------------------------------------

CALC_TEST = """import unittest

from calc import add


class AddTest(unittest.TestCase):
    def test_add(self):
        self.assertEqual(add(2, 3), 5)
"""


def test_a_check_failure_is_fixed_on_the_agents_next_turn_and_lands(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "user", {"test_calc.py": CALC_TEST})
    wrong = calls(tc("write_file", path="calc.py", content="def add(a, b):\n    return a - b\n"))
    right = calls(tc("edit_file", path="calc.py", old="a - b", new="a + b"))
    scenario = {
        "agents": [{"match": "worker/*", "steps": [wrong, finish("added"), right, finish("fixed")]}]
    }
    with running(tmp_path, scenario, repo) as (run, log):
        report = work(run, planned(run, "add", check="python -m unittest -q"))
    assert report.status == "landed", report.reason
    assert report.handoff == "fixed"
    assert "a + b" in git(repo, "show", f"{run.branch}:calc.py")
    reqs = chat_requests(log)
    assert len(reqs) == 4
    told = reqs[2]["request"]["messages"][-1]
    assert told["role"] == "user" and "failed after you finished" in told["content"]
    assert "AssertionError: -1 != 5" in told["content"]  # the check's own output


def test_model_call_rows_without_prefect_record_the_key_prefect_would_cache_under(
    tmp_path: Path,
) -> None:
    from devswarm.model.client import cache_key

    repo = make_repo(tmp_path / "user", {"a.txt": "a\n"})
    steps = [calls(tc("write_file", path="b.txt", content="b\n")), finish()]
    with running(tmp_path, {"agents": [{"match": "worker/*", "steps": steps}]}, repo) as (run, log):
        task = planned(run, "b")
        assert work(run, task).status == "landed"
    agent = worker_id(run, task)
    recorded = [r for r in read_records(run.agent_log(agent).path) if r["kind"] == "model_call"]
    sent = [r["request"] for r in chat_requests(log)]
    expected = [
        cache_key(run.run_id, agent, r["step"], q) for r, q in zip(recorded, sent, strict=True)
    ]
    assert [r["cache_key"] for r in recorded] == expected
    assert len(set(expected)) == 2


def test_a_conflict_is_resolved_by_the_agent_and_lands(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "user", {"greet.py": GREET})
    merged = "def greet(name):\n    return 'Hello, dear ' + name + '!'\n"
    scenario = {
        "agents": [
            {
                "match": "worker/*/first/*",
                "steps": [
                    calls(tc("edit_file", path="greet.py", old="'Hello '", new="'Hello, '")),
                    finish("comma"),
                ],
            },
            {
                "match": "worker/*/second/*",
                "steps": [
                    calls(tc("edit_file", path="greet.py", old="+ name", new="+ name + '!'")),
                    finish("bang"),
                    calls(tc("write_file", path="greet.py", content=merged)),
                    finish("merged both"),
                ],
            },
        ]
    }
    with running(tmp_path, scenario, repo) as (run, log):
        base = run.workspace.tip()
        first = work(run, planned(run, "first", base=base))
        second = work(run, planned(run, "second", base=base))  # same lines, same base
        run.records.import_now()
        db = run.store_path
    assert first.status == "landed" and first.conflicts == 0
    assert second.status == "landed" and second.conflicts == 1, second.reason
    assert git(repo, "show", f"{run.branch}:greet.py") == merged.strip()
    subjects = git(repo, "log", "--format=%s", f"{run.branch}").splitlines()
    assert subjects[:2] == ["do second", "do first"]
    told = chat_requests(log)[-2]["request"]["messages"][-1]["content"]
    assert "greet.py" in told and "do first" in told  # the file, and the other side's commit
    landings = rows(
        db, "SELECT task_key, status, resolved FROM landings ORDER BY started_at, status"
    )
    assert landings == [
        ("c1.root.first", "landed", False),
        ("c1.root.second", "conflict", False),
        ("c1.root.second", "landed", True),
    ]


def test_a_worker_reports_the_diff_it_landed_not_the_others(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "user", {"greet.py": GREET})
    scenario = {
        "agents": [
            {
                "match": f"worker/*/{name}/*",
                "steps": [calls(tc("write_file", path=f"{name}.txt", content="x\n")), finish()],
            }
            for name in ("first", "second")
        ]
    }
    with running(tmp_path, scenario, repo) as (run, _):
        base = run.workspace.tip()
        first = work(run, planned(run, "first", base=base))
        second = work(run, planned(run, "second", base=base))  # lands on first's commit
    assert first.status == second.status == "landed"
    assert "first.txt" in first.diff_stat and "second.txt" in second.diff_stat
    assert "first.txt" not in second.diff_stat


def test_a_worker_at_its_step_limit_ends_with_that_status_and_a_handoff(tmp_path: Path) -> None:
    from devswarm.config import AgentLimits

    repo = make_repo(tmp_path / "user", {"a.txt": "a\n"})
    steps = [calls(tc("read_file", path="a.txt", start_line=i)) for i in (1, 1, 1)]
    scenario = {"agents": [{"match": "worker/*", "steps": steps}]}
    with running(tmp_path, scenario, repo, limits=AgentLimits(max_steps=2)) as (run, _log):
        report = work(run, planned(run, "loop"))
        run.records.import_now()
        db = run.store_path
    assert report.status == "limit:steps"
    assert "2 steps" in report.handoff
    assert rows(db, "SELECT status, reason FROM tasks") == [("limit:steps", report.reason)]
    assert rows(db, "SELECT status, steps FROM agents WHERE role = 'worker'") == [
        ("limit:steps", 2)
    ]


# -- setup -------------------------------------------------------------------------------------


def test_setup_runs_in_each_fresh_worktree_before_the_agent(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "user", {".gitignore": "build/\n", "a.txt": "a\n"})
    # The setup may write its worktree and the cache folder only (it runs sandboxed).
    setup = 'echo run >> "$XDG_CACHE_HOME/setup-runs" && mkdir -p build && echo ok > build/stamp'
    scenario = {
        "agents": [
            {
                "match": "worker/*",
                # The agent's first command sees what setup built in its worktree.
                "steps": [
                    calls(tc("run", command="cat build/stamp && echo x > $RANDOM.txt")),
                    finish(),
                ],
            }
        ]
    }
    with running(tmp_path, scenario, repo, setup=setup) as (run, _log):
        counter = run.checks.cache / "setup-runs"
        base = run.workspace.tip()
        tasks = [planned(run, name, base=base, check="test -f build/stamp") for name in ("x", "y")]
        reports = [work(run, t) for t in tasks]
        outputs = [tool_outputs(run, t)[0] for t in tasks]
    assert [r.status for r in reports] == ["landed", "landed"]
    assert outputs == ["exit code 0\nok\n", "exit code 0\nok\n"]
    assert counter.read_text() == "run\nrun\n"  # once per fresh worktree
    tree = git(repo, "ls-tree", "-r", "--name-only", run.branch)
    assert "build/stamp" not in tree


def test_a_failing_setup_is_a_task_status_and_runs_once_per_base_commit(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "user", {"a.txt": "a\n"})
    old_base = git(repo, "rev-parse", "HEAD")
    (repo / "a.txt").write_text("b\n")
    git(repo, "commit", "-qam", "second")
    setup = "echo run >> \"$XDG_CACHE_HOME/setup-runs\"; echo 'cannot build' >&2; exit 3"
    scenario = {"agents": [{"match": "worker/*", "steps": [finish()]}]}
    with running(tmp_path, scenario, repo, setup=setup) as (run, log):
        counter = run.checks.cache / "setup-runs"
        new_base = run.workspace.tip()
        reports = [
            work(run, planned(run, "x", base=old_base)),
            work(run, planned(run, "y", base=old_base)),
            work(run, planned(run, "z", base=new_base)),
        ]
        run.records.import_now()
        db = run.store_path
        left = worktrees_left(run)
    assert [r.status for r in reports] == ["setup_failed"] * 3
    assert "cannot build" in (reports[1].reason or "")  # the cached result, with its output
    assert counter.read_text() == "run\nrun\n"  # once for each base commit
    assert chat_requests(log) == []  # no agent started
    assert rows(db, "SELECT status FROM tasks ORDER BY task_key") == [("setup_failed",)] * 3
    assert left == []


# -- the sandbox notice ------------------------------------------------------------------------


def test_a_run_without_a_sandbox_says_so_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    repo = make_repo(tmp_path / "user", {"a.txt": "a\n"})
    scenario = {
        "agents": [{"match": "worker/*", "steps": [calls(tc("run", command="true")), finish()]}]
    }
    with (
        caplog.at_level(logging.WARNING, logger="devswarm"),
        running(tmp_path, scenario, repo, sandbox=False, run_id="notice") as (run, _log),
    ):
        work(run, planned(run, "x"))
        work(run, planned(run, "y"))
        Run(run.config).close()  # the CLI's probe and the flow each build a Run
    notices = [r.getMessage() for r in caplog.records if "sandbox" in r.getMessage()]
    assert len(notices) == 1 and "turned off" in notices[0], notices


@pytest.mark.skipif(not sandbox_works(), reason="bubblewrap does not work here")
def test_a_run_with_bubblewrap_says_nothing_about_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    repo = make_repo(tmp_path / "user", {"a.txt": "a\n"})
    with (
        caplog.at_level(logging.WARNING, logger="devswarm"),
        running(tmp_path, {}, repo) as (run, _log),
    ):
        assert run.sandbox_notice is None
    assert not [r for r in caplog.records if "sandbox" in r.getMessage()]


def test_a_machine_without_bwrap_is_refused_with_the_cause(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "user", {"a.txt": "a\n"})
    bin_dir = tmp_path / "bin"  # a PATH with git and bash, and no bwrap
    bin_dir.mkdir()
    for tool in ("git", "bash"):
        (bin_dir / tool).symlink_to(shutil.which(tool) or tool)
    script = f"""
from pathlib import Path
from devswarm.config import SwarmConfig
from devswarm.errors import UserError
from devswarm.run.run import Run
from devswarm.sandbox import bwrap
bwrap.bundled_bwrap = lambda: None  # as where the bundled wheel does not install
try:
    Run(SwarmConfig(goal="g", repo=Path({str(repo)!r}), home=Path({str(tmp_path / "data")!r}),
                    base_url="http://127.0.0.1:9/v1"))
except UserError as exc:
    print(exc)
"""
    env = {"PATH": str(bin_dir), "HOME": str(tmp_path), "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 1 and "bubblewrap is not installed" in lines[0], proc.stdout
    assert "--no-sandbox" in lines[0]


# -- a killed worker ---------------------------------------------------------------------------

KILLED_WORKER = """
import json, sys
from pathlib import Path
from pydantic import SecretStr
from devswarm.agent.loop import schema_prompt
from devswarm.config import Models, SwarmConfig
from devswarm.schemas import PlannedTask, TaskSpec
from devswarm.roles.worker import work_task
from devswarm.run.run import Run, plain_calls

args = json.loads(sys.argv[1])
run = Run(SwarmConfig(goal="g", repo=Path(args["repo"]), home=Path(args["home"]),
                      base_url=args["url"], api_key=SecretStr("sk-x"), run_id="killed",
                      models=Models.single("offline-model")))
task = PlannedTask(spec=TaskSpec(id="slow", title="slow", description="Slow."), key="c1.root.slow",
                   cycle=1, plan_path="root", planner_agent_id="planner/killed/c1/root",
                   base_commit=run.workspace.tip())
work_task(run, plain_calls, task)
"""


def test_a_killed_worker_leaves_no_worktree_and_its_records_import(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "user", {"a.txt": "a\n"})
    home = tmp_path / "data"
    slow = calls(
        tc("write_file", path="half.txt", content="half done\n"),
        tc("run", command="touch started && sleep 20"),
    )
    scenario = {"agents": [{"match": "worker/*", "steps": [slow, finish()]}]}
    log = tmp_path / "requests.jsonl"
    with ModelServer(Scenario.from_data(scenario), log_path=log) as server:
        args = {"repo": str(repo), "home": str(home), "url": server.url}
        proc = subprocess.Popen(
            [sys.executable, "-c", KILLED_WORKER, json.dumps(args)],
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            deadline = time.monotonic() + 60
            while not list(home.glob("repos/*/worktrees/*/started")):
                assert proc.poll() is None, proc.communicate()
                assert time.monotonic() < deadline, "the worker never started its command"
                time.sleep(0.05)
            worktree = next(home.glob("repos/*/worktrees/*"))
            os.kill(proc.pid, signal.SIGKILL)  # mid-command
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    assert (worktree / "half.txt").exists()  # the dead worker's worktree is still there

    with running(tmp_path / "next", {}, repo, home=home, run_id="killed") as (run, _log):
        assert worktrees_left(run) == []  # pruned when the next run started
        assert not worktree.exists()
        transcript = run.transcript("worker/killed/c1/root/slow/a1")
        messages = [json.loads(line)["message"] for line in transcript.read_text().splitlines()]
        run.records.import_now()
        db = run.store_path
    # The transcript ends with the write's result; the reply asking for the command is in it.
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "tool"]
    assert [c["function"]["name"] for c in messages[2]["tool_calls"]] == ["write_file", "run"]
    assert rows(db, "SELECT status FROM tasks") == [("running",)]
    assert rows(db, "SELECT role, status FROM agents") == [("worker", "running")]
    assert rows(db, "SELECT count(*), sum(input_tokens) > 0 FROM model_calls") == [(1, True)]
    assert rows(db, "SELECT tool_name FROM tool_calls") == [("write_file",)]


# -- through Prefect ---------------------------------------------------------------------------


def test_a_swarm_on_a_json_object_only_server_plans_works_and_judges(
    swarm_run, tmp_path: Path
) -> None:
    repo = make_repo(tmp_path / "user", {"a.txt": "a\n"})
    plan = {
        "summary": "one task",
        "tasks": [{"id": "b", "title": "add b", "description": "Add b.txt.", "files": ["b.txt"]}],
        "scopes": [],
    }
    scenario = {
        "structured_output": "json_object",
        "agents": [
            {"match": "planner/*", "steps": [{"json": plan}]},
            {
                "match": "worker/*",
                "steps": [calls(tc("write_file", path="b.txt", content="b\n")), finish()],
            },
            {
                "match": "judge/*",
                "steps": [{"json": {"decision": "done", "reasons": "b exists", "score": 1.0}}],
            },
        ],
    }
    summary, log = swarm_run(scenario, repo)
    assert summary["status"] == "done", summary
    assert git(repo, "show", f"{summary['branch']}:b.txt") == "b"
    reqs = chat_requests(log)

    def sent(role: str) -> list[tuple[int, bool]]:
        return [
            (r["status"], "response_format" in r["request"])
            for r in reqs
            if r["agent"].startswith(role)
        ]

    # The capability probe learns that the server refuses json_schema; the run remembers, so
    # the planner and the judge put the schema in their prompts from the start.
    assert sent("preflight/") == [(400, True)]
    assert sent("planner/") == [(200, False)]
    assert sent("judge/") == [(200, False)]
    judge = next(r for r in reqs if r["agent"].startswith("judge/"))
    assert judge["request"]["messages"][-1]["content"] == schema_prompt(Verdict)


def test_a_landing_that_cannot_be_published_says_so_and_is_published_by_the_next_run(
    tmp_path: Path,
) -> None:
    """The user checks the landing branch out mid-run: the landing stays in devswarm's clone,
    the report, the landings row and the run's end say "not published"; once the branch is
    free again, the next run publishes it before anything else."""
    from devswarm.run.cycles import end_run

    repo = make_repo(tmp_path / "user", {"a.txt": "a\n"})
    scenario = {"agents": [{"match": "worker/*", "steps": write_and_finish("b.txt", "b\n")}]}
    with running(tmp_path, scenario, repo, run_id="pub", branch="devswarm/pub") as (run, _log):
        before = git(repo, "rev-parse", "devswarm/pub")
        git(repo, "worktree", "add", "-q", str(tmp_path / "busy"), "devswarm/pub")
        report = work(run, planned(run, "b"))
        assert report.status == "landed" and report.published is False
        assert "checked out" in (report.publish_error or "")
        assert git(repo, "rev-parse", "devswarm/pub") == before  # the user's branch: untouched
        end_run(run, "done")
        assert run.summary("done", None, None)["unpublished"]
        landed = rows(run.config.db_path, "SELECT published, publish_error FROM landings")
        assert landed == [(False, report.publish_error)]
    git(repo, "worktree", "remove", "--force", str(tmp_path / "busy"))
    with running(tmp_path, {}, repo, run_id="pub", branch="devswarm/pub") as (run, _log):
        assert git(repo, "rev-parse", "devswarm/pub") == report.commit  # published first


def test_a_worker_run_again_after_its_task_landed_lands_nothing_and_asks_no_model(
    tmp_path: Path,
) -> None:
    repo = make_repo(tmp_path / "user", {"a.txt": "a\n"})
    scenario = {"agents": [{"match": "worker/*", "steps": write_and_finish("b.txt", "b\n")}]}
    with running(tmp_path, scenario, repo) as (run, log):
        task = planned(run, "b")
        first = work(run, task)
        tip, asked = run.workspace.tip(), len(chat_requests(log))
        again = work_task(run, plain_calls, task, attempt=2)  # e.g. after a crash past landing
        assert first.status == again.status == "landed" and again.commit == first.commit
        assert "already on the branch" in (again.reason or "")
        assert run.workspace.tip() == tip and len(chat_requests(log)) == asked
