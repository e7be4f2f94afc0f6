"""The git workspace and landing lane, against real git repositories in tmp_path."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from devswarm.errors import UserError
from devswarm.git.conflict import ConflictError
from devswarm.git.plumbing import check_branch_name
from devswarm.git.workspace import Workspace
from tests.conftest import git

BRANCH = "devswarm/run1"
TRAILERS = {"Devswarm-Run": "run1", "Devswarm-Task": "t1", "Devswarm-Agent": "a1"}


pytestmark = pytest.mark.usefixtures("isolated_git_config")


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A user repository on main with history, a second branch, and uncommitted work."""
    r = tmp_path / "user"
    r.mkdir()
    git(r, "init", "-q", "-b", "main")
    (r / "src").mkdir()
    (r / "README.md").write_text("# project\n")
    (r / "src" / "a.py").write_text("x = 1\n")
    git(r, "add", "-A")
    git(r, "commit", "-qm", "initial")
    git(r, "checkout", "-qb", "other")
    (r / "other.txt").write_text("other\n")
    git(r, "add", "-A")
    git(r, "commit", "-qm", "other work")
    git(r, "checkout", "-q", "main")
    (r / "src" / "b.txt").write_text("b\n")
    git(r, "add", "-A")
    git(r, "commit", "-qm", "second")
    # The user's own uncommitted state: one staged change, one unstaged, one untracked file.
    (r / "README.md").write_text("# project\nstaged\n")
    git(r, "add", "README.md")
    (r / "src" / "b.txt").write_text("b edited\n")
    (r / "scratch.txt").write_text("untracked\n")
    return r


def snapshot(repo: Path, exclude_ref: str = f"refs/heads/{BRANCH}") -> dict:
    """Everything of the user's repository devswarm must not change."""
    dot_git = repo / ".git"
    files = {
        str(p.relative_to(repo)): p.read_bytes()
        for p in repo.rglob("*")
        if p.is_file() and ".git" not in p.relative_to(repo).parts
    }
    refs = [
        line
        for line in git(repo, "for-each-ref", "--format=%(refname) %(objectname)").splitlines()
        if not line.startswith(exclude_ref + " ")
    ]
    index = dot_git / "index"
    return {
        "files": files,
        "HEAD": (dot_git / "HEAD").read_bytes(),
        "index": (index.read_bytes(), index.stat().st_mtime_ns),
        "config": (dot_git / "config").read_bytes(),
        "hooks": sorted(p.name for p in (dot_git / "hooks").iterdir()),
        "refs": refs,
        "worktrees": git(repo, "worktree", "list", "--porcelain"),
    }


def user_tip(repo: Path, branch: str = BRANCH) -> str | None:
    out = git(repo, "rev-parse", "--verify", "--quiet", f"refs/heads/{branch}", check=False)
    return out or None


def is_ancestor(cwd: Path, a: str, b: str) -> bool:
    proc = subprocess.run(["git", "merge-base", "--is-ancestor", a, b], cwd=cwd)
    return proc.returncode == 0


def work(ws: Workspace, name: str, files: dict[str, str], base: str | None = None) -> Path:
    """A worktree with `files` written and committed."""
    wt = ws.add_worktree(name, base or ws.tip())
    for rel, text in files.items():
        (wt / rel).parent.mkdir(parents=True, exist_ok=True)
        (wt / rel).write_text(text)
    assert ws.commit(wt, f"task {name}", {**TRAILERS, "Devswarm-Task": name}) is not None
    return wt


# ---------------------------------------------------------------------------------------------


