"""Landing through a shared remote (--executor deployment), without Prefect: real git, a bare
repository on disk as the remote, worker clones in their own folders as other machines would."""

from __future__ import annotations

import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from devswarm.errors import UserError
from devswarm.git.remote import RemoteWorkspace, init_bare_remote
from devswarm.git.workspace import Workspace
from tests.test_workspace import TRAILERS, git, is_ancestor, snapshot, user_tip

BRANCH = "devswarm/remote1"


pytestmark = pytest.mark.usefixtures("isolated_git_config")


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, Workspace, str]:
    """(user repository, the orchestrator's workspace, the seeded shared remote's URL)."""
    repo = tmp_path / "user"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "a.py").write_text("x = 1\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "initial")
    ws = Workspace(repo, tmp_path / "orchestrator", BRANCH)
    url = init_bare_remote(tmp_path / "shared" / "remote.git")
    ws.push_remote(url)
    return repo, ws, url


def work(ws: Workspace, name: str, files: dict[str, str], base: str | None = None) -> Path:
    wt = ws.add_worktree(name, base or ws.tip())
    for rel, text in files.items():
        (wt / rel).write_text(text)
    assert ws.commit(wt, f"task {name}", {**TRAILERS, "Devswarm-Task": name}) is not None
    return wt


def remote_tip(url: str) -> str:
    return git(Path(url), "rev-parse", f"refs/heads/{BRANCH}")


def test_worker_lands_by_push_and_the_orchestrator_publishes(
    setup: tuple[Path, Workspace, str], tmp_path: Path
) -> None:
    repo, ws, url = setup
    before = snapshot(repo, exclude_ref=f"refs/heads/{BRANCH}")
    base = ws.tip()
    assert remote_tip(url) == base == user_tip(repo, BRANCH)

    worker = RemoteWorkspace(url, tmp_path / "machine-1", BRANCH)
    assert worker.tip() == base
    result = worker.land(work(worker, "t1", {"b.py": "y = 2\n"}))
    assert result.status == "landed" and result.cas_retries == 0
    assert not result.published  # a worker never touches the user's repository
    assert remote_tip(url) == result.new_tip != base
    assert user_tip(repo, BRANCH) == ws.tip() == base  # not yet pulled

    assert ws.pull_remote(url) is True
    assert ws.tip() == result.new_tip == user_tip(repo, BRANCH)
    assert ws.pull_remote(url) is False  # nothing new
    assert snapshot(repo, exclude_ref=f"refs/heads/{BRANCH}") == before
    trailers = ws.landed_trailers()
    assert [t["task"] for t in trailers] == ["t1"]
    # The worker's private fetch refs do not pile up, and no remote-tracking ref moved.
    assert git(worker.clone, "for-each-ref", "refs/devswarm/") == ""


def test_push_compare_and_swap_retries_when_another_clone_pushed_first(
    setup: tuple[Path, Workspace, str], tmp_path: Path
) -> None:
    _repo, ws, url = setup
    base = ws.tip()
    mine = RemoteWorkspace(url, tmp_path / "machine-1", BRANCH)
    other = RemoteWorkspace(url, tmp_path / "machine-2", BRANCH)
    wt = work(mine, "mine", {"mine.txt": "mine\n"}, base)
    wt_other = work(other, "theirs", {"theirs.txt": "theirs\n"}, base)
    seen: list[str] = []

    def gate(candidate: str) -> str | None:
        seen.append(candidate)
        if len(seen) == 1:  # another machine lands between our fetch and our push
            assert other.land(wt_other).status == "landed"
        return None

    result = mine.land(wt, gate=gate)
    assert result.status == "landed" and result.cas_retries == 1
    theirs = git(wt_other, "rev-parse", "HEAD")
    assert result.old_tip == theirs and len(seen) == 2
    tip = remote_tip(url)
    assert tip == result.new_tip and is_ancestor(Path(url), theirs, tip)
    assert {"mine.txt", "theirs.txt", "a.py"} == set(
        git(Path(url), "ls-tree", "--name-only", tip).split()
    )
    assert ws.pull_remote(url) and ws.tip() == tip


def test_conflict_through_the_remote_goes_back_to_the_worker_then_lands(
    setup: tuple[Path, Workspace, str], tmp_path: Path
) -> None:
    _repo, ws, url = setup
    base = ws.tip()
    a = RemoteWorkspace(url, tmp_path / "machine-1", BRANCH)
    b = RemoteWorkspace(url, tmp_path / "machine-2", BRANCH)
    assert a.land(work(a, "a", {"a.py": "x = 2\n"}, base)).status == "landed"
    wt = work(b, "b", {"a.py": "x = 3\n"}, base)
    b_commit = git(wt, "rev-parse", "HEAD")

    result = b.land(wt)
    assert result.status == "conflict" and result.conflict_files == ["a.py"]
    assert any("task a" in c for c in result.their_commits)
    assert git(wt, "rev-parse", "HEAD") == b_commit  # the rebase was aborted

    assert b.begin_conflict(wt, b.tip()) == ["a.py"]
    (wt / "a.py").write_text("x = 2\ny = 3\n")
    resolved = b.commit(wt, "task b", TRAILERS)
    assert resolved is not None
    again = b.land(wt)
    assert again.status == "landed" and again.new_tip == resolved == remote_tip(url)
    assert git(Path(url), "show", f"{resolved}:a.py") == "x = 2\ny = 3"
    assert b.land(wt).reason == "already on the branch"  # a retried landing is harmless


def test_concurrent_workers_in_one_shared_clone_all_land(
    setup: tuple[Path, Workspace, str], tmp_path: Path
) -> None:
    _repo, ws, url = setup
    base = ws.tip()
    workers = [RemoteWorkspace(url, tmp_path / "machine-1", BRANCH) for _ in range(2)]
    workers += [RemoteWorkspace(url, tmp_path / f"machine-{i}", BRANCH) for i in (2, 3)]

    def one(i: int):
        w = workers[i % len(workers)]
        wt = work(w, f"t{i}", {f"f{i}.txt": f"{i}\n"}, base)
        try:
            return w.land(wt)
        finally:
            w.remove_worktree(wt)

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, range(8)))
    assert all(r.status == "landed" for r in results), [r.reason for r in results]
    assert ws.pull_remote(url)
    names = set(git(ws.clone, "ls-tree", "--name-only", ws.tip()).split())
    assert {f"f{i}.txt" for i in range(8)} <= names
    assert len(ws.landed_trailers()) == 8


