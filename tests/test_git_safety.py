"""Nothing an agent wrote runs as devswarm (issue #14, part 2).

An agent may write anything in its worktree: a nested repository whose config runs programs
(fsmonitor, hooks, filters, textconv, merge drivers, an include, worktree config), a `.git`
file pointing at one, a repository inside a gitlink of the base, or a `.gitattributes` that
names drivers the user's own config defines. Each program here is `touch <markers>/<name>`:
the marker folder must stay empty through every git command devswarm runs for a worker
(changed_files, diff_stat, commit, land by replay and by rebase, begin_conflict, the conflict's
continue, the toolbox's list_files and search). Real git, real repositories in tmp_path.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from devswarm.git.refs import worktree_git_dir
from devswarm.git.workspace import CommitRefused, Workspace
from devswarm.tools.toolbox import Toolbox
from tests.conftest import git

BRANCH = "devswarm/run1"
LINES = "".join(f"line {i}\n" for i in range(1, 11))
HOOKS = ("pre-commit", "commit-msg", "post-commit", "post-checkout", "post-rewrite",
         "reference-transaction", "pre-rebase", "post-index-change")  # fmt: skip


pytestmark = pytest.mark.usefixtures("isolated_git_config")


@pytest.fixture
def markers(tmp_path: Path) -> Path:
    path = tmp_path / "markers"
    path.mkdir()
    return path


def fired(markers: Path) -> list[str]:
    return sorted(p.name for p in markers.iterdir())


def hostile_config(markers: Path, tmp_path: Path) -> str:
    """Config text whose every program leaves a marker, hooks included."""
    hooks = tmp_path / "hostile-hooks"
    hooks.mkdir(exist_ok=True)
    for hook in HOOKS:
        (hooks / hook).write_text(f"#!/bin/sh\ntouch {markers}/hook-{hook}\n")
        (hooks / hook).chmod(0o755)
    included = tmp_path / "hostile-include"
    included.write_text(f'[core]\n\tfsmonitor = touch {markers}/include\n[filter "y"]\n'
                        f"\tclean = touch {markers}/include-clean\n")  # fmt: skip
    t = f"touch {markers}"
    return (
        f"[core]\n\tfsmonitor = {t}/fsmonitor\n\thooksPath = {hooks}\n\tpager = {t}/pager\n"
        f"\tsshCommand = {t}/ssh\n\teditor = {t}/editor\n[sequence]\n\teditor = {t}/seq\n"
        f"[diff]\n\texternal = {t}/diff-external\n"
        f'[filter "x"]\n\tclean = {t}/clean\n\tsmudge = {t}/smudge\n\tprocess = {t}/process\n'
        f"\trequired = true\n"
        f'[diff "x"]\n\ttextconv = {t}/textconv\n\tcommand = {t}/diff-command\n'
        f'[merge "x"]\n\tdriver = {t}/merge-driver\n[include]\n\tpath = {included}\n'
    )


ATTRIBUTES = "* filter=x diff=x merge=x\n*.y filter=y\n"


def plant_repo(path: Path, markers: Path, tmp_path: Path, *, commit: bool = True) -> None:
    """A repository at `path` whose config, worktree config and attributes run markers."""
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q")
    (path / "inner.txt").write_text("inner\n")
    (path / ".gitattributes").write_text(ATTRIBUTES)
    if commit:
        git(path, "add", "-A")
        git(path, "commit", "-qm", "inner")
        (path / "inner.txt").write_text("inner, changed\n")  # dirty: status would look inside
    config = path / ".git" / "config"
    config.write_text(
        config.read_text().replace("repositoryformatversion = 0", "repositoryformatversion = 1")
        + hostile_config(markers, tmp_path)
        + "[extensions]\n\tworktreeConfig = true\n"
    )
    (path / ".git" / "config.worktree").write_text(f"[core]\n\tfsmonitor = touch {markers}/wt\n")


# -- the vectors: each plants its hostile thing in a worktree at `where` -------------------------


def nested_repo(wt: Path, where: str, markers: Path, tmp_path: Path) -> None:
    plant_repo(wt / where, markers, tmp_path)


def empty_repo(wt: Path, where: str, markers: Path, tmp_path: Path) -> None:
    """A repository without a commit (`git add` refuses it outright)."""
    plant_repo(wt / where, markers, tmp_path, commit=False)


def git_file(wt: Path, where: str, markers: Path, tmp_path: Path) -> None:
    """A `.git` file in a subfolder, pointing at a hostile repository outside the worktree."""
    elsewhere = tmp_path / f"elsewhere-{where}"
    plant_repo(elsewhere, markers, tmp_path)
    (wt / where).mkdir()
    (wt / where / ".git").write_text(f"gitdir: {elsewhere / '.git'}\n")
    (wt / where / "inner.txt").write_text("seen through the .git file\n")


def user_drivers(wt: Path, where: str, markers: Path, tmp_path: Path) -> None:
    """The user's global config defines drivers; the agent's .gitattributes picks them."""
    gitconfig = Path(os.environ["HOME"]) / ".gitconfig"
    gitconfig.write_text(hostile_config(markers, tmp_path))
    (wt / ".gitattributes").write_text(ATTRIBUTES)
    (wt / where).mkdir(exist_ok=True)
    (wt / where / "data.y").write_text("agent data\n")


VECTORS: dict[str, Callable[[Path, str, Path, Path], None]] = {
    "nested-repo": nested_repo,
    "empty-repo": empty_repo,
    "git-file": git_file,
    "user-drivers": user_drivers,
}
EMBEDDED = {"nested-repo", "empty-repo", "git-file"}  # refused at commit


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """The user's repository: f.txt of ten lines, and `ignored/` in its .gitignore."""
    r = tmp_path / "user"
    r.mkdir()
    git(r, "init", "-q", "-b", "main")
    (r / "f.txt").write_text(LINES)
    (r / ".gitignore").write_text("ignored/\n")
    git(r, "add", "-A")
    git(r, "commit", "-qm", "initial")
    return r