def test_single_landing_fast_forwards_user_branch_and_touches_nothing_else(
    repo: Path, tmp_path: Path
) -> None:
    before = snapshot(repo)
    head = git(repo, "rev-parse", "HEAD")
    ws = Workspace(repo, tmp_path / "home", BRANCH)
    assert ws.base_commit == head == ws.tip()
    assert user_tip(repo) == head  # created at the base on open

    wt = ws.add_worktree("t1", ws.tip())
    assert wt == tmp_path / "home" / "worktrees" / "t1"
    assert (wt / "src" / "b.txt").read_text() == "b\n"  # committed content, not the user's edit
    assert ws.commit(wt, "nothing", TRAILERS) is None
    (wt / "new.txt").write_text("hello\n")
    sha = ws.commit(wt, "Add new.txt", TRAILERS)
    result = ws.land(wt)

    assert result.status == "landed" and result.published
    assert (result.commit, result.old_tip, result.new_tip) == (sha, head, sha)
    assert ws.tip() == sha == user_tip(repo)
    assert git(repo, "log", "-1", "--format=%an <%ae> %cn", sha) == (
        "devswarm <devswarm@localhost> devswarm"
    )
    assert git(repo, "show", f"{sha}:new.txt") == "hello"
    assert snapshot(repo) == before
    ws.remove_worktree(wt)
    assert not wt.exists()
    ws.remove_worktree(wt)  # a second removal is harmless


def test_32_concurrent_workers_all_land_without_loss(repo: Path, tmp_path: Path) -> None:
    ws = Workspace(repo, tmp_path / "home", BRANCH)
    base = ws.tip()

    def worker(i: int):
        wt = ws.add_worktree(f"w{i}", ws.tip())
        try:
            (wt / f"f{i}.txt").write_text(f"{i}\n")
            ws.commit(wt, f"task {i}", {**TRAILERS, "Devswarm-Task": f"t{i}"})
            return ws.land(wt)
        finally:
            ws.remove_worktree(wt)

    with ThreadPoolExecutor(32) as pool:
        results = list(pool.map(worker, range(32)))

    assert [r.status for r in results] == ["landed"] * 32
    tip = ws.tip()
    assert user_tip(repo) == tip
    for r in results:
        assert is_ancestor(ws.clone, r.commit, tip)
    tree = git(ws.clone, "ls-tree", "--name-only", tip).split()
    assert {f"f{i}.txt" for i in range(32)} <= set(tree)
    assert int(git(ws.clone, "rev-list", "--count", f"{base}..{tip}")) == 32
    total_retries = sum(r.cas_retries for r in results)
    print(f"32 workers: cas_retries total={total_retries}")
    assert total_retries <= 32
    assert list((tmp_path / "home" / "worktrees").iterdir()) == []


def test_conflict_then_resolution_turn_lands_both_changes(repo: Path, tmp_path: Path) -> None:
    ws = Workspace(repo, tmp_path / "home", BRANCH)
    base = ws.tip()
    wt_a = work(ws, "a", {"src/a.py": "x = 2\n"}, base)
    wt_b = work(ws, "b", {"src/a.py": "x = 3\n"}, base)
    b_commit = git(wt_b, "rev-parse", "HEAD")
    assert ws.land(wt_a).status == "landed"
    a_tip = ws.tip()

    result = ws.land(wt_b)
    assert result.status == "conflict"
    assert result.conflict_files == ["src/a.py"]
    assert any("task a" in c for c in result.their_commits)
    assert ws.tip() == a_tip
    # The lane aborted its rebase: the worker's worktree is as it was.
    assert git(wt_b, "rev-parse", "HEAD") == b_commit
    assert git(wt_b, "status", "--porcelain") == ""

    assert ws.begin_conflict(wt_b, ws.tip()) == ["src/a.py"]
    assert ws.conflict_markers_left(wt_b) == ["src/a.py"]
    with pytest.raises(ConflictError) as err:
        ws.continue_conflict(wt_b)
    assert err.value.files == ["src/a.py"]
    (wt_b / "src" / "a.py").write_text("x = 2\ny = 3\n")
    assert ws.conflict_markers_left(wt_b) == []
    resolved = ws.continue_conflict(wt_b)
    assert is_ancestor(wt_b, a_tip, resolved)

    again = ws.land(wt_b)
    assert again.status == "landed" and again.published
    assert again.old_tip == a_tip and again.new_tip == resolved == ws.tip()
    assert git(ws.clone, "show", f"{ws.tip()}:src/a.py") == "x = 2\ny = 3"
    assert user_tip(repo) == ws.tip()
    # Landing the same worktree again is a harmless no-op (a retried Prefect task).
    assert ws.land(wt_b).reason == "already on the branch"


