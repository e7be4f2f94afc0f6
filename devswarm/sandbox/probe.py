"""Does the sandbox work here? A real isolation test, once per process, and its verdict.

Starting is not enough: a bubblewrap that runs but shares the network or the PID namespace
(an old version, a seccomp profile that lets some flags through) would give a false sense of
safety. So the probe runs a command with the same argv as agents' commands and checks what
it can do: connect to a port that listens on our loopback, write beside its worktree, read
the environment of a process of ours. It must fail at each and succeed at writing in its
worktree.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import threading
import uuid
from pathlib import Path

from pydantic import BaseModel

from devswarm.errors import UserError
from devswarm.sandbox.bwrap import Bwrap, bwrap_argv, bwrap_candidates
from devswarm.sandbox.diagnose import diagnose, host_facts

# Each check prints one line when the sandbox fails it. `$1` worktree, `$2` a folder beside
# it, `$3` a listening loopback port, `$4` a pid of ours, `$5` the marker in its environment.
_PROBE_SCRIPT = r"""
echo inside > "$1/inside" || echo "the worktree is not writable"
if echo x > "$2/outside" 2>/dev/null; then echo "a folder outside the worktree is writable"; fi
if (exec 3<>"/dev/tcp/127.0.0.1/$3") 2>/dev/null; then echo "the network is reachable"; fi
if grep -qsa "$5" "/proc/$4/environ" /proc/[0-9]*/environ; then
  echo "another process's environment is readable (no PID namespace)"
fi
"""


class SandboxStatus(BaseModel):
    """The verdict of the probe: a working bubblewrap, or why there is none."""

    works: bool
    bwrap: str | None = None  # the binary that passed (or the one diagnosed)
    origin: str | None = None  # "system" or "bundled"
    diagnosis: str | None = None  # one line, when it does not work


class SandboxUnavailable(UserError):
    """A sandbox was asked for and does not work here; the message says why and the fix."""


_lock = threading.Lock()
_verdicts: dict[tuple[Bwrap, ...], SandboxStatus] = {}


def sandbox_status() -> SandboxStatus:
    """The sandbox this process uses: the first of the system's and the bundled bubblewrap
    that passes the isolation test, probed once per set of candidates (so once per process)."""
    candidates = tuple(bwrap_candidates())
    with _lock:  # one probe even when many workers ask at once
        if candidates not in _verdicts:
            _verdicts[candidates] = _probe_all(candidates)
        return _verdicts[candidates]


def sandbox_works() -> bool:
    """Whether agents' commands can run in a sandbox here."""
    return sandbox_status().works


# What a run without the sandbox exposes, said once per run and in its summary.
NO_SANDBOX_NOTICE = (
    "the sandbox is turned off (--no-sandbox): agents' commands run without one; they can read "
    "the API key and write your files, with network access (see docs/sandbox.md)"
)


def sandbox_description(enabled: bool) -> str:
    """How agents' commands run, in a few words for the summary and the live view: "on (system
    bubblewrap)" or "off (--no-sandbox)". SandboxUnavailable when asked for and not working."""
    if not enabled:
        return "off (--no-sandbox)"
    return f"on ({require_sandbox().origin or 'system'} bubblewrap)"


def require_sandbox() -> SandboxStatus:
    """The working sandbox, or SandboxUnavailable with the cause and its fix in one line."""
    status = sandbox_status()
    if not status.works:
        raise SandboxUnavailable(status.diagnosis or "no sandbox")
    return status


def _probe_all(candidates: tuple[Bwrap, ...]) -> SandboxStatus:
    first_failure: SandboxStatus | None = None
    for candidate in candidates:
        status = probe(candidate)
        if status.works:
            return status
        first_failure = first_failure or status  # the system's failure explains most
    return first_failure or SandboxStatus(works=False, diagnosis=diagnose(host_facts()))


def probe(bwrap: Bwrap, timeout: float = 20) -> SandboxStatus:
    """Run the isolation test with `bwrap`; its verdict (not cached)."""
    base = Path(tempfile.mkdtemp(prefix="devswarm-probe-", dir=_probe_parent()))
    worktree, beside = base / "worktree", base / "beside"
    worktree.mkdir()
    beside.mkdir()
    marker = f"devswarm-probe-{uuid.uuid4().hex}"
    listener = socket.create_server(("127.0.0.1", 0))
    # A process of ours with a marker in its environment, as the orchestrator has its key.
    canary = subprocess.Popen(
        ["sleep", "60"], env={"DEVSWARM_PROBE_MARKER": marker, "PATH": os.defpath}
    )
    try:
        argv = [
            *bwrap_argv(bwrap.path, worktree),
            *("bash", "-c", _PROBE_SCRIPT, "probe", str(worktree), str(beside)),
            *(str(listener.getsockname()[1]), str(canary.pid), marker),
        ]
        try:
            done = subprocess.run(
                argv,
                env={"PATH": os.environ.get("PATH", os.defpath)},
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            return _failed(bwrap, str(exc) or type(exc).__name__)
        found = [done.stdout.strip()] if done.stdout.strip() else []
        # Seen from outside too: a sandbox that lied about a write is no sandbox.
        if (beside / "outside").exists():
            found.append("a folder outside the worktree is writable")
        if done.returncode == 0 and not (worktree / "inside").exists() and not found:
            found.append("the worktree is not writable")
        if done.returncode != 0 and not found:
            return _failed(bwrap, done.stderr or f"exit code {done.returncode}")
        if found:
            return _failed(bwrap, "; ".join(dict.fromkeys(found)), started=True)
        return SandboxStatus(works=True, bwrap=bwrap.path, origin=bwrap.origin)
    finally:
        canary.kill()
        canary.wait()
        listener.close()
        shutil.rmtree(base, ignore_errors=True)


def _failed(bwrap: Bwrap, error: str, *, started: bool = False) -> SandboxStatus:
    facts = host_facts(bwrap.path, bwrap.origin, error.replace("\n", " "), started)
    return SandboxStatus(
        works=False, bwrap=bwrap.path, origin=bwrap.origin, diagnosis=diagnose(facts)
    )


def _probe_parent() -> str | None:
    """A folder outside /tmp for the probe (inside the sandbox /tmp is a private tmpfs, where
    a write outside the worktree would succeed without showing anything)."""
    for folder in ("/var/tmp", os.path.expanduser("~")):
        if os.path.isdir(folder) and os.access(folder, os.W_OK):
            return folder
    return None