def change_line(path: Path, number: int, text: str) -> None:
    lines = path.read_text().splitlines(keepends=True)
    lines[number - 1] = text + "\n"
    path.write_text("".join(lines))


def resolve(wt: Path, text: str) -> None:
    """The agent's resolution of the conflict on line 1."""
    (wt / "f.txt").write_text(LINES.replace("line 1\n", text + "\n", 1))


def land_other(ws: Workspace, name: str, line: int, text: str) -> None:
    """Another worker lands a change of f.txt's `line`."""
    wt = ws.add_worktree(name, ws.tip())
    change_line(wt / "f.txt", line, text)
    assert ws.commit(wt, name, {"Devswarm-Task": name}) is not None
    assert ws.land(wt).status == "landed"
    ws.remove_worktree(wt)


def read_tools(wt: Path) -> None:
    tb = Toolbox(wt)
    for name, args in [("list_files", {}), ("search", {"pattern": "inner|line"})]:
        result = tb.call(name, args)
        assert result.error_type is None, result.output


# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("vector", sorted(VECTORS))
def test_reading_and_committing_a_worktree_runs_nothing_the_agent_wrote(
    vector: str, repo: Path, tmp_path: Path, markers: Path
) -> None:
    ws = Workspace(repo, tmp_path / "home", BRANCH)
    base = ws.tip()
    wt = ws.add_worktree("w", base)
    change_line(wt / "f.txt", 1, "worker")
    VECTORS[vector](wt, "sub", markers, tmp_path)

    changed = ws.changed_files(wt, base)
    assert "f.txt" in changed
    assert "f.txt" in ws.diff_stat(wt, base)
    read_tools(wt)
    assert fired(markers) == []

    if vector in EMBEDDED:
        with pytest.raises(CommitRefused) as refused:
            ws.commit(wt, "work", {"Devswarm-Task": "w"})
        assert refused.value.paths == ["sub"]
        assert "`sub` is a git repository" in str(refused.value)
        assert "rm -rf sub/.git" in str(refused.value)
        assert "sub" not in git(wt, "diff", "--cached", "--name-only")  # not staged
        assert git(wt, "rev-parse", "HEAD") == base
        # The agent removes the nested `.git`: its files are committed as ordinary files.
        subprocess.run(["rm", "-rf", str(wt / "sub" / ".git")], check=True)
    sha = ws.commit(wt, "work", {"Devswarm-Task": "w"})
    assert sha is not None
    tree = git(wt, "ls-tree", "-r", "--format=%(objectmode) %(path)", sha)  # no gitlink
    assert "160000" not in tree
    assert "sub/inner.txt" in tree or "sub/data.y" in tree
    # What was committed is the file as written: no clean filter ran.
    assert git(wt, "show", f"{sha}:f.txt").startswith("worker\n")
    assert ws.land(wt).status == "landed"
    assert fired(markers) == []