def test_landing_onto_a_moved_tip_replays_the_commit_and_leaves_the_worktree_alone(
    repo: Path, tmp_path: Path
) -> None:
    ws = Workspace(repo, tmp_path / "home", BRANCH)
    base = ws.tip()
    wt_a = work(ws, "a", {"a.txt": "a\n"}, base)
    wt_b = work(ws, "b", {"b.txt": "b\n"}, base)
    b_commit = git(wt_b, "rev-parse", "HEAD")
    a_tip = ws.land(wt_a).new_tip

    result = ws.land(wt_b)
    assert result.status == "landed" and result.old_tip == a_tip
    new = result.new_tip
    assert new == ws.tip() == user_tip(repo) and new != b_commit
    assert git(ws.clone, "rev-parse", f"{new}^") == a_tip  # on the tip, one commit
    assert set(git(ws.clone, "ls-tree", "--name-only", new).split()) >= {"a.txt", "b.txt"}
    # What a rebase would have made: the worker's author, date and message, devswarm commits.
    fmt = "--format=%an <%ae> %ad%n%B"
    assert git(ws.clone, "show", "-s", fmt, new) == git(ws.clone, "show", "-s", fmt, b_commit)
    assert git(ws.clone, "show", "-s", "--format=%cn", new) == "devswarm"
    # The worktree was not rebased: its HEAD and files are the worker's own.
    assert git(wt_b, "rev-parse", "HEAD") == b_commit and not (wt_b / "a.txt").exists()
    stat = ws.diff_stat(wt_b, result.old_tip, new)
    assert "b.txt" in stat and "a.txt" not in stat
    # Landing it again adds nothing (a retried landing).
    again = ws.land(wt_b)
    assert again.status == "landed" and again.reason == "the changes were already on the branch"
    assert ws.tip() == new


def test_a_worker_with_two_commits_lands_both_in_order(repo: Path, tmp_path: Path) -> None:
    ws = Workspace(repo, tmp_path / "home", BRANCH)
    base = ws.tip()
    wt_b = work(ws, "b", {"b1.txt": "1\n"}, base)
    (wt_b / "b2.txt").write_text("2\n")
    assert ws.commit(wt_b, "task b, part 2", TRAILERS) is not None
    a_tip = ws.land(work(ws, "a", {"a.txt": "a\n"}, base)).new_tip
    result = ws.land(wt_b)
    assert result.status == "landed" and result.old_tip == a_tip
    log = git(ws.clone, "log", "--format=%s", f"{a_tip}..{result.new_tip}").splitlines()
    assert log == ["task b, part 2", "task b"]
    assert set(git(ws.clone, "ls-tree", "--name-only", ws.tip()).split()) >= {
        "a.txt",
        "b1.txt",
        "b2.txt",
    }


def test_commit_during_a_conflict_turn_finishes_the_rebase(repo: Path, tmp_path: Path) -> None:
    ws = Workspace(repo, tmp_path / "home", BRANCH)
    base = ws.tip()
    assert ws.land(work(ws, "a", {"src/a.py": "x = 2\n"}, base)).status == "landed"
    wt_b = work(ws, "b", {"src/a.py": "x = 3\n"}, base)
    assert ws.begin_conflict(wt_b, ws.tip()) == ["src/a.py"]
    assert ws.in_conflict(wt_b)
    assert ws.land(wt_b).status == "error"  # not while the rebase is stopped
    with pytest.raises(ConflictError):
        ws.commit(wt_b, "task b", TRAILERS)
    (wt_b / "src" / "a.py").write_text("x = 3\n")
    sha = ws.commit(wt_b, "task b", TRAILERS)
    assert not ws.in_conflict(wt_b) and sha == git(wt_b, "rev-parse", "HEAD")
    assert ws.land(wt_b).status == "landed" and ws.tip() == sha


