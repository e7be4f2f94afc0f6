"""The verifier on a real Run: real git, real checks (sandboxed), no model and no Prefect.

Landings are made as the lane makes them (a worktree, a commit with trailers, land); the cycle's
scheduler is a recorder of what the verifier gives back to it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from devswarm.config import SwarmConfig
from devswarm.records import read_records
from devswarm.roles import prompts
from devswarm.run.run import Run
from devswarm.schemas import PlannedTask, TaskSpec
from devswarm.verify.gate import repository_gate
from devswarm.verify.queue import MergeQueue
from devswarm.verify.verifier import Verifier
from tests.conftest import git, make_repo

CHECK = "python -m unittest -q"
LIB = "def total(xs):\n    return sum(xs)\n"
LIB_TEST = """import unittest

from lib import total


class TotalTest(unittest.TestCase):
    def test_total(self):
        self.assertEqual(total([1, 2]), 3)
"""
# The pair that passes alone and breaks together: a rename, and a new caller of the old name.
RENAMED = {
    "lib.py": "def sum_of(xs):\n    return sum(xs)\n",
    "test_lib.py": LIB_TEST.replace("total", "sum_of"),
}
CALLER = {
    "report.py": "from lib import total\n\n\ndef line(xs):\n    return f'total {total(xs)}'\n",
    "test_report.py": "import unittest\n\nfrom report import line\n\n\n"
    "class LineTest(unittest.TestCase):\n    def test_line(self):\n"
    "        self.assertEqual(line([2]), 'total 2')\n",
}


class Cycle:
    """What the verifier calls on the running cycle's scheduler, recorded."""

    def __init__(self, tasks: list[PlannedTask]) -> None:
        self.tasks = {t.key: t for t in tasks}
        self.given: list[tuple[str, PlannedTask | str]] = []

    def task(self, key: str) -> PlannedTask | None:
        return self.tasks.get(key)

    def settled(self, key: str) -> bool:
        return True

    def retry(self, task: PlannedTask) -> None:
        self.given.append(("retry", task))

    def add(self, tasks: list[PlannedTask], *, first: bool = False) -> None:
        self.given.extend(("add", task) for task in tasks)

    def unland(self, key: str) -> None:
        self.given.append(("unland", key))


@contextmanager
def a_run(tmp_path: Path, files: dict[str, str], **options: Any) -> Iterator[Run]:
    repo = make_repo(tmp_path / "user", files)
    cfg = SwarmConfig(
        goal="keep it green", repo=repo, home=tmp_path / "data", run_id="v1",
        check=options.pop("check", CHECK), **options,
    )  # fmt: skip
    run = Run(cfg)
    try:
        yield run
    finally:
        run.records.import_now()  # the background import must not outlive the test
        run.close()


def planned(run: Run, name: str) -> PlannedTask:
    return PlannedTask(
        spec=TaskSpec(id=name, title=f"do {name}", description=f"Do {name}."),
        key=f"c1.root.{name}",
        cycle=1,
        plan_path="root",
        planner_agent_id="planner/v1/c1/root",
        base_commit=run.workspace.tip(),
    )


def land(run: Run, name: str, files: dict[str, str], verifier: Verifier | None = None) -> str:
    """One worker's landing of task c1.root.<name>, told to the verifier as a worker tells it."""
    ws = run.workspace
    with ws.worktree(name, ws.tip()) as wt:
        for path, text in files.items():
            (wt / path).write_text(text)
        agent = f"worker/v1/c1/root/{name}/a1"
        ws.commit(wt, f"do {name}", {"Devswarm-Run": "v1", "Devswarm-Task": f"c1.root.{name}",
                                     "Devswarm-Agent": agent})  # fmt: skip
        result = ws.land(wt)
    assert result.status == "landed"
    if verifier is not None:
        verifier.landed(f"landing-{name}", result.new_tip)
    return result.new_tip or ""


def records(run: Run, kind: str) -> list[dict]:
    path = run.agent_log(f"verifier/{run.run_id}").path
    return [r for r in read_records(path) if r["kind"] == kind] if path.exists() else []


