"""No landed work lost, no task landed twice, and the lane as fast as before (issue #14, part 3).

A landing that cannot be published says so and is published by the next opening; a diverged
branch is backed up, never dropped; a task already on the branch is not landed again; the
replay (merge-tree) merges as `git rebase` does where `.gitattributes` sets merge attributes;
and a landing costs no more git processes than before. Real git in tmp_path.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from devswarm.errors import UserError
from devswarm.git.refs import worktree_head
from devswarm.git.workspace import BACKUP_REFS, Workspace
from tests.conftest import git

BRANCH = "devswarm/run1"
LINES = "".join(f"line {i}\n" for i in range(1, 11))


pytestmark = pytest.mark.usefixtures("isolated_git_config")


def make_repo(path: Path, files: dict[str, str]) -> Path:
    path.mkdir()
    git(path, "init", "-q", "-b", "main")
    for name, text in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)
    git(path, "add", "-A")
    git(path, "commit", "-qm", "initial")
    return path


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "user", {"f.txt": LINES})


def trailers(task: str, run: str = "run1") -> dict[str, str]:
    return {"Devswarm-Run": run, "Devswarm-Task": task, "Devswarm-Agent": f"agent-{task}"}


def work(ws: Workspace, name: str, files: dict[str, str], *, task: str | None = None) -> Path:
    """A worktree at the tip with `files` written and committed for `task` (default: name)."""
    wt = ws.add_worktree(name, ws.tip())
    for rel, text in files.items():
        (wt / rel).parent.mkdir(parents=True, exist_ok=True)
        (wt / rel).write_text(text)
    assert ws.commit(wt, f"task {name}", trailers(task or name)) is not None
    return wt


def user_tip(repo: Path) -> str:
    return git(repo, "rev-parse", "--verify", "--quiet", f"refs/heads/{BRANCH}", check=False)


# -- publishing -------------------------------------------------------------------------------


def test_a_landing_that_cannot_be_published_says_so_and_the_next_opening_publishes_it(
    repo: Path, tmp_path: Path
) -> None:
    ws = Workspace(repo, tmp_path / "home", BRANCH)
    before = user_tip(repo)
    lock = repo / ".git" / "refs" / "heads" / f"{BRANCH}.lock"
    lock.write_text("")  # another git holds the user's branch: the fetch cannot move it
    result = ws.land(work(ws, "t", {"n.txt": "n\n"}))
    assert result.status == "landed" and result.published is False
    assert result.publish_error and "could not publish" in result.publish_error
    assert ws.tip() == result.new_tip != user_tip(repo) == before  # in the clone only
    lock.unlink()
    again = Workspace(repo, tmp_path / "home", BRANCH)  # the next run, or a resume
    assert user_tip(repo) == again.tip() == result.new_tip


def test_a_published_landing_says_published(repo: Path, tmp_path: Path) -> None:
    ws = Workspace(repo, tmp_path / "home", BRANCH)
    result = ws.land(work(ws, "t", {"n.txt": "n\n"}))
    assert result.published is True and result.publish_error is None


def test_diverged_branches_stop_with_a_backup_and_the_next_run_follows_the_user(
    repo: Path, tmp_path: Path
) -> None:
    ws = Workspace(repo, tmp_path / "home", BRANCH)
    lock = repo / ".git" / "refs" / "heads" / f"{BRANCH}.lock"
    lock.write_text("")
    unpublished = ws.land(work(ws, "t", {"n.txt": "n\n"})).new_tip
    lock.unlink()
    # Meanwhile the user commits on the branch: the two have diverged.
    tree = git(repo, "rev-parse", f"{user_tip(repo)}^{{tree}}")
    theirs = git(repo, "commit-tree", tree, "-p", user_tip(repo), "-m", "user's own")
    git(repo, "update-ref", f"refs/heads/{BRANCH}", theirs)

    with pytest.raises(UserError, match="diverged") as stopped:
        Workspace(repo, tmp_path / "home", BRANCH)
    backups = git(ws.clone, "for-each-ref", "--format=%(refname) %(objectname)", BACKUP_REFS)
    [(backup, kept)] = [line.split() for line in backups.splitlines()]
    assert kept == unpublished and backup.startswith(f"{BACKUP_REFS}/{BRANCH}/")
    assert backup in str(stopped.value) and "\n" not in str(stopped.value)
    assert user_tip(repo) == theirs  # nothing forced
    # The user's way back to the swarm's commits, as the message says.
    git(repo, "fetch", "-q", str(ws.clone), f"{backup}:refs/heads/rescued")
    assert git(repo, "rev-parse", "rescued") == unpublished
    again = Workspace(repo, tmp_path / "home", BRANCH)  # continues from the user's branch
    assert again.tip() == theirs


def test_a_deleted_user_branch_is_recreated_and_the_clones_commits_kept_aside(
    repo: Path, tmp_path: Path
) -> None:
    ws = Workspace(repo, tmp_path / "home", BRANCH)
    landed = ws.land(work(ws, "t", {"n.txt": "n\n"})).new_tip
    git(repo, "branch", "-D", BRANCH)
    again = Workspace(repo, tmp_path / "home", BRANCH)
    head = git(repo, "rev-parse", "HEAD")
    assert again.tip() == head == user_tip(repo)
    kept = git(ws.clone, "for-each-ref", "--format=%(objectname)", BACKUP_REFS)
    assert kept == landed


def test_a_clone_behind_the_user_follows_without_a_backup(repo: Path, tmp_path: Path) -> None:
    ws = Workspace(repo, tmp_path / "home", BRANCH)
    tree = git(repo, "rev-parse", "HEAD^{tree}")
    ahead = git(repo, "commit-tree", tree, "-p", user_tip(repo), "-m", "user's own")
    git(repo, "update-ref", f"refs/heads/{BRANCH}", ahead)
    assert Workspace(repo, tmp_path / "home", BRANCH).tip() == ahead
    assert git(ws.clone, "for-each-ref", BACKUP_REFS) == ""


def test_a_landing_made_while_an_opening_resets_the_branch_is_not_dropped(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process sharing the clone lands just as an opening resets the clone's branch to
    the user's: the reset is a compare-and-swap, so that landing is kept (backed up here, the
    user's branch having moved too), never overwritten."""
    ws = Workspace(repo, tmp_path / "home", BRANCH)
    start = ws.tip()
    tree = git(repo, "rev-parse", f"{start}^{{tree}}")
    ahead = git(repo, "commit-tree", tree, "-p", start, "-m", "the user's, ahead")
    git(repo, "update-ref", f"refs/heads/{BRANCH}", ahead)  # the opening will follow it
    landed = git(ws.clone, "commit-tree", tree, "-p", start, "-m", "landed meanwhile")
    # A git shim lands `landed` in the clone right before the opening's ref update runs.
    real, shim, once = shutil.which("git"), tmp_path / "bin", tmp_path / "landed-once"
    shim.mkdir()
    (shim / "git").write_text(
        f'#!/bin/sh\ncase "$*" in *"devswarm: open"*)\n  if [ ! -e {once} ]; then touch {once}; '
        f'{real} update-ref refs/heads/{BRANCH} {landed}; fi;;\nesac\nexec {real} "$@"\n'
    )
    (shim / "git").chmod(0o755)
    monkeypatch.setenv("PATH", f"{shim}:{os.environ['PATH']}")
    with pytest.raises(UserError, match="diverged"):
        Workspace(repo, tmp_path / "home", BRANCH)
    assert once.exists()
    kept = git(ws.clone, "for-each-ref", "--format=%(objectname)", BACKUP_REFS)
    assert kept == landed and ws.tip() == ahead == user_tip(repo)