def test_abort_conflict_restores_the_worker_commit(repo: Path, tmp_path: Path) -> None:
    ws = Workspace(repo, tmp_path / "home", BRANCH)
    base = ws.tip()
    assert ws.land(work(ws, "a", {"src/a.py": "x = 2\n"}, base)).status == "landed"
    wt_b = work(ws, "b", {"src/a.py": "x = 3\n"}, base)
    b_commit = git(wt_b, "rev-parse", "HEAD")
    assert ws.begin_conflict(wt_b, ws.tip()) == ["src/a.py"]
    ws.abort_conflict(wt_b)
    assert git(wt_b, "rev-parse", "HEAD") == b_commit
    assert (wt_b / "src" / "a.py").read_text() == "x = 3\n"


def test_cas_race_with_another_process_retries_and_loses_nothing(
    repo: Path, tmp_path: Path
) -> None:
    ws = Workspace(repo, tmp_path / "home", BRANCH)
    tip0 = ws.tip()
    intruder = git(
        work(ws, "intruder", {"intruder.txt": "other process\n"}, tip0), "rev-parse", "HEAD"
    )
    wt = work(ws, "mine", {"mine.txt": "mine\n"}, tip0)
    seen: list[str] = []

    def gate(candidate: str) -> str | None:
        seen.append(candidate)
        if len(seen) == 1:
            # Another process lands between the lane reading the tip and the swap.
            subprocess.run(
                ["git", "update-ref", f"refs/heads/{BRANCH}", intruder, tip0],
                cwd=ws.clone,
                check=True,
            )
        return None

    result = ws.land(wt, gate=gate)
    assert result.status == "landed" and result.cas_retries == 1
    assert len(seen) == 2 and result.old_tip == intruder
    tip = ws.tip()
    assert is_ancestor(ws.clone, intruder, tip) and tip == result.new_tip == user_tip(repo)
    assert {"intruder.txt", "mine.txt"} <= set(git(ws.clone, "ls-tree", "--name-only", tip).split())


def test_gate_refusal_leaves_the_branch_alone(repo: Path, tmp_path: Path) -> None:
    ws = Workspace(repo, tmp_path / "home", BRANCH)
    tip0 = ws.tip()
    wt = work(ws, "t", {"new.txt": "x\n"})
    result = ws.land(wt, gate=lambda sha: "check went from passing to failing")
    assert result.status == "refused"
    assert result.reason == "check went from passing to failing"
    assert ws.tip() == tip0 == user_tip(repo)
    assert ws.land(wt, gate=lambda sha: None).status == "landed"