def test_a_semantic_break_is_bisected_confirmed_reverted_and_its_task_retried(
    tmp_path: Path,
) -> None:
    with a_run(tmp_path, {"lib.py": LIB, "test_lib.py": LIB_TEST}) as run:
        events: list[tuple[str, dict]] = []
        run.progress.sinks.append(lambda name, fields: events.append((name, fields)))
        verifier = Verifier(run, width=2)
        verifier.verify(run.workspace.tip())
        green = run.state.last_green
        assert green == run.workspace.tip()
        tasks = [planned(run, n) for n in ("rename", "caller", "docs", "notes")]
        cycle = Cycle(tasks)
        verifier.serve(cycle)  # type: ignore[arg-type]
        land(run, "rename", RENAMED, verifier)
        culprit = land(run, "caller", CALLER, verifier)
        land(run, "docs", {"docs.txt": "docs\n"}, verifier)
        red_tip = land(run, "notes", {"notes.txt": "notes\n"}, verifier)
        verifier.verify(red_tip)

        tip = run.workspace.tip()
        assert tip != red_tip and git(run.workspace.clone, "rev-parse", f"{tip}^") == red_tip
        (revert,) = run.workspace.landed_trailers(f"{red_tip}..{tip}")
        assert revert["revert"] == culprit and revert["task"] == "c1.root.caller"
        assert run.checks.at(tip).passed and not run.checks.at(red_tip).passed
        (kind, retry), = cycle.given  # fmt: skip
        assert kind == "retry" and retry.key == "c1.root.caller" and retry.base_commit == tip
        assert prompts.REVERTED_NOTE in retry.spec.description
        assert "sum_of" in retry.spec.description or "total" in retry.spec.description

        assert events == [("tip.turned-red", {"commit": red_tip, "culprit": culprit,
                                              "task": "c1.root.caller"})]  # fmt: skip
        verifier.verify(tip)  # the revert's tip is green: the last green tip moves there
        assert run.state.last_green == tip
        assert [name for name, _ in events] == ["tip.turned-red", "tip.turned-green"]
        assert events[1][1]["commit"] == tip and events[1][1]["red_seconds"] >= 0
        found = {r["landing_id"]: r["verified"] for r in records(run, "landing") if "verified" in r}
        (revert_row,) = [r for r in records(run, "landing") if "verified" not in r]
        assert revert_row["agent_id"] == "verifier/v1" and revert_row["new_tip"] == tip
        assert found == {
            "landing-rename": "green",
            "landing-caller": "reverted",
            "landing-docs": "red",
            "landing-notes": "red",
            revert_row["landing_id"]: "green",
        }
        red = [r for r in records(run, "verification") if r["verdict"] == "red"]
        assert len(red) == 1 and red[0]["culprit_sha"] == culprit and red[0]["confirmed"]
        assert red[0]["batch_size"] == 4 and red[0]["bisect_steps"] >= 1
        assert "retried" in red[0]["action"]
        assert records(run, "task") == []  # retried: its next attempt's rows say how it went
        # A resume runs the reverted task again, and only that one.
        assert run.landed_task_keys() == {"c1.root.rename", "c1.root.docs", "c1.root.notes"}
        assert verifier.culprits.fixes["c1.root.caller"] == 1


def test_a_flaky_red_is_recorded_as_a_flake_and_nothing_is_reverted(tmp_path: Path) -> None:
    state = tmp_path / "flaked"
    # Fails the first time it runs anywhere, then passes: the state is outside the worktree,
    # which the sandbox would not let a check write (hence no sandbox for this one test).
    flaky = f"{CHECK} && (test -e {state} || (touch {state}; exit 1))"
    with a_run(tmp_path, {"lib.py": LIB, "test_lib.py": LIB_TEST}, check=flaky,
               sandbox=False) as run:  # fmt: skip
        run.state.last_green = run.workspace.tip()  # checked before the flake could happen
        verifier = Verifier(run, width=2)
        cycle = Cycle([planned(run, n) for n in ("a", "b", "c")])
        verifier.serve(cycle)  # type: ignore[arg-type]
        for name in ("a", "b", "c"):
            tip = land(run, name, {f"{name}.txt": name}, verifier)
        verifier.verify(tip)
        assert run.workspace.tip() == tip and cycle.given == []  # nothing reverted
        (flake,) = records(run, "verification")
        assert flake["verdict"] == "flake" and flake["flake"] and not flake["confirmed"]
        verifier.verify(tip)  # checked anew: green
        assert run.state.last_green == tip