# -- a task lands once ------------------------------------------------------------------------


def test_a_task_already_on_the_branch_is_not_landed_again(repo: Path, tmp_path: Path) -> None:
    ws = Workspace(repo, tmp_path / "home", BRANCH)
    first = ws.land(work(ws, "one", {"a.txt": "first try\n"}, task="t1"))
    assert first.status == "landed"
    assert ws.landed_commit("run1", "t1") == first.new_tip
    assert ws.landed_commit("run1", "t2") is None
    assert ws.landed_commit("run2", "t1") is None
    # The same task again (a worker run again after a crash), with other content.
    again = ws.land(work(ws, "two", {"a.txt": "second try\n"}, task="t1"))
    assert again.status == "landed" and again.commit == first.new_tip
    assert again.new_tip == again.old_tip == ws.tip() == first.new_tip
    assert "already on the branch" in (again.reason or "")


def test_a_resumed_run_still_knows_its_landed_tasks(repo: Path, tmp_path: Path) -> None:
    ws = Workspace(repo, tmp_path / "home", BRANCH)
    landed = ws.land(work(ws, "one", {"a.txt": "a\n"}, task="t1")).new_tip
    ws.land(work(ws, "two", {"b.txt": "b\n"}, task="t2"))
    resumed = Workspace(repo, tmp_path / "home", BRANCH)
    assert resumed.base_commit == resumed.tip()  # its base is past the earlier landings
    assert resumed.landed_commit("run1", "t1") == landed
    assert resumed.land(work(resumed, "three", {"a.txt": "c\n"}, task="t1")).commit == landed
    # Landings by another workspace object (another process) are seen too.
    other = Workspace(repo, tmp_path / "home", BRANCH)
    third = other.land(work(other, "four", {"d.txt": "d\n"}, task="t4")).new_tip
    assert resumed.landed_commit("run1", "t4") == third


