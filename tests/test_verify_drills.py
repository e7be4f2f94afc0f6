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
BRANCH = "refs/heads/devswarm/drill-verify"


def at_the_tip():
    """Whether this worktree's HEAD is the landing branch's tip (read from git's files)."""
    try:
        gitdir = open(".git").read().split(":", 1)[1].strip()
        common = os.path.join(gitdir, open(os.path.join(gitdir, "commondir")).read().strip())
        head = open(os.path.join(gitdir, "HEAD")).read().strip()
        return head == open(os.path.join(common, BRANCH)).read().strip()
    except (OSError, IndexError):
        return False


class Flaky(unittest.TestCase):
    def test_once(self):
        """Fails the first time the branch's tip is checked with the marker (then never): a
        flaky check, which must be recorded as a flake and never reverted. Only the verifier
        checks the tip as it stands (a worker checks its own worktree, a bisection older
        commits, the gate its change replayed elsewhere)."""
        if not (os.path.exists("flaky_marker.txt") and at_the_tip()):
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
                task("second", [], depends_on=["rename", "use"]),
                task("fine", [], depends_on=["rename", "use"]),
            )]},
            worker("rename", writes({"mod0.py": mod(0, "new"), "test_mod0.py": mod_test(0, "new")})),
            # The caller lands after the rename: the tip turns red.
            worker("use", writes({"use0.py": use(0, "old"), "test_use0.py": use_test(0)}, 3.0)),
            worker("second", writes({"test_second.py": failing})),
            worker("fine", writes({"notes.txt": "no new failure\n"})),
            # The later of the two is the culprit (the caller, unless a slow start swaps them).
            worker("repair-use", writes({"use0.py": use(0, "new")})),
            worker("repair-rename", writes({"use0.py": use(0, "new")})),
            {"match": "worker/*", "steps": [{"tool_calls": [tc("finish", summary="nothing")]}]},
            JUDGE_DONE,
        ],
    }  # fmt: skip
    d = drill(scenario, repo, run_id="drill-red", check=CHECK, on_red="repair", max_workers=4)
    assert d.summary["status"] == "done", d.summary
    db = d.home / "devswarm.duckdb"
    statuses = dict(rows(db, "SELECT task_key, status FROM tasks"))
    reasons = dict(rows(db, "SELECT task_key, reason FROM tasks"))
    repair = next(k for k in statuses if k.startswith("c1.root.repair-"))
    assert statuses == {
        "c1.root.rename": "landed",
        "c1.root.use": "landed",
        "c1.root.second": "failed",
        "c1.root.fine": "landed",
        repair: "landed",
    }, reasons
    assert "last green tip" in reasons["c1.root.second"]
    actions = [a for (a,) in rows(db, "SELECT action FROM verifications WHERE verdict = 'red'")]
    assert any(a.startswith(f"repair task {repair}") for a in actions), actions
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
    reasons = dict(rows(db, "SELECT task_key, reason FROM tasks"))
    # The later of the pair to reach the queue is refused (the caller is meant to be later, but
    # a slow start may swap them); everything else lands.
    assert sorted(statuses.values()) == ["failed", "landed", "landed", "landed"], statuses
    refused = next(k for k, v in statuses.items() if v == "failed")
    assert refused in ("c1.root.rename", "c1.root.use")
    assert "landing refused" in reasons[refused]
    facts = drill.check(d)
    truth = verify_checker.assert_verified(
        repo=repo, branch=d.summary["branch"], base=base, check=CHECK, db=db,
        run_id="drill-strict", policy="revert",
    )  # fmt: skip
    assert truth["breaks"] == 0 and truth["reverts"] == 0 and facts["landed"] == 3


PAIR_CHECK = """import pathlib, sys
for a in pathlib.Path("pairs").glob("a*.txt"):
    b = a.with_name("b" + a.name[1:])
    if b.exists() and b.read_text().strip() == "B-old":
        sys.exit(1)
"""


def _history(tmp_path: Path, reverts: list[int]) -> tuple[Path, str, list[str]]:
    """A branch: a0, a1, b1 (a break), b0 (a break hidden behind it), then the reverts of the
    commits at the positions in `reverts`, as the verifier would land them."""
    from tests.conftest import git

    repo = make_repo(tmp_path / "user", {"check.py": PAIR_CHECK, "pairs/.keep": ""})
    base = git(repo, "rev-parse", "HEAD")
    git(repo, "switch", "-q", "-c", "devswarm/v")
    commits = []
    for name, text in (("a0", "A"), ("a1", "A"), ("b1", "B-old"), ("b0", "B-old")):
        (repo / "pairs" / f"{name}.txt").write_text(text + "\n")
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "-m", f"{name}\n\nDevswarm-Run: r\nDevswarm-Task: c1.{name}")
        commits.append(git(repo, "rev-parse", "HEAD"))
    for i in reverts:
        git(repo, "revert", "--no-edit", commits[i])
        git(repo, "commit", "-q", "--amend", "-m", f"Revert {i}\n\nDevswarm-Run: r\n"
            f"Devswarm-Task: c1.x{i}\nDevswarm-Revert: {commits[i]}")  # fmt: skip
        commits.append(git(repo, "rev-parse", "HEAD"))
    git(repo, "switch", "-q", "main")
    return repo, base, commits


def _store(tmp_path: Path, commits: list[str], culprits: list[str], verified: list[str]) -> Path:
    from devswarm.store.store import Store

    db = tmp_path / "v.duckdb"
    with Store(db) as store:
        store.add("run", run_id="r", started_at="2026-12-01T10:00:00Z",
                  ended_at="2026-12-01T10:01:00Z")  # fmt: skip
        for n, (commit, state) in enumerate(zip(commits, verified, strict=True)):
            store.add("landing", landing_id=f"l{n}", run_id="r", status="landed", agent_id="w",
                      new_tip=commit, old_tip=f"p{n}", verified=state,
                      ended_at=f"2026-12-01T10:00:{10 + n:02}Z")  # fmt: skip
        for n, culprit in enumerate(culprits):
            store.add("verification", verification_id=f"v{n}", run_id="r", verdict="red",
                      confirmed=True, culprit_sha=culprit, commit_sha=None)  # fmt: skip
    return db


def test_the_verifier_checker_accepts_a_hidden_break_and_refuses_a_wrong_culprit(
    tmp_path: Path,
) -> None:
    repo, base, commits = _history(tmp_path / "right", [2, 3])
    db = _store(tmp_path / "right", commits, [commits[2], commits[3]],
                ["green", "green", "reverted", "reverted", "red", "green"])  # fmt: skip
    facts = verify_checker.assert_verified(
        repo=repo, branch="devswarm/v", base=base, check="python check.py", db=db, run_id="r",
        policy="revert",
    )  # fmt: skip
    assert facts["breaks"] == 1 and facts["reverts"] == 2
    # The wrong culprit: a green commit reverted (as a flaky check would have it), and the
    # real break never reverted.
    repo, base, commits = _history(tmp_path / "wrong", [1, 3, 2])
    db = _store(tmp_path / "wrong", commits, [commits[1]],
                ["green", "reverted", "red", "red", "red", "red", "green"])  # fmt: skip
    found = verify_checker.check_verifier(
        repo=repo, branch="devswarm/v", base=base, check="python check.py", db=db, run_id="r",
        policy="revert",
    )  # fmt: skip
    assert any("names" in p and "not a culprit" in p for p in found.problems), found.problems
    assert any("no confirmed verification names the break" in p for p in found.problems)