def test_policy_repair_gives_the_culprits_planner_a_repair_task(tmp_path: Path) -> None:
    with a_run(tmp_path, {"lib.py": LIB, "test_lib.py": LIB_TEST}, on_red="repair") as run:
        verifier = Verifier(run, width=2)
        verifier.verify(run.workspace.tip())
        cycle = Cycle([planned(run, n) for n in ("rename", "caller")])
        verifier.serve(cycle)  # type: ignore[arg-type]
        land(run, "rename", RENAMED, verifier)
        red_tip = land(run, "caller", CALLER, verifier)
        verifier.verify(red_tip)
        assert run.workspace.tip() == red_tip  # nothing reverted
        (kind, repair), = cycle.given  # fmt: skip
        assert kind == "add" and repair.key == "c1.root.repair-caller"
        assert repair.plan_path == "root" and repair.planner_agent_id == "planner/v1/c1/root"
        assert repair.base_commit == red_tip and sorted(repair.spec.files) == sorted(CALLER)
        assert "from lib import total" in repair.spec.description  # the culprit's diff
        assert "ImportError" in repair.spec.description  # the check's output
        verifier.verified = None
        verifier.verify(red_tip)  # still red, the repair in flight: no second repair
        assert len(cycle.given) == 1
        verifier.task_ended("c1.root.repair-caller", "failed")  # the repair did not land
        verifier.verify(red_tip)
        assert [k for k, _ in cycle.given] == ["add", "add"]
        assert cycle.given[1][1].key == "c1.root.repair-caller-2"
        verifier.task_ended("c1.root.repair-caller-2", "failed")
        verifier.verify(red_tip)  # repairs used up (max_repairs 2): reverted instead
        (revert,) = run.workspace.landed_trailers(f"{red_tip}..{run.workspace.tip()}")
        assert revert["task"] == "c1.root.caller" and cycle.given[-1] == (
            "unland",
            "c1.root.caller",
        )


def test_a_red_tip_checked_before_the_repair_landed_gets_no_second_repair(tmp_path: Path) -> None:
    """The repair lands while the verifier checks an older red tip that blames the same culprit:
    that tip proves nothing about the fix, so no second repair; a tip with the fix decides."""
    fixed = {"report.py": CALLER["report.py"].replace("import total", "import sum_of as total")}
    with a_run(tmp_path, {"lib.py": LIB, "test_lib.py": LIB_TEST}, on_red="repair") as run:
        verifier = Verifier(run, width=2)
        verifier.verify(run.workspace.tip())
        cycle = Cycle([planned(run, n) for n in ("rename", "caller", "docs", "repair-caller")])
        verifier.serve(cycle)  # type: ignore[arg-type]
        land(run, "rename", RENAMED, verifier)
        verifier.verify(land(run, "caller", CALLER, verifier))
        assert [task.key for _, task in cycle.given] == ["c1.root.repair-caller"]
        stale = land(run, "docs", {"docs.txt": "docs\n"}, verifier)  # red: the fix is not in
        fix = land(run, "repair-caller", fixed, verifier)
        verifier.task_ended("c1.root.repair-caller", "landed", fix)
        verifier.verify(stale)  # checked before the fix landed: it still blames the caller
        assert len(cycle.given) == 1
        (red,) = [r for r in records(run, "verification") if r["commit_sha"] == stale]
        assert (
            red["action"].startswith("none: its fix")
            and red["culprit_task_key"] == "c1.root.caller"
        )
        verifier.verify(fix)
        assert run.state.last_green == fix and len(cycle.given) == 1