def test_a_landed_commit_no_longer_on_the_branch_does_not_count(repo: Path, tmp_path: Path) -> None:
    ws = Workspace(repo, tmp_path / "home", BRANCH)
    start = ws.tip()
    ws.land(work(ws, "one", {"a.txt": "a\n"}, task="t1"))
    assert ws.landed_commit("run1", "t1") is not None
    # Another process moves the branch back (devswarm's own lane only moves it forward).
    git(ws.clone, "update-ref", f"refs/heads/{BRANCH}", start)
    assert ws.landed_commit("run1", "t1") is None


# -- the replay merges as the rebase does -----------------------------------------------------

ATTRIBUTES = ["-merge", "merge=binary", "binary", "merge=union", "merge=mine"]


def expected_rebase(ws: Workspace, head: str, onto: str) -> str | None:
    """The tree `git rebase` makes of `head` onto `onto`, None if it conflicts: plain git,
    no user config (a custom driver stays undefined, as in devswarm's own rebase)."""
    wt = ws.clone.parent / "expected"
    git(ws.clone, "worktree", "add", "-q", "--detach", str(wt), head)
    try:
        proc = subprocess.run(
            ["git", "-c", "core.hooksPath=/dev/null", "rebase", "-q", onto],
            cwd=wt,
            env={**os.environ, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1",
                 "GIT_COMMITTER_NAME": "c", "GIT_COMMITTER_EMAIL": "c@x.invalid"},
            capture_output=True,
        )  # fmt: skip
        return git(wt, "rev-parse", "HEAD^{tree}") if proc.returncode == 0 else None
    finally:
        git(ws.clone, "worktree", "remove", "--force", "--force", str(wt), check=False)
        shutil.rmtree(wt, ignore_errors=True)


@pytest.mark.parametrize("lines", ["apart", "same"])
@pytest.mark.parametrize("where", ["tip", "folder", "commit"])
@pytest.mark.parametrize("attribute", ATTRIBUTES)
def test_the_replay_merges_as_a_rebase_where_attributes_set_merge(
    attribute: str, where: str, lines: str, tmp_path: Path
) -> None:
    """`where`: the .gitattributes is at the top of the base, in the file's folder in the base,
    or added by the worker's commit. Both sides change d/f.txt: lines apart (a clean text
    merge) or the same line (a text conflict). The user's config defines the `mine` driver:
    it must never run."""
    marker = tmp_path / "driver-ran"
    gitconfig = Path(os.environ["HOME"]) / ".gitconfig"
    gitconfig.write_text(f'[merge "mine"]\n\tdriver = touch {marker}; cp %B %A\n')
    rule = {"tip": ("", f"d/f.txt {attribute}\n"), "folder": ("d/", f"f.txt {attribute}\n")}
    files = {"d/f.txt": LINES}
    if where in rule:
        folder, text = rule[where]
        files[f"{folder}.gitattributes"] = text
    repo = make_repo(tmp_path / "user", files)
    ws = Workspace(repo, tmp_path / "home", BRANCH)
    mine = {"d/f.txt": LINES.replace("line 10\n" if lines == "apart" else "line 5\n", "mine\n")}
    if where == "commit":
        mine[".gitattributes"] = f"d/f.txt {attribute}\n"
    wt = work(ws, "w", mine)
    head = worktree_head(wt)
    ws.land(
        work(
            ws,
            "o",
            {"d/f.txt": LINES.replace("line 1\n" if lines == "apart" else "line 5\n", "other\n")},
        )
    )
    expected = expected_rebase(ws, head, ws.tip())

    result = ws.land(wt)
    if expected is None:
        assert result.status == "conflict", result
    else:
        assert result.status == "landed", result
        assert git(ws.clone, "rev-parse", f"{result.new_tip}^{{tree}}") == expected
    assert not marker.exists()