@pytest.mark.parametrize("vector", sorted(VECTORS))
def test_landing_and_conflict_turns_run_nothing_the_agent_wrote(
    vector: str, repo: Path, tmp_path: Path, markers: Path
) -> None:
    """The lane's rebase, a conflict turn and a replay, with the hostile thing in the worktree
    (in its ignored folder, so it is not refused: the agent may keep one there)."""
    ws = Workspace(repo, tmp_path / "home", BRANCH)
    base = ws.tip()
    wt = ws.add_worktree("w", base)
    change_line(wt / "f.txt", 1, "worker")
    VECTORS[vector](wt, "ignored", markers, tmp_path)
    assert ws.commit(wt, "work", {"Devswarm-Task": "w"}) is not None
    land_other(ws, "a", 1, "other")  # conflicts with the worker's line 1

    result = ws.land(wt)
    assert result.status == "conflict" and result.conflict_files == ["f.txt"]
    assert ws.begin_conflict(wt, ws.tip()) == ["f.txt"]
    resolve(wt, "worker and other")
    assert ws.commit(wt, "resolved", {"Devswarm-Task": "w"}) is not None  # continues the rebase
    land_other(ws, "b", 10, "last")  # a line apart: a clean three-way merge of f.txt
    result = ws.land(wt)
    assert result.status == "landed", result.reason
    assert git(repo, "show", f"{BRANCH}:f.txt").splitlines()[::9] == ["worker and other", "last"]
    assert "f.txt" in ws.diff_stat(wt, str(result.old_tip), str(result.new_tip))
    assert ws.changed_files(wt, base)
    read_tools(wt)
    assert fired(markers) == []


def test_a_repository_inside_a_gitlink_of_the_base_is_never_entered_nor_moved(
    repo: Path, tmp_path: Path, markers: Path
) -> None:
    """The user's base holds a gitlink without .gitmodules; the agent makes it a hostile
    repository (and writes a .gitmodules asking git to look inside): devswarm's diffs never
    enter it, its commit refuses to move the gitlink, its rebase leaves it alone."""
    target = git(repo, "rev-parse", "HEAD")
    git(repo, "update-index", "--add", "--cacheinfo", f"160000,{target},lib")
    git(repo, "commit", "-qm", "a gitlink")
    ws = Workspace(repo, tmp_path / "home", BRANCH)
    base = ws.tip()
    wt = ws.add_worktree("w", base)
    change_line(wt / "f.txt", 1, "worker")
    assert ws.commit(wt, "work", {"Devswarm-Task": "w"}) is not None
    plant_repo(wt / "lib", markers, tmp_path)
    (wt / ".gitmodules").write_text('[submodule "lib"]\n\tpath = lib\n\tignore = none\n')

    assert ws.changed_files(wt, base) == [".gitmodules", "f.txt"]
    assert "f.txt" in ws.diff_stat(wt, base)
    read_tools(wt)
    land_other(ws, "a", 1, "other")
    assert ws.land(wt).status == "conflict"  # the lane's rebase ran with lib in place
    assert ws.begin_conflict(wt, ws.tip()) == ["f.txt"]
    resolve(wt, "worker and other")
    with pytest.raises(CommitRefused) as refused:
        ws.commit(wt, "resolved", {"Devswarm-Task": "w"})
    assert refused.value.paths == ["lib"]
    assert git(wt, "ls-files", "-s", "lib").split()[1] == target  # not moved
    assert fired(markers) == []
    subprocess.run(["rm", "-rf", str(wt / "lib" / ".git")], check=True)
    assert ws.commit(wt, "resolved", {"Devswarm-Task": "w"}) is not None
    assert ws.land(wt).status == "landed"
    assert fired(markers) == []