def test_hostile_global_config_still_commits_and_lands(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "hostile"
    hooks = home / "hooks"
    hooks.mkdir(parents=True)
    for hook in ("pre-commit", "commit-msg", "reference-transaction", "post-checkout"):
        (hooks / hook).write_text("#!/bin/sh\necho hook ran >&2\nexit 1\n")
        (hooks / hook).chmod(0o755)
    (home / ".gitconfig").write_text(
        "[user]\n\tname = Someone\n\temail = someone@example.com\n\tsigningkey = bogus\n"
        f"[commit]\n\tgpgsign = true\n[tag]\n\tgpgsign = true\n[gpg]\n\tprogram = /bin/false\n"
        f"[core]\n\thooksPath = {hooks}\n[clone]\n\tdefaultRemoteName = upstream\n"
    )
    monkeypatch.setenv("HOME", str(home))
    # The config really bites a plain git commit.
    scratch = tmp_path / "scratch"
    subprocess.run(["git", "init", "-q", str(scratch)], check=True)
    assert (
        subprocess.run(
            ["git", "commit", "-q", "--allow-empty", "-m", "x"], cwd=scratch, capture_output=True
        ).returncode
        != 0
    )

    ws = Workspace(repo, tmp_path / "home", BRANCH)
    wt = ws.add_worktree("t", ws.tip())
    (wt / "new.txt").write_text("x\n")
    sha = ws.commit(wt, "Add new.txt", TRAILERS)
    result = ws.land(wt)
    assert result.status == "landed" and result.published and user_tip(repo) == sha
    assert git(repo, "log", "-1", "--format=%G?", sha) == "N"  # not signed
    # An agent's own plain `git commit` in its worktree is governed by the clone's config too.
    (wt / "agent.txt").write_text("y\n")
    subprocess.run(["git", "add", "agent.txt"], cwd=wt, check=True)
    proc = subprocess.run(["git", "commit", "-qm", "agent"], cwd=wt, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert ws.land(wt).status == "landed"
    assert Workspace(repo, tmp_path / "home", BRANCH).tip() == ws.tip()  # reopens fine


def test_landing_a_missing_worktree_is_an_error_not_a_crash(repo: Path, tmp_path: Path) -> None:
    ws = Workspace(repo, tmp_path / "home", BRANCH)
    tip = ws.tip()
    result = ws.land(tmp_path / "no-such-worktree")
    assert result.status == "error" and "no such folder" in (result.reason or "")
    assert ws.tip() == tip


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("missing", "does not exist"),
        ("plain", "not a git repository"),
        ("empty", "no commits"),
        ("checked-out-worktree", "is checked out in"),
        ("checked-out-main", "is checked out in"),
        ("bad-branch", "invalid branch name"),
    ],
)
def test_open_refuses_bad_input_with_one_line(
    repo: Path, tmp_path: Path, kind: str, message: str
) -> None:
    path, branch = repo, BRANCH
    if kind == "missing":
        path = tmp_path / "nowhere"
    elif kind == "plain":
        path = tmp_path / "plain"
        path.mkdir()
    elif kind == "empty":
        path = tmp_path / "empty"
        git(tmp_path, "init", "-q", str(path))
    elif kind == "checked-out-worktree":
        git(repo, "worktree", "add", "-q", "-b", "feature", str(tmp_path / "userwt"))
        branch = "feature"
    elif kind == "checked-out-main":
        branch = "main"
    else:
        branch = "bad..name"
    with pytest.raises(UserError) as err:
        Workspace(path, tmp_path / "home", branch)
    assert message in str(err.value) and "\n" not in str(err.value)
    if kind == "checked-out-worktree":
        assert str(tmp_path / "userwt") in str(err.value)


@pytest.mark.parametrize(
    "name", ["bad..name", "-x", "HEAD", "a b", "x.lock", "@", "", "refs/heads/x"]
)
def test_check_branch_name_refuses_invalid_names(name: str) -> None:
    with pytest.raises(UserError):
        check_branch_name(name)


def test_check_branch_name_accepts_valid_names() -> None:
    assert check_branch_name("devswarm/run-1") == "devswarm/run-1"


def test_explicit_base_and_reopen(repo: Path, tmp_path: Path) -> None:
    other = git(repo, "rev-parse", "other")
    ws = Workspace(repo, tmp_path / "home", "from-other", base="other")
    assert ws.base_commit == other == ws.tip() == user_tip(repo, "from-other")
    ws.land(work(ws, "t", {"n.txt": "n\n"}))
    landed = ws.tip()
    # The user makes a commit on another branch; reopening sees it and keeps the branch.
    git(repo, "commit", "-qm", "user commit")  # the staged README change
    again = Workspace(repo, tmp_path / "home", "from-other")
    assert again.base_commit == landed == again.tip()
    assert git(again.clone, "rev-parse", "refs/remotes/origin/main") == git(
        repo, "rev-parse", "main"
    )
    with pytest.raises(UserError, match="already exists"):
        Workspace(repo, tmp_path / "home", "from-other", base="main")