def test_on_a_red_tip_a_second_failure_is_refused_and_a_fix_lands(tmp_path: Path) -> None:
    with a_run(tmp_path, {"lib.py": LIB, "test_lib.py": LIB_TEST}) as run:
        ws = run.workspace
        run.state.last_green = ws.tip()
        land(run, "rename", RENAMED)
        land(run, "caller", CALLER)
        red = ws.tip()
        assert not run.checks.at(red).passed

        def gate(name: str, files: dict[str, str]) -> tuple[str, str] | None:
            with ws.worktree(name, red) as wt:
                for path, text in files.items():
                    (wt / path).write_text(text)
                ws.commit(wt, name, {"Devswarm-Task": name})
                return repository_gate(run, wt)

        second = gate("second", {"test_more.py": "import unittest\n\n\nclass T(unittest.TestCase):"
                                 "\n    def test_no(self):\n        self.fail('new failure')\n"})  # fmt: skip
        assert second is not None and "last green tip" in second[1]
        assert "new failure" in second[0]
        fix = gate("fix", {"report.py": CALLER["report.py"].replace("total", "sum_of")
                           .replace("'sum_of ", "'total ")})  # fmt: skip
        assert fix is None
        unrelated = gate("unrelated", {"notes.txt": "notes\n"})
        assert unrelated is None  # adds no failure of its own


def test_strict_mode_lands_only_candidates_that_pass_stacked_and_in_parallel(
    tmp_path: Path,
) -> None:
    with a_run(tmp_path, {"lib.py": LIB, "test_lib.py": LIB_TEST},
               verify_before_land=True) as run:  # fmt: skip
        ws = run.workspace
        queue = MergeQueue(run, width=3, gather_seconds=0.3)
        run.merge_queue = queue
        base = ws.tip()
        changes = {"rename": RENAMED, "caller": CALLER, "docs": {"docs.txt": "d\n"},
                   "notes": {"notes.txt": "n\n"}}  # fmt: skip
        results: dict[str, Any] = {}

        def one(name: str) -> None:
            with ws.worktree(name, base) as wt:
                for path, text in changes[name].items():
                    (wt / path).write_text(text)
                ws.commit(wt, name, {"Devswarm-Task": name})
                results[name] = queue.land(wt)

        threads = [threading.Thread(target=one, args=(n,)) for n in changes]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        queue.stop()
        statuses = {n: r.status for n, r in results.items()}
        # Whichever of the pair came second in the queue is refused; everything else lands.
        assert sorted(statuses.values()) == ["landed", "landed", "landed", "refused"], statuses
        refused = next(n for n, s in statuses.items() if s == "refused")
        assert refused in ("rename", "caller") and "fails on the landing candidate" in (
            results[refused].reason or ""
        )
        commits = git(ws.clone, "rev-list", "--first-parent", f"{base}..{ws.tip()}").split()
        assert len(commits) == 3 and all(run.checks.at(c).passed for c in commits)
        assert queue.rounds < 4  # stacked: fewer rounds than changes


@pytest.mark.parametrize("policy", ["revert", "repair"])
def test_the_verifier_thread_settles_after_acting(tmp_path: Path, policy: str) -> None:
    with a_run(tmp_path, {"lib.py": LIB, "test_lib.py": LIB_TEST}, on_red=policy) as run:
        verifier = Verifier(run, poll_seconds=0.2).start()
        try:
            verifier.settle(60)
            cycle = Cycle([planned(run, n) for n in ("rename", "caller")])
            verifier.serve(cycle)  # type: ignore[arg-type]
            land(run, "rename", RENAMED, verifier)
            land(run, "caller", CALLER, verifier)
            verifier.settle(120)
        finally:
            verifier.stop()
        assert [k for k, _ in cycle.given] == ["retry" if policy == "revert" else "add"]
        assert verifier.verified == run.workspace.tip()


