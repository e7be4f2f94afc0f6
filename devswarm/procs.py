"""Processes: is a pid alive, wait for one to die, end a process group.

One home for the pid checks that the git workspace (worktrees of dead processes), the server
(its PostgreSQL and Prefect processes) and the sandbox (commands and what they started) need.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path


def pid_alive(pid: int) -> bool:
    """Whether `pid` runs. A zombie (dead, not yet reaped by its parent) counts as dead; a
    child of ours is reaped here. A pid we may not signal (another user's) counts as alive."""
    try:
        os.waitpid(pid, os.WNOHANG)  # reap it if it is our own child
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return fields[0] != "Z"
    except (OSError, IndexError):
        return True


def command_line(pid: int) -> list[bytes] | None:
    """The arguments `pid` was started with, or None when they cannot be read (no /proc, or
    the process is gone): callers that check what a recorded pid runs then trust the pid."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
    except OSError:
        return None


def wait_dead(pid: int, timeout: float) -> bool:
    """Wait up to `timeout` seconds for `pid` to end; whether it did."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(0.1)
    return not pid_alive(pid)


def kill_group(pgid: int, timeout: float) -> None:
    """SIGTERM the process group `pgid`, then SIGKILL it if its leader lingers past `timeout`."""
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    if not wait_dead(pgid, timeout):
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            return
        wait_dead(pgid, 5)