def test_worktree_config_cannot_switch_on_what_devswarm_switches_off(
    repo: Path, tmp_path: Path, markers: Path
) -> None:
    """Worktree config lives in the git folders the sandbox binds read-only; written anyway
    (as without a sandbox), its fsmonitor, hooks, pager and external diff stay off: devswarm's
    `-c` settings and diff flags win over every config file."""
    ws = Workspace(repo, tmp_path / "home", BRANCH)
    base = ws.tip()
    wt = ws.add_worktree("w", base)
    git(ws.clone, "config", "extensions.worktreeConfig", "true")
    hooks = tmp_path / "hostile-hooks"
    hostile_config(markers, tmp_path)  # writes the hooks
    t = f"touch {markers}"
    (worktree_git_dir(wt) / "config.worktree").write_text(
        f"[core]\n\tfsmonitor = {t}/fsmonitor\n\thooksPath = {hooks}\n\tpager = {t}/pager\n"
        f"[diff]\n\texternal = {t}/diff-external\n[sequence]\n\teditor = {t}/seq\n"
    )
    change_line(wt / "f.txt", 1, "worker")
    assert ws.changed_files(wt, base) == ["f.txt"]
    assert "f.txt" in ws.diff_stat(wt, base)
    assert ws.commit(wt, "work", {"Devswarm-Task": "w"}) is not None
    land_other(ws, "a", 1, "other")
    assert ws.land(wt).status == "conflict"
    assert ws.begin_conflict(wt, ws.tip()) == ["f.txt"]
    resolve(wt, "both")
    assert ws.commit(wt, "resolved", {"Devswarm-Task": "w"}) is not None
    assert ws.land(wt).status == "landed"
    read_tools(wt)
    assert fired(markers) == []


def test_a_worker_told_of_its_embedded_repository_removes_it_and_lands(tmp_path: Path) -> None:
    """Through a real worker: the agent's `git init` makes a repository in its worktree; the
    commit is refused with a message the agent reads, it removes the `.git`, and lands."""
    from devswarm.sandbox.probe import sandbox_works
    from tests.conftest import chat_requests, make_repo
    from tests.test_worker import calls, finish, planned, running, tc, work

    repo = make_repo(tmp_path / "user", {"f.txt": LINES})
    make_sub = "git init -q sub && echo kept > sub/x.txt"
    scenario = {
        "agents": [
            {
                "match": "worker/*",
                "steps": [
                    calls(
                        tc("run", command=make_sub), tc("write_file", path="f.txt", content="w\n")
                    ),
                    finish("with a repository inside"),
                    calls(tc("run", command="rm -rf sub/.git")),
                    finish("removed it"),
                ],
            }
        ]
    }
    sandbox = sandbox_works()
    with running(tmp_path, scenario, repo, sandbox=sandbox) as (run, log):
        report = work(run, planned(run, "nest"))
    assert report.status == "landed", report.reason
    told = chat_requests(log)[2]["request"]["messages"][-1]
    assert told["role"] == "user" and "`sub` is a git repository" in told["content"]
    tree = git(repo, "ls-tree", "-r", "--format=%(objectmode) %(path)", run.branch)
    assert "100644 sub/x.txt" in tree.splitlines() and "160000" not in tree


def test_the_users_global_ignore_file_still_decides_what_is_committed(
    repo: Path, tmp_path: Path
) -> None:
    """devswarm's git reads none of the user's global config but two paths: a file the user's
    `core.excludesFile` ignores is neither listed, nor changed, nor committed."""
    ignore = tmp_path / "global-ignore"
    ignore.write_text("*.secret\n")
    (Path(os.environ["HOME"]) / ".gitconfig").write_text(f"[core]\n\texcludesFile = {ignore}\n")
    ws = Workspace(repo, tmp_path / "home", BRANCH)
    base = ws.tip()
    wt = ws.add_worktree("w", base)
    (wt / "a.secret").write_text("not for the branch\n")
    (wt / "b.txt").write_text("b\n")
    assert ws.changed_files(wt, base) == ["b.txt"]
    assert "a.secret" not in Toolbox(wt).call("list_files", {}).output
    sha = ws.commit(wt, "work", {"Devswarm-Task": "w"})
    assert git(wt, "ls-tree", "--name-only", str(sha)).splitlines() == [
        ".gitignore",
        "b.txt",
        "f.txt",
    ]
