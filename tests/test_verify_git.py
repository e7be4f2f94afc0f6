"""The verifier's git: changes replayed onto other commits, reverts landed through the lane."""

from __future__ import annotations

from pathlib import Path

from devswarm.git.changes import Merged, changed_paths, replay_change
from devswarm.git.workspace import Workspace
from devswarm.ids import revert_trailers
from tests.conftest import git, make_repo

BRANCH = "devswarm/v"


def land(ws: Workspace, name: str, files: dict[str, str], task: str | None = None) -> str:
    """One landing changing `files` from the tip; returns the new tip."""
    with ws.worktree(name, ws.tip()) as wt:
        for path, text in files.items():
            (wt / path).write_text(text)
        trailers = {"Devswarm-Run": "r", "Devswarm-Task": task or name, "Devswarm-Agent": "a"}
        ws.commit(wt, f"change {name}", trailers)
        result = ws.land(wt)
    assert result.status == "landed", result
    return result.new_tip or ""


def show(ws: Workspace, commit: str, path: str) -> str:
    return git(ws.clone, "show", f"{commit}:{path}")


def test_a_change_replays_onto_an_older_commit_without_the_commits_between(
    tmp_path: Path,
) -> None:
    repo = make_repo(tmp_path / "user", {"a.txt": "a\n", "b.txt": "b\n"})
    ws = Workspace(repo, tmp_path / "home", BRANCH)
    green = ws.tip()
    first = land(ws, "one", {"a.txt": "a 1\n"})
    second = land(ws, "two", {"b.txt": "b 2\n"})
    replayed = replay_change(ws.clone, first, second, green)
    assert isinstance(replayed, str) and replayed not in (green, first, second)
    assert git(ws.clone, "rev-parse", f"{replayed}^") == green
    assert show(ws, replayed, "a.txt") == "a"  # the commit between is not carried along
    assert show(ws, replayed, "b.txt") == "b 2"
    assert "change two" in git(ws.clone, "log", "-1", "--format=%B", replayed)
    assert replay_change(ws.clone, first, second, second) == second  # already there
    assert changed_paths(ws.clone, second, second) == ["b.txt"]


def test_a_replay_that_conflicts_names_the_files(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "user", {"a.txt": "a\n"})
    ws = Workspace(repo, tmp_path / "home", BRANCH)
    base = ws.tip()
    one = land(ws, "one", {"a.txt": "one\n"})
    with ws.worktree("other", base) as wt:
        (wt / "a.txt").write_text("other\n")
        other = ws.commit(wt, "other", {"Devswarm-Task": "other"})
    assert other is not None
    merged = replay_change(ws.clone, base, other, one)
    assert isinstance(merged, Merged) and merged.conflicts == ["a.txt"]


def test_a_revert_lands_through_the_lane_with_its_trailers(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "user", {"a.txt": "a\n", "b.txt": "b\n"})
    ws = Workspace(repo, tmp_path / "home", BRANCH)
    culprit = land(ws, "bad", {"a.txt": "broken\n"}, task="c1.root.bad")
    later = land(ws, "later", {"b.txt": "b later\n"})
    result = ws.revert(
        culprit, culprit, 'Revert "change bad"', revert_trailers("r", "c1.root.bad", culprit)
    )
    assert result.status == "landed" and result.old_tip == later and result.published
    tip = ws.tip()
    assert tip == result.new_tip and git(repo, "rev-parse", BRANCH) == tip  # published
    assert show(ws, tip, "a.txt") == "a" and show(ws, tip, "b.txt") == "b later"
    (row,) = ws.landed_trailers(f"{later}..{tip}")
    assert row["revert"] == culprit and row["task"] == "c1.root.bad"
    assert row["agent"] == "verifier/r"


def test_a_revert_that_conflicts_with_later_landings_lands_nothing(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "user", {"a.txt": "a\n"})
    ws = Workspace(repo, tmp_path / "home", BRANCH)
    culprit = land(ws, "bad", {"a.txt": "broken\n"})
    later = land(ws, "later", {"a.txt": "broken and more\n"})
    result = ws.revert(culprit, culprit, "Revert", revert_trailers("r", "bad", culprit))
    assert result.status == "conflict" and result.conflict_files == ["a.txt"]
    assert ws.tip() == later
