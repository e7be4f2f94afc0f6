"""GitPython opened safely (devswarm.git.repo), against real repositories in tmp_path."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import git as gitpython
import pytest

from devswarm.errors import UserError
from devswarm.git.repo import open_repo, read_user_repository
from tests.test_workspace import git

ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("isolated_git_config")


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    r = tmp_path / "user"
    (r / "src").mkdir(parents=True)
    git(r, "init", "-q", "-b", "main")
    (r / "src" / "a.py").write_text("x = 1\n")
    git(r, "add", "-A")
    git(r, "commit", "-qm", "initial")
    return r


def hook(path: Path, marker: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\necho ran >> {marker}\n")
    path.chmod(0o755)


def git_children() -> list[str]:
    """Command lines of this process's living child processes that run git."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if int(fields[1]) == os.getpid() and fields[0] != "Z" and "git" in cmdline:
            found.append(cmdline)
    return found


def test_open_repo_runs_no_hook_and_ignores_a_hostile_global_config(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "marker"
    hostile = tmp_path / "hostile"
    hook(hostile / "hooks" / "reference-transaction", marker)
    hook(repo / ".git" / "hooks" / "reference-transaction", marker)
    (hostile / ".gitconfig").write_text(
        f"[core]\n\thooksPath = {hostile / 'hooks'}\n[alias]\n\thostile = !echo alias >> {marker}\n"
    )
    monkeypatch.setenv("HOME", str(hostile))
    # The config and the hooks really bite a plain git.
    subprocess.run(["git", "update-ref", "refs/heads/plain", "HEAD"], cwd=repo, check=True)
    subprocess.run(["git", "hostile"], cwd=repo, check=True)
    assert marker.read_text().count("ran") >= 1 and "alias" in marker.read_text()
    marker.unlink()
    # Config smuggled in through the environment, and a hook's GIT_DIR and index, are dropped.
    with monkeypatch.context() as env:
        env.setenv("GIT_CONFIG_COUNT", "1")
        env.setenv("GIT_CONFIG_KEY_0", "alias.smuggled")
        env.setenv("GIT_CONFIG_VALUE_0", f"!echo smuggled >> {marker}")
        env.setenv("GIT_DIR", str(tmp_path / "elsewhere" / ".git"))
        env.setenv("GIT_INDEX_FILE", str(tmp_path / "elsewhere" / "index"))
        with open_repo(repo) as r:
            r.git.update_ref("refs/heads/probe", "HEAD")
            for alias in (r.git.hostile, r.git.smuggled):
                with pytest.raises(gitpython.GitCommandError, match="not a git command"):
                    alias()
            assert r.git.config("--get", "core.hooksPath") == "/dev/null"
            assert r.git.rev_parse("--absolute-git-dir") == str(repo / ".git")
            assert r.git.ls_files() == "src/a.py"

    assert not marker.exists()
    assert git(repo, "rev-parse", "probe") == git(repo, "rev-parse", "HEAD")


def test_open_repo_leaves_no_git_process_behind(repo: Path) -> None:
    with open_repo(repo) as r:
        assert r.head.commit.message == "initial\n"  # read through a persistent cat-file
        assert any("cat-file" in c for c in git_children())
    assert git_children() == []


def test_open_repo_refuses_an_environment_that_misleads_discovery(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GIT_WORK_TREE", str(tmp_path))
    with pytest.raises(UserError, match="GIT_WORK_TREE") as err, open_repo(repo):
        pass
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("missing", "repository path does not exist: "),
        ("file", "not a directory: "),
        ("plain", "not a git repository: "),
        ("empty", "repository has no commits: "),
        ("unknown-extension", "as a git repository: unknown repository extension"),
        ("bad-base", "is not a commit in "),
    ],
)
def test_reading_the_user_repository_refuses_bad_input_with_one_line(
    repo: Path, tmp_path: Path, kind: str, message: str
) -> None:
    path, base = repo, None
    if kind == "missing":
        path = tmp_path / "nowhere"
    elif kind == "file":
        path = tmp_path / "file"
        path.write_text("x\n")
    elif kind == "plain":
        path = tmp_path / "plain"
        path.mkdir()
    elif kind == "empty":
        path = tmp_path / "empty"
        git(tmp_path, "init", "-q", str(path))
    elif kind == "unknown-extension":
        git(repo, "config", "core.repositoryformatversion", "1")
        git(repo, "config", "extensions.devswarmtest", "true")
    else:
        base = "no-such-rev"
    with pytest.raises(UserError) as err:
        read_user_repository(path, "devswarm/x", base)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_reading_the_user_repository_finds_its_top_from_a_subfolder(repo: Path) -> None:
    user = read_user_repository(repo / "src", "devswarm/x")
    head = git(repo, "rev-parse", "HEAD")
    assert (user.path, user.git_dir, user.branch_tip, user.base_commit) == (
        repo,
        repo / ".git",
        None,
        head,
    )


def test_reading_a_bare_and_a_linked_user_repository(repo: Path, tmp_path: Path) -> None:
    bare = tmp_path / "bare.git"
    git(tmp_path, "clone", "-q", "--bare", str(repo), str(bare))
    user = read_user_repository(bare, "main")  # nothing is checked out in a bare repository
    assert (user.path, user.git_dir, user.branch_tip) == (
        bare,
        bare,
        git(repo, "rev-parse", "main"),
    )

    linked = tmp_path / "linked"
    git(repo, "worktree", "add", "-q", "-b", "feature", str(linked))
    user = read_user_repository(linked, "devswarm/x", base="feature")
    assert (user.path, user.git_dir) == (linked, repo / ".git" / "worktrees" / "linked")
    with pytest.raises(UserError, match=f"checked out in {linked}"):
        read_user_repository(repo, "feature")


def test_without_git_on_path_importing_the_workspace_is_one_clear_error(tmp_path: Path) -> None:
    env = {"PATH": str(tmp_path), "PYTHONPATH": str(ROOT), "HOME": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, "-c", "import devswarm.git.workspace"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines()[-1] == (
        "devswarm.errors.UserError: git is not installed (not found on PATH)"
    )