def test_a_break_hidden_behind_a_reverted_one_is_found_next(tmp_path: Path) -> None:
    """Two pairs break the tip one after the other: the second break lands on an already red
    tip. After the first culprit's revert the tip is still red; the next bisection judges each
    landing with the first culprit undone and names the second culprit, not the first again."""
    files = {"lib.py": LIB, "test_lib.py": LIB_TEST, "lib2.py": LIB.replace("total", "count"),
             "test_lib2.py": LIB_TEST.replace("total", "count").replace("lib", "lib2")}  # fmt: skip
    renamed2 = {k.replace("lib", "lib2"): v.replace("sum_of", "count_of").replace("lib", "lib2")
                for k, v in RENAMED.items()}  # fmt: skip
    caller2 = {k.replace("report", "report2"): v.replace("total", "count").replace("lib", "lib2")
               .replace("report", "report2") for k, v in CALLER.items()}  # fmt: skip
    with a_run(tmp_path, files) as run:
        verifier = Verifier(run, width=2)
        verifier.verify(run.workspace.tip())
        cycle = Cycle([planned(run, n) for n in ("rename", "caller", "rename2", "caller2")])
        verifier.serve(cycle)  # type: ignore[arg-type]
        land(run, "rename", RENAMED, verifier)
        first = land(run, "caller", CALLER, verifier)
        land(run, "rename2", renamed2, verifier)
        second = land(run, "caller2", caller2, verifier)
        verifier.verify(run.workspace.tip())
        verifier.verify(run.workspace.tip())  # still red: the second break
        tip = run.workspace.tip()
        reverts = [r["revert"] for r in run.workspace.landed_trailers(f"{second}..{tip}")]
        assert reverts == [first, second]
        verifier.verify(tip)
        assert run.state.last_green == tip and run.checks.at(tip).passed
        assert [k for k, _ in cycle.given] == ["retry", "retry"]


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--on-red", "ignore"], "devswarm: --on-red must be revert or repair, not 'ignore'"),
        (["--max-repairs", "-1"], "devswarm: --max-repairs must be 0 or more, not -1"),
    ],
)
def test_the_cli_refuses_bad_verifier_flags_in_one_line(
    tmp_path: Path, flags: list[str], message: str
) -> None:
    import subprocess
    import sys

    repo = make_repo(tmp_path / "user", {"README.md": "x\n"})
    done = subprocess.run(
        [sys.executable, "-m", "devswarm.cli", "run", "--repo", str(repo), "--goal", "g", *flags],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and done.stderr.strip() == message


def test_a_config_file_sets_the_policy_and_refuses_an_unknown_one(tmp_path: Path) -> None:
    from devswarm.errors import UserError
    from devswarm.settings import read_file

    good = tmp_path / "good.toml"
    good.write_text('on_red = "repair"\nmax_repairs = 1\nverify_before_land = true\n')
    assert read_file(good) == {"on_red": "repair", "max_repairs": 1, "verify_before_land": True}
    bad = tmp_path / "bad.toml"
    bad.write_text('on_red = "ignore"\n')
    with pytest.raises(UserError, match=r"bad.toml: on_red: Input should be 'revert' or 'repair'"):
        read_file(bad)


def test_a_landing_between_a_culprit_and_its_revert_was_a_red_tip(tmp_path: Path) -> None:
    """Judged with the culprit undone it is green, but as a tip it was red: landings.verified
    (and tip_health) record what the tip was, as git's first-parent line shows it."""
    with a_run(tmp_path, {"lib.py": LIB, "test_lib.py": LIB_TEST}) as run:
        verifier = Verifier(run, width=2)
        verifier.verify(run.workspace.tip())
        verifier.serve(Cycle([planned(run, n) for n in ("rename", "caller", "notes")]))  # type: ignore[arg-type]
        land(run, "rename", RENAMED, verifier)
        culprit = land(run, "caller", CALLER, verifier)
        land(run, "notes", {"notes.txt": "n\n"}, verifier)  # lands before the verifier acts
        verifier.verify(culprit)  # the tip it saw: the culprit's; the revert goes on top of notes
        tip = run.workspace.tip()
        verifier.verify(tip)
        assert run.state.last_green == tip
        found = {r["landing_id"]: r["verified"] for r in records(run, "landing") if "verified" in r}
        assert found["landing-caller"] == "reverted" and found["landing-notes"] == "red"
        assert found["landing-rename"] == "green"
