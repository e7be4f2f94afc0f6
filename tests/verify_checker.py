"""An independent checker of the verifier's work, from git and the check alone.

Like tests/checker.py it shares no code with devswarm: it lists the branch's first-parent commits
with plain `git`, runs the repository check itself on every one of them (each commit's files
extracted with `git archive` into a folder of its own, no sandbox, no cache), and reads the run
store with `duckdb`. From that ground truth it asserts:

- every break is detected: each commit that turned a green tip red was reverted by the
  verifier (policy revert), or named as a confirmed culprit (policy repair);
- the culprit is named correctly: each revert's `Devswarm-Revert` commit is red, and its
  parent green, once the earlier culprits still on the branch there (reverted only later) are
  undone (a flaky commit, green in truth, is never reverted);
- the tip is green at the end;
- `verifications` agree with git: green verdicts on green commits, confirmed culprits are
  culprits in truth, flakes name commits that are green in truth;
- `tip_health` agrees with git: its breaks are the ground truth's breaks.
"""

from __future__ import annotations

import os
import subprocess
import tarfile
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb

from tests.checker import git, trailers_with_reverts


@dataclass
class Truth:
    """The branch as it is: first-parent commits oldest first, and the check at each."""

    base: str
    commits: list[str]
    green: dict[str, bool]
    reverts: dict[str, str]  # revert commit -> the commit it reverts
    tasks: dict[str, str | None]  # commit -> its Devswarm-Task

    @property
    def breaks(self) -> list[str]:
        """Commits whose parent (on the first-parent line) is green and who are red."""
        line = [self.base, *self.commits]
        return [
            c for p, c in zip(line, line[1:], strict=False) if self.green[p] and not self.green[c]
        ]


@dataclass
class VerifyFindings:
    problems: list[str] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)


def run_check(
    repo: Path, commit: str, check: str, undo: list[str] | None = None, timeout: float = 120.0
) -> bool:
    """The check on `commit`'s files (with the commits `undo` reverted, newest first), in a
    fresh folder: plain git archive + tar, and `git apply -R` of each undone commit's diff."""
    with tempfile.TemporaryDirectory(prefix="truth-") as folder:
        archive = subprocess.run(
            ["git", "-C", str(repo), "archive", "--format=tar", commit],
            capture_output=True,
            check=True,
        )
        tar_path = Path(folder) / "tree.tar"
        tar_path.write_bytes(archive.stdout)
        work = Path(folder) / "tree"
        work.mkdir()
        with tarfile.open(tar_path) as tar:
            tar.extractall(work, filter="data")
        for old in undo or []:
            diff = git(repo, "diff", "--binary", f"{old}^", old)
            applied = subprocess.run(
                ["git", "apply", "-R", "--whitespace=nowarn"],
                cwd=work,
                input=diff.encode(),
                capture_output=True,
                check=False,
            )
            if applied.returncode != 0:
                return False
        env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
        proc = subprocess.run(
            check, shell=True, cwd=work, env=env, capture_output=True, timeout=timeout, check=False
        )
        return proc.returncode == 0


def ground_truth(repo: Path, branch: str, base: str, check: str, workers: int = 2) -> Truth:
    tip = git(repo, "rev-parse", f"refs/heads/{branch}").strip()
    commits = git(repo, "rev-list", "--first-parent", "--reverse", f"{base}..{tip}").split()
    with ThreadPoolExecutor(workers) as pool:
        results = list(pool.map(lambda c: run_check(repo, c, check), [base, *commits]))
    on_branch = trailers_with_reverts(repo, tip)
    return Truth(
        base=base,
        commits=commits,
        green=dict(zip([base, *commits], results, strict=True)),
        reverts={c: rv for c, _run, _task, rv in on_branch if rv},
        tasks={c: task for c, _run, task, _rv in on_branch},
    )


def check_verifier(
    *, repo: Path, branch: str, base: str, check: str, db: Path, run_id: str, policy: str
) -> VerifyFindings:
    """Everything in the module docstring; problems empty when the verifier was right."""
    f = VerifyFindings()
    truth = ground_truth(repo, branch, base, check)
    f.facts.update(commits=len(truth.commits), breaks=len(truth.breaks), reverts=len(truth.reverts))
    tip = truth.commits[-1] if truth.commits else base
    if not truth.green[tip]:
        f.problems.append(f"the tip {tip[:12]} is red at the end")
    position = {c: i for i, c in enumerate(truth.commits)}
    reverted = set(truth.reverts.values())
    con = duckdb.connect(str(db), read_only=True)
    try:
        rows = con.execute(
            "SELECT commit_sha, verdict, culprit_sha, confirmed, flake FROM verifications"
            " WHERE run_id = ?",
            [run_id],
        ).fetchall()
        health = con.execute("SELECT breaks FROM tip_health WHERE run_id = ?", [run_id]).fetchall()
    finally:
        con.close()
    confirmed = {culprit for _c, verdict, culprit, ok, _f in rows if verdict == "red" and ok}
    for b in truth.breaks:  # every break detected
        if policy == "revert" and b not in reverted:
            f.problems.append(f"the break {b[:12]} (task {truth.tasks.get(b)}) was never reverted")
        if b not in confirmed:
            f.problems.append(f"no confirmed verification names the break {b[:12]}")
    for revert, culprit in sorted(truth.reverts.items(), key=lambda kv: position.get(kv[0], -1)):
        # Culprits reverted later than this one's landing and before it are undone when judging it.
        undo = [
            c
            for r, c in truth.reverts.items()
            if c in position and position[c] < position.get(culprit, -1) < position.get(r, -1)
        ]
        undo.sort(key=lambda c: -position[c])
        parent = git(repo, "rev-parse", f"{culprit}^").strip()
        red_there = not run_check(repo, culprit, check, undo)
        green_before = run_check(repo, parent, check, undo)  # the parent may be one of them
        if not (red_there and green_before):
            f.problems.append(
                f"revert {revert[:12]} names {culprit[:12]} (task {truth.tasks.get(culprit)}),"
                f" which is not a culprit: red there {red_there}, green before it {green_before}"
            )
    for commit, verdict, culprit, _ok, flake in rows:
        if verdict == "green" and commit in truth.green and not truth.green[commit]:
            f.problems.append(f"verification says {commit[:12]} green; it is red")
        if verdict == "red" and commit in truth.green and truth.green[commit]:
            f.problems.append(f"verification says {commit[:12]} red; it is green")
        if flake and culprit in truth.green and not truth.green[culprit]:
            f.problems.append(f"a flake was recorded at {culprit[:12]}, which is really red")
    f.facts["flakes"] = sum(1 for *_x, flake in rows if flake)
    f.facts["verifications"] = len(rows)
    if not health or health[0][0] != len(truth.breaks):
        f.problems.append(f"tip_health says {health} breaks; git has {len(truth.breaks)}")
    return f


def assert_verified(**kwargs: Any) -> dict[str, Any]:
    found = check_verifier(**kwargs)
    assert not found.problems, "the verifier checker found problems:\n- " + "\n- ".join(
        found.problems
    )
    return found.facts