def test_push_remote_follows_a_remote_that_is_ahead_and_refuses_a_diverged_one(
    setup: tuple[Path, Workspace, str], tmp_path: Path
) -> None:
    repo, ws, url = setup
    worker = RemoteWorkspace(url, tmp_path / "machine-1", BRANCH)
    landed = worker.land(work(worker, "t1", {"b.py": "y\n"})).new_tip
    # A restarted orchestrator (resume) seeds the remote again: it follows the remote instead.
    ws.push_remote(url)
    assert ws.tip() == landed == user_tip(repo, BRANCH)

    other = init_bare_remote(tmp_path / "other.git")
    git(ws.clone, "push", "-q", other, f"{ws.base_commit}:refs/heads/{BRANCH}")
    side = work(RemoteWorkspace(other, tmp_path / "machine-2", BRANCH), "side", {"c.py": "z\n"})
    git(side, "push", "-q", other, f"HEAD:refs/heads/{BRANCH}")
    with pytest.raises(UserError, match="diverged"):
        ws.push_remote(other)
    assert ws.tip() == landed  # nothing forced
    with pytest.raises(UserError, match="cannot push"):
        ws.push_remote(str(tmp_path / "no-such-remote.git"))


def test_a_push_the_remote_refuses_is_an_error_not_a_retry_loop(
    setup: tuple[Path, Workspace, str], tmp_path: Path
) -> None:
    _repo, _ws, url = setup
    hook = Path(url) / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho 'no landings today' >&2\nexit 1\n")
    hook.chmod(0o755)
    worker = RemoteWorkspace(url, tmp_path / "machine-1", BRANCH)
    before = remote_tip(url)
    result = worker.land(work(worker, "t1", {"b.py": "y\n"}))
    assert result.status == "error" and result.cas_retries == 0
    assert "push" in (result.reason or "")
    assert remote_tip(url) == before


def test_worker_clone_refuses_another_remote_and_a_missing_branch(
    setup: tuple[Path, Workspace, str], tmp_path: Path
) -> None:
    _repo, _ws, url = setup
    RemoteWorkspace(url, tmp_path / "machine-1", BRANCH)
    other = init_bare_remote(tmp_path / "other.git")
    with pytest.raises(UserError, match="holds a clone of"):
        RemoteWorkspace(other, tmp_path / "machine-1", BRANCH)
    with pytest.raises(Exception, match="cannot fetch devswarm/nope"):
        RemoteWorkspace(url, tmp_path / "machine-2", "devswarm/nope")


def test_prune_drops_worktree_folders_of_dead_worker_processes(
    setup: tuple[Path, Workspace, str], tmp_path: Path
) -> None:
    _repo, _ws, url = setup
    home = tmp_path / "machine-1"
    # A worker process that died with a worktree still registered.
    script = (
        "import os, sys\n"
        "from devswarm.git.remote import RemoteWorkspace\n"
        f"w = RemoteWorkspace({url!r}, {str(home)!r}, {BRANCH!r})\n"
        "w.add_worktree('left', w.tip())\n"
        "print(w.worktrees_dir)\n"
        "os._exit(0)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout
    dead_dir = Path(out.strip())
    assert (dead_dir / "left").is_dir()
    live = RemoteWorkspace(url, home, BRANCH)
    keep = live.add_worktree("mine", live.tip())
    live.prune()
    assert not dead_dir.exists() and keep.is_dir()
    live.remove_worktree(keep)
    live.close()
    assert not live.worktrees_dir.exists()


def test_worker_processes_sharing_a_clone_land_one_at_a_time(
    setup: tuple[Path, Workspace, str], tmp_path: Path
) -> None:
    """The machine's landing lane: a worker process waits while another one lands."""
    _repo, _ws, url = setup
    home = tmp_path / "machine-1"
    mine = RemoteWorkspace(url, home, BRANCH)
    script = (
        "import sys, time\n"
        "from devswarm.git.remote import RemoteWorkspace\n"
        f"w = RemoteWorkspace({url!r}, {str(home)!r}, {BRANCH!r})\n"
        "wt = w.add_worktree('other', w.tip())\n"
        "(wt / 'other.txt').write_text('other')\n"
        "w.commit(wt, 'other', {})\n"
        "print('ready', flush=True)\n"
        "r = w.land(wt)\n"
        "print(r.status, r.cas_retries, time.time(), flush=True)\n"
    )
    with mine._lane:  # another worker process of this machine is landing
        proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(0.5)
        released = time.time()
    status, retries, landed_at = proc.stdout.readline().split()
    proc.wait(30)
    assert (status, retries) == ("landed", "0")
    assert float(landed_at) > released