def test_reopen_keeps_landings_a_crash_kept_from_being_published(
    repo: Path, tmp_path: Path
) -> None:
    ws = Workspace(repo, tmp_path / "home", BRANCH)
    start = ws.tip()
    assert ws.land(work(ws, "t", {"n.txt": "n\n"})).published
    landed = ws.tip()
    git(repo, "update-ref", f"refs/heads/{BRANCH}", start)  # as if the publish never happened
    again = Workspace(repo, tmp_path / "home", BRANCH)
    assert again.tip() == landed == user_tip(repo)


def test_diverged_user_branch_is_reported_not_forced(repo: Path, tmp_path: Path) -> None:
    ws = Workspace(repo, tmp_path / "home", BRANCH)
    git(repo, "branch", "-f", BRANCH, "other")  # the user moves the branch elsewhere
    result = ws.land(work(ws, "t", {"n.txt": "n\n"}))
    assert result.status == "landed" and not result.published
    assert "non-fast-forward" in (result.reason or "")
    assert user_tip(repo) == git(repo, "rev-parse", "other")


def test_32_concurrent_worktree_adds_succeed(repo: Path, tmp_path: Path) -> None:
    ws = Workspace(repo, tmp_path / "home", BRANCH)
    tip = ws.tip()
    with ThreadPoolExecutor(32) as pool:
        paths = list(pool.map(lambda i: ws.add_worktree(f"w{i}", tip), range(32)))
    for p in paths:
        assert (p / "src" / "a.py").read_text() == "x = 1\n"
        assert git(p, "rev-parse", "HEAD") == tip
    assert git(ws.clone, "worktree", "list").count("\n") == 32  # 33 lines: clone + 32
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(ws.remove_worktree, paths))
    assert git(ws.clone, "worktree", "list").count("\n") == 0


def test_prune_removes_leftovers_and_keeps_live_worktrees(repo: Path, tmp_path: Path) -> None:
    ws = Workspace(repo, tmp_path / "home", BRANCH)
    live = ws.add_worktree("live", ws.tip())
    gone = ws.add_worktree("gone", ws.tip())
    dead = ws.add_worktree("dead", ws.tip())
    junk = ws.worktrees_dir / "junk"
    (junk / "sub").mkdir(parents=True)
    (junk / "sub" / "f").write_text("left over\n")
    subprocess.run(["rm", "-rf", str(gone)], check=True)  # deleted by hand, still registered
    # A worktree whose owner process died (pid far above pid_max).
    git(ws.clone, "worktree", "unlock", str(dead))
    git(
        ws.clone,
        "worktree",
        "lock",
        "--reason",
        f"devswarm pid 99999999 on {socket.gethostname()}",
        str(dead),
    )

    ws.prune()

    assert live.exists() and not junk.exists() and not dead.exists()
    listed = git(ws.clone, "worktree", "list", "--porcelain")
    assert str(live) in listed and str(gone) not in listed and str(dead) not in listed
    assert sorted(p.name for p in ws.worktrees_dir.iterdir()) == ["live"]


def test_landed_trailers_join_history_to_tasks(repo: Path, tmp_path: Path) -> None:
    ws = Workspace(repo, tmp_path / "home", BRANCH)
    for name in ("t1", "t2"):
        wt = work(ws, name, {f"{name}.txt": name})
        assert ws.land(wt).status == "landed"
    rows = ws.landed_trailers()
    assert [(r["run"], r["task"], r["agent"]) for r in rows] == [
        ("run1", "t1", "a1"),
        ("run1", "t2", "a1"),
    ]
    assert rows[-1]["commit"] == ws.tip() and rows[0]["subject"] == "task t1"
    assert ws.landed_trailers(f"{ws.base_commit}~1..{ws.base_commit}")[0]["task"] is None


def test_changed_files_and_diff_stat_include_untracked(repo: Path, tmp_path: Path) -> None:
    ws = Workspace(repo, tmp_path / "home", BRANCH)
    base = ws.tip()
    wt = ws.add_worktree("t", base)
    (wt / "src" / "a.py").write_text("x = 9\n")
    (wt / "fresh.txt").write_text("new\n")
    assert ws.changed_files(wt, base) == ["fresh.txt", "src/a.py"]
    stat = ws.diff_stat(wt, base)
    assert "src/a.py" in stat and "fresh.txt" in stat


