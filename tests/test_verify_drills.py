"""Verifier drills: semantic conflicts landing concurrently, a flaky check, a red tip's gate.

Each drill runs a whole swarm through real Prefect, real git and the offline model server, on a
repository with a real test suite, then hands the result to two independent checkers: the
fault drills' (tests/checker.py: nothing lost, nothing landed twice except after its own
revert, DuckDB equal to git and to the request log, the key nowhere) and the verifier's
(tests/verify_checker.py: the check run on every first-parent commit of the branch).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import checker, verify_checker
from tests.conftest import make_repo
from tests.helpers import JUDGE_DONE, plan_reply, rows, task, tc
from tests.test_drills import NO_FOLLOWUPS, drill  # noqa: F401 (the drill fixture)

CHECK = "python -m unittest -q"
PAIRS = 3
FILLERS = 20


def mod(i: int, name: str) -> str:
    return f"def {name}_{i}(x):\n    return x + {i}\n"


def mod_test(i: int, name: str) -> str:
    return (
        f"import unittest\n\nfrom mod{i} import {name}_{i}\n\n\n"
        f"class Mod{i}(unittest.TestCase):\n    def test_add(self):\n"
        f"        self.assertEqual({name}_{i}(1), {1 + i})\n"
    )


def use(i: int, name: str) -> str:
    return f"from mod{i} import {name}_{i}\n\n\ndef twice(x):\n    return 2 * {name}_{i}(x)\n"


def use_test(i: int) -> str:
    return (
        f"import unittest\n\nfrom use{i} import twice\n\n\n"
        f"class Use{i}(unittest.TestCase):\n    def test_twice(self):\n"
        f"        self.assertEqual(twice(1), {2 * (1 + i)})\n"
    )


FLAKY_TEST = '''import os
import unittest

STATE = {state!r}


class Flaky(unittest.TestCase):
    def test_once(self):
        """Fails the first time the verifier's scratch worktree checks the marker (then never):
        a flaky check, which must be recorded as a flake and never reverted."""
        where = os.path.basename(os.getcwd())
        if not (os.path.exists("flaky_marker.txt") and where.startswith("check-")):
            return
        try:
            os.close(os.open(STATE, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return
        self.fail("flaky: this test fails once")
'''


def writes(files: dict[str, str], latency: float | None = None) -> list[dict]:
    step: dict = {"tool_calls": [tc("write_file", path=p, content=c) for p, c in files.items()]}
    if latency is not None:
        step["latency"] = latency
    return [step, {"tool_calls": [tc("finish", summary="done")]}]


def worker(name: str, steps: list[dict], attempt: str = "*") -> dict:
    return {"match": f"worker/*/{name}/{attempt}", "steps": steps}


# A refused worker tries again after a moment, as a model told "your change cannot land" would
# (the tip may be green again by then).
TRY_AGAIN = {
    "match": "worker/*",
    "contains": "cannot land",
    "steps": [{"latency": 2.0, "tool_calls": [tc("finish", summary="tried again")]}],
}


def semantic_repo(tmp_path: Path) -> Path:
    files = {f"mod{i}.py": mod(i, "old") for i in range(PAIRS)}
    files |= {f"test_mod{i}.py": mod_test(i, "old") for i in range(PAIRS)}
    files["test_flaky.py"] = FLAKY_TEST.format(state=str(tmp_path / "flake-state"))
    files["README.md"] = "a repository with a real test suite\n"
    return make_repo(tmp_path / "user", files)


@pytest.mark.drill
@pytest.mark.slow
def test_semantic_conflicts_are_reverted_retried_and_the_tip_ends_green(
    drill,  # noqa: F811
    tmp_path: Path,
) -> None:
    """Pairs that pass alone and break together land concurrently with 20 other tasks: every
    break is found, its culprit (the later of the pair) reverted and retried on the green tip;
    a flaky check is recorded as a flake and nothing is reverted for it."""
    repo = semantic_repo(tmp_path)
    base = checker.git(repo, "rev-parse", "HEAD").strip()
    agents, names = [NO_FOLLOWUPS], []
    for i in range(PAIRS):
        renamed = {f"mod{i}.py": mod(i, "new"), f"test_mod{i}.py": mod_test(i, "new")}
        caller = {f"use{i}.py": use(i, "old"), f"test_use{i}.py": use_test(i)}
        fixed_caller = {f"use{i}.py": use(i, "new"), f"test_use{i}.py": use_test(i)}
        # The later of the pair is the culprit; its retry starts from a tip with the other.
        agents += [
            worker(f"rename-{i}", writes(renamed), "a1"),
            worker(f"rename-{i}", writes(renamed | fixed_caller)),
            worker(f"use-{i}", writes(caller), "a1"),
            worker(f"use-{i}", writes(fixed_caller)),
        ]
        names += [f"rename-{i}", f"use-{i}"]
    fillers = [f"f{n:02}" for n in range(FILLERS)]
    for n in fillers:
        probe = [{"tool_calls": [tc("run", command="env")]}] if n == "f00" else []
        agents.append(worker(n, [*probe, *writes({f"notes/{n}.txt": f"{n}\n"})]))
    agents.append(worker("flaky", writes({"flaky_marker.txt": "flaky\n"})))
    plan = [task(n, []) for n in names + fillers]
    plan.append(task("flaky", ["flaky_marker.txt"], depends_on=names + fillers))
    agents += [{"match": "planner/*", "steps": [plan_reply(*plan)]}, JUDGE_DONE]
    scenario = {"latency": 0.05, "agents": agents, "rules": [TRY_AGAIN]}

    d = drill(
        scenario, repo, run_id="drill-verify", check=CHECK, max_workers=4,
        max_tasks_per_plan=len(plan), sandbox=False,  # the flaky test keeps a state file
    )  # fmt: skip
    assert d.summary["status"] == "done", d.summary
    db = d.home / "devswarm.duckdb"
    facts = drill.check(d)
    truth = verify_checker.assert_verified(
        repo=repo, branch=d.summary["branch"], base=base, check=CHECK, db=db,
        run_id="drill-verify", policy="revert",
    )  # fmt: skip
    print("drill facts:", facts, truth)
    assert truth["breaks"] >= 1 and truth["reverts"] >= 1
    assert truth["flakes"] >= 1  # the flaky check hit the verifier, and nothing was reverted
    statuses = dict(rows(db, "SELECT task_key, status FROM tasks"))
    assert all(s == "landed" for s in statuses.values()), statuses
    assert facts["landed"] == len(plan) and facts["reverts"] == truth["reverts"]
    retried = rows(db, "SELECT count(*) FROM agents WHERE agent_id LIKE '%/a2'")[0][0]
    assert retried == truth["reverts"]  # each reverted task ran once more, and landed
    (share,) = rows(db, "SELECT green_share FROM tip_health")[0]
    assert share is not None and 0 < share <= 1


@pytest.mark.drill
@pytest.mark.slow
def test_on_a_red_tip_a_second_failure_is_refused_and_a_fix_lands(
    drill,  # noqa: F811
    tmp_path: Path,
) -> None:
    """Policy repair keeps the tip red until the repair lands. Meanwhile a task adding a second
    failure is refused (it fails on the last green tip too), a task that adds no failure lands,
    and the repair task — a fix of the red tip — lands; nothing is reverted."""
    repo = make_repo(
        tmp_path / "user",
        {"mod0.py": mod(0, "old"), "test_mod0.py": mod_test(0, "old"), "README.md": "red\n"},
    )
    base = checker.git(repo, "rev-parse", "HEAD").strip()
    failing = (
        "import unittest\n\n\nclass Second(unittest.TestCase):\n"
        "    def test_second(self):\n        self.fail('a second failure')\n"
    )
    scenario = {
        "latency": 0.05,
        "rules": [{**TRY_AGAIN, "steps": [{"tool_calls": [tc("finish", summary="again")]}]}],
        "agents": [
            NO_FOLLOWUPS,
            {"match": "planner/*", "steps": [plan_reply(
                task("rename", []), task("use", []),
                task("second", [], depends_on=["use"]), task("fine", [], depends_on=["use"]),
            )]},
            worker("rename", writes({"mod0.py": mod(0, "new"), "test_mod0.py": mod_test(0, "new")})),
            # The caller lands after the rename: the tip turns red.
            worker("use", writes({"use0.py": use(0, "old"), "test_use0.py": use_test(0)}, 3.0)),
            worker("second", writes({"test_second.py": failing})),
            worker("fine", writes({"notes.txt": "no new failure\n"})),
            worker("repair-use", writes({"use0.py": use(0, "new")})),
            {"match": "worker/*", "steps": [{"tool_calls": [tc("finish", summary="nothing")]}]},
            JUDGE_DONE,
        ],
    }  # fmt: skip
    d = drill(scenario, repo, run_id="drill-red", check=CHECK, on_red="repair", max_workers=4)
    assert d.summary["status"] == "done", d.summary
    db = d.home / "devswarm.duckdb"
    statuses = dict(rows(db, "SELECT task_key, status FROM tasks"))
    reasons = dict(rows(db, "SELECT task_key, reason FROM tasks"))
    assert statuses == {
        "c1.root.rename": "landed",
        "c1.root.use": "landed",
        "c1.root.second": "failed",
        "c1.root.fine": "landed",
        "c1.root.repair-use": "landed",
    }, reasons
    assert "last green tip" in reasons["c1.root.second"]
    actions = [a for (a,) in rows(db, "SELECT action FROM verifications WHERE verdict = 'red'")]
    assert any(a.startswith("repair task c1.root.repair-use") for a in actions), actions
    facts = drill.check(d, env_probe=False)
    truth = verify_checker.assert_verified(
        repo=repo, branch=d.summary["branch"], base=base, check=CHECK, db=db, run_id="drill-red",
        policy="repair",
    )  # fmt: skip
    print("drill facts:", facts, truth)
    assert truth["breaks"] == 1 and truth["reverts"] == 0 and facts["reverts"] == 0


def test_the_checker_allows_a_task_again_only_after_its_own_revert() -> None:
    def on_branch(*commits: tuple[str, str | None, str | None]) -> list:
        return [(c, "r", t, rv) for c, t, rv in reversed(commits)]  # newest first, as git logs

    standing, twice = checker.landings_per_task(
        on_branch(("a1", "a", None), ("x", "a", "a1"), ("a2", "a", None), ("b1", "b", None))
    )
    assert twice == [] and standing == {("r", "a"): True, ("r", "b"): True}
    standing, twice = checker.landings_per_task(on_branch(("a1", "a", None), ("x", "a", "a1")))
    assert twice == [] and standing == {("r", "a"): False}
    _, twice = checker.landings_per_task(on_branch(("a1", "a", None), ("a2", "a", None)))
    assert twice == ["r/a"]
    _, twice = checker.landings_per_task(
        on_branch(("a1", "a", None), ("x", "a", "zz"), ("a2", "a", None))
    )
    assert twice and "not its landing" in twice[0]


@pytest.mark.slow
def test_strict_mode_never_lets_the_tip_go_red(drill, tmp_path: Path) -> None:  # noqa: F811
    """--verify-before-land: the pair's second change is checked on the tip before it lands,
    refused (its worker told why), and every commit of the branch passes the check."""
    repo = make_repo(
        tmp_path / "user",
        {"mod0.py": mod(0, "old"), "test_mod0.py": mod_test(0, "old"), "README.md": "strict\n"},
    )
    base = checker.git(repo, "rev-parse", "HEAD").strip()
    again = {"match": "worker/*", "contains": "landing candidate",
             "steps": [{"tool_calls": [tc("finish", summary="again")]}]}  # fmt: skip
    scenario = {
        "latency": 0.05,
        "rules": [again],
        "agents": [
            NO_FOLLOWUPS,
            {"match": "planner/*", "steps": [plan_reply(
                task("rename", []), task("use", []), task("a", []), task("b", []))]},
            worker("rename", writes({"mod0.py": mod(0, "new"), "test_mod0.py": mod_test(0, "new")})),
            worker("use", writes({"use0.py": use(0, "old"), "test_use0.py": use_test(0)}, 2.0)),
            worker("a", [{"tool_calls": [tc("run", command="env")]},
                         *writes({"a.txt": "a\n"})]),
            worker("b", writes({"b.txt": "b\n"})),
            JUDGE_DONE,
        ],
    }  # fmt: skip
    d = drill(scenario, repo, run_id="drill-strict", check=CHECK, verify_before_land=True)
    db = d.home / "devswarm.duckdb"
    statuses = dict(rows(db, "SELECT task_key, status FROM tasks"))
    assert statuses == {"c1.root.rename": "landed", "c1.root.use": "failed",
                        "c1.root.a": "landed", "c1.root.b": "landed"}, statuses  # fmt: skip
    assert (
        "landing refused"
        in rows(db, "SELECT reason FROM tasks WHERE task_key = 'c1.root.use'")[0][0]
    )
    facts = drill.check(d)
    truth = verify_checker.assert_verified(
        repo=repo, branch=d.summary["branch"], base=base, check=CHECK, db=db,
        run_id="drill-strict", policy="revert",
    )  # fmt: skip
    assert truth["breaks"] == 0 and truth["reverts"] == 0 and facts["landed"] == 3
