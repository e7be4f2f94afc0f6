"""The repository check and the setup command, run in worktrees with a cache per commit.

A check runs where an agent's code runs, so it is sandboxed like the agent's own commands. So is
the setup: from the second cycle on it runs on commits agents wrote. It may write its worktree
and the run's cache folder (pip's, npm's, anything under XDG_CACHE_HOME), and reach the network
only when the user says --setup-network. The check of a commit runs once (a scratch worktree,
its result cached); a setup that fails is cached per base commit, so later workers on the same
commit report it at once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from devswarm.config import SwarmConfig
from devswarm.git.workspace import Workspace
from devswarm.sandbox.command import run_command
from devswarm.schemas import CheckResult


class Checks:
    """The run's checks: `run()` in a worktree, `at(commit)` cached, `setup()` per worktree."""

    def __init__(
        self,
        config: SwarmConfig,
        workspace: Workspace,
        env: Callable[[], dict[str, str]],
        *,
        hidden: Sequence[Path] = (),
        cache: Path | None = None,
        redact: Callable[[str], str] = str,
    ) -> None:
        """`env` gives the commands' environment (command_env); `hidden` paths look empty to
        them; `cache` is the setup's cache folder; `redact` cleans their output of secrets."""
        self.config, self.workspace, self._env = config, workspace, env
        self.hidden, self.cache, self.redact = list(hidden), cache, redact
        self._lock = threading.Lock()
        self._results: dict[str, CheckResult] = {}  # commit -> the repository check there
        self._check_locks: dict[str, threading.Lock] = {}
        self.setup_results: dict[str, CheckResult] = {}  # commit -> first setup result there
        self._setup_locks: dict[str, threading.Lock] = {}

    def run(
        self,
        command: str,
        cwd: Path,
        *,
        env: dict[str, str] | None = None,
        network: bool = False,
        writable: Sequence[Path] = (),
    ) -> CheckResult:
        """Run a shell check in a worktree, sandboxed (agents' code runs in it) unless the user
        said --no-sandbox; its output is redacted of the run's secrets."""
        result = run_command(
            command,
            cwd,
            timeout=self.config.command_timeout,
            env=self._env() if env is None else env,
            sandbox=self.config.sandbox,
            network=network,
            writable=writable,
            hidden=self.hidden,
        )
        return CheckResult(
            command=command,
            passed=result.exit_code == 0 and not result.timed_out,
            exit_code=result.exit_code,
            output=self.redact(result.output),
        )

    def at(self, commit: str, *, fresh: bool = False) -> CheckResult | None:
        """The repository check at a commit, run once per commit in a scratch worktree;
        `fresh` runs it again and keeps the new result (the verifier's confirmation of a red)."""
        command = self.config.check
        if not command:
            return None
        with self._lock:
            lock = self._check_locks.setdefault(commit, threading.Lock())
        with lock:
            if fresh or commit not in self._results:
                name = f"check-{commit[:12]}-{threading.get_ident()}"
                with self.workspace.worktree(name, commit) as wt:
                    self.setup(wt, commit)
                    self._results[commit] = self.run(command, wt)
            return self._results[commit]

    def known(self, commit: str) -> CheckResult | None:
        """The cached result of the repository check at a commit, without running it."""
        return self._results.get(commit)

    def forget(self, commits: list[str]) -> None:
        """Drop cached results (red ones a flaky check may have given): checked anew next time."""
        with self._lock:
            for commit in commits:
                self._results.pop(commit, None)

    def setup(self, worktree: Path, base: str) -> CheckResult | None:
        """The setup command in a fresh worktree at commit `base`.

        What a setup makes (a venv, node_modules, a build) lives in the worktree, so a passing
        setup runs again in every worktree. A failing one is cached per base commit: the same
        commit fails the same way, so later workers report it at once; and the first setup of
        a commit runs alone, so a broken setup runs once, not once per worker.
        """
        if not self.config.setup:
            return None
        with self._lock:
            lock = self._setup_locks.setdefault(base, threading.Lock())
        with lock:
            first = self.setup_results.get(base)
            if first is None:
                self.setup_results[base] = first = self._run_setup(worktree)
                return first
        return first if not first.passed else self._run_setup(worktree)

    def _run_setup(self, worktree: Path) -> CheckResult:
        # Sandboxed: from the second cycle on it runs on what agents wrote. Package managers'
        # caches go to one folder per repository, shared by the run's worktrees (and later runs).
        writable: list[Path] = []
        env = self._env()
        if self.cache is not None:
            self.cache.mkdir(parents=True, exist_ok=True)
            writable.append(self.cache)
            env |= cache_env(self.cache)
        return self.run(
            self.config.setup or "",
            worktree,
            env=env,
            network=self.config.setup_network,
            writable=writable,
        )


def cache_env(cache: Path) -> dict[str, str]:
    """Variables that point package managers' caches into `cache` (the setup's only writable
    folder besides its worktree)."""
    return {
        "XDG_CACHE_HOME": str(cache),
        "PIP_CACHE_DIR": str(cache / "pip"),
        "npm_config_cache": str(cache / "npm"),
    }