def test_git_runs_in_its_own_process_group(repo: Path) -> None:
    """A signal to devswarm's process group (Ctrl-C, Prefect's runner cancelling a deployment's
    run) must not reach a git command halfway through a rebase or a ref update."""
    from devswarm.git.plumbing import run_git as _run_git

    alias = "alias.pgrp=!awk '{print $5}' /proc/self/stat"
    proc = _run_git(repo, ("-c", alias, "pgrp"), None)
    assert proc.returncode == 0, proc.stderr
    assert int(proc.stdout) != os.getpgrp()


def test_prune_drops_the_worktree_of_an_exited_child_not_yet_reaped(
    repo: Path, tmp_path: Path
) -> None:
    """A zombie (exited, not reaped by its parent) owns nothing: its worktree is a leftover."""
    ws = Workspace(repo, tmp_path / "home", BRANCH)
    wt = ws.add_worktree("zombie", ws.tip())
    child = subprocess.Popen(["true"])
    while Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
        time.sleep(0.01)
    git(ws.clone, "worktree", "unlock", str(wt))
    reason = f"devswarm pid {child.pid} on {socket.gethostname()}"
    git(ws.clone, "worktree", "lock", "--reason", reason, str(wt))

    ws.prune()

    assert not wt.exists() and str(wt) not in git(ws.clone, "worktree", "list", "--porcelain")
    child.wait()


def registered_worktrees(ws: Workspace) -> list[str]:
    out = git(ws.clone, "worktree", "list", "--porcelain")
    return [
        line.removeprefix("worktree ") for line in out.splitlines() if line.startswith("worktree ")
    ][1:]


def test_worktree_block_removes_the_worktree_when_it_ends(repo: Path, tmp_path: Path) -> None:
    ws = Workspace(repo, tmp_path / "home", BRANCH)
    with ws.worktree("t", ws.tip()) as wt:
        assert (wt / "src" / "a.py").read_text() == "x = 1\n"
        assert registered_worktrees(ws) == [str(wt)]
        (wt / "dirty.txt").write_text("uncommitted\n")
    assert not wt.exists() and registered_worktrees(ws) == []


def test_worktree_block_removes_the_worktree_after_an_exception(repo: Path, tmp_path: Path) -> None:
    ws = Workspace(repo, tmp_path / "home", BRANCH)
    with pytest.raises(RuntimeError, match="the agent crashed"), ws.worktree("t", ws.tip()) as wt:
        (wt / "half.txt").write_text("half done\n")
        raise RuntimeError("the agent crashed")
    assert not wt.exists() and registered_worktrees(ws) == []


def test_worktree_block_removes_a_worktree_left_mid_conflict(repo: Path, tmp_path: Path) -> None:
    ws = Workspace(repo, tmp_path / "home", BRANCH)
    base = ws.tip()
    ws.land(work(ws, "first", {"src/a.py": "x = 2\n"}))
    with ws.worktree("second", base) as wt:
        (wt / "src" / "a.py").write_text("x = 3\n")
        ws.commit(wt, "task second", TRAILERS)
        assert ws.begin_conflict(wt, ws.tip()) == ["src/a.py"]
    assert not wt.exists() and str(wt) not in registered_worktrees(ws)


def test_a_worktree_name_is_free_again_after_its_block(repo: Path, tmp_path: Path) -> None:
    ws = Workspace(repo, tmp_path / "home", BRANCH)
    with ws.worktree("same", ws.tip()) as first:
        (first / "first.txt").write_text("1\n")
    ws.land(work(ws, "other", {"n.txt": "n\n"}))
    with ws.worktree("same", ws.tip()) as second:
        assert second == first
        assert (second / "n.txt").exists() and not (second / "first.txt").exists()
        assert git(second, "rev-parse", "HEAD") == ws.tip()
    assert registered_worktrees(ws) == [str(ws.worktrees_dir / "other")]