@pytest.mark.parametrize("lines", ["apart", "same"])
def test_without_merge_attributes_the_replay_leaves_the_worktree_alone(
    lines: str, tmp_path: Path
) -> None:
    """No .gitattributes, or one about other things: the replay lands (no rebase in the
    worktree), with the rebase's result."""
    repo = make_repo(tmp_path / "user", {"d/f.txt": LINES, ".gitattributes": "*.png -diff\n"})
    ws = Workspace(repo, tmp_path / "home", BRANCH)
    wt = work(ws, "w", {"d/f.txt": LINES.replace("line 10\n", "mine\n")})
    head = worktree_head(wt)
    ws.land(work(ws, "o", {"d/f.txt": LINES.replace("line 1\n", "other\n")}))
    expected = expected_rebase(ws, head, ws.tip())
    result = ws.land(wt)
    assert result.status == "landed"
    assert git(ws.clone, "rev-parse", f"{result.new_tip}^{{tree}}") == expected
    assert worktree_head(wt) == head  # replayed: the worktree was not rebased


# -- the lane's cost in git processes ---------------------------------------------------------


def test_a_landing_costs_no_more_git_processes_than_before(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Counted with a git shim on PATH. Before this work (measured the same way): commit 2;
    landing by replay 6 with the tip's tree known (7 without: a rev-parse); fast-forward 3."""
    real = shutil.which("git")
    shim, calls = tmp_path / "bin", tmp_path / "git-calls"
    shim.mkdir()
    (shim / "git").write_text(f'#!/bin/sh\necho "$*" >> {calls}\nexec {real} "$@"\n')
    (shim / "git").chmod(0o755)
    ws = Workspace(repo, tmp_path / "home", BRANCH)
    ws.land(work(ws, "warm", {"warm.txt": "w\n"}))  # builds the task index once
    monkeypatch.setenv("PATH", f"{shim}:{os.environ['PATH']}")

    def counted(fn) -> Counter[str]:
        calls.write_text("")
        fn()
        words = [
            [w for w in line.split() if "=" not in w and w != "-c"]
            for line in calls.read_text().splitlines()
        ]
        return Counter(w[0] for w in words)

    late = ws.add_worktree("late", ws.tip())  # lands after another landing: a replay
    (late / "shared.txt").write_text("late\n")
    assert counted(lambda: ws.commit(late, "late", trailers("late"))) == {"add": 1, "commit": 1}
    ff = ws.add_worktree("ff", ws.tip())
    (ff / "ff.txt").write_text("ff\n")
    ws.commit(ff, "ff", trailers("ff"))
    assert counted(lambda: ws.land(ff)) == {"merge-base": 1, "update-ref": 1, "fetch": 1}
    replay = {
        "merge-base": 1,
        "merge-tree": 1,
        "cat-file": 1,
        "commit-tree": 1,
        "update-ref": 1,
        "fetch": 1,
    }
    assert counted(lambda: ws.land(late)) == replay
    assert worktree_head(late) != ws.tip()  # replayed, not rebased
    # Both sides changed f.txt (a three-way merge, where attributes are looked at): the same.
    apart = work(ws, "apart", {"f.txt": LINES.replace("line 10\n", "ten\n")})
    ws.land(work(ws, "first", {"f.txt": LINES.replace("line 1\n", "one\n")}))
    assert counted(lambda: ws.land(apart)) == replay
    # The worker's question before landing ("is my task on the branch?"): no process while the
    # index is current (a yes is checked against the branch: one, on that rare path).
    assert counted(lambda: ws.landed_commit("run1", "not-yet")) == {}
