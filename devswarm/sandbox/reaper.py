"""Run a command as a child subreaper, then kill whatever it left behind.

Only for commands run without a sandbox (an explicit opt-out): there, a process that calls
`setsid` or double-forks leaves the command's process group, and a group kill misses it. As a
subreaper (prctl PR_SET_CHILD_SUBREAPER) this process adopts every orphan of the command's
tree, so when the command ends, or when we get SIGTERM, every descendant is one of our
children and is killed. What still escapes: a process the command asks another service to
start (systemd-run, at, a container engine, ssh), and anything left if this process itself
is killed with SIGKILL.

Run by path with `python -I -S`: standard library only, no devswarm import.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_CHILD_SUBREAPER = 36


class _Stop(Exception):
    """SIGTERM/SIGINT/SIGHUP: kill everything and leave."""


def _stop(signum: int, _frame: object) -> None:
    raise _Stop(signum)


def _children() -> list[int]:
    """Our child processes (orphans of the command's tree included)."""
    me = os.getpid()
    try:
        with open(f"/proc/{me}/task/{me}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        pass
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[1]) == me:
                found.append(int(entry))
    return found


def _reap_all() -> None:
    """Kill every child until none is left; orphans of the killed come to us and go next."""
    while True:
        for pid in _children():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            return


def main(argv: list[str]) -> int:
    """Run `argv`; return its exit status the way a shell would see it."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)  # best effort: a group kill still follows
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, _stop)
    pid = os.fork()
    if pid == 0:
        # Python ignores SIGPIPE and SIGXFSZ; the command gets the defaults a shell would.
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGPIPE, signal.SIGXFSZ):
            signal.signal(sig, signal.SIG_DFL)
        try:
            os.execvp(argv[0], argv)
        finally:
            os._exit(127)
    status = 0
    try:
        while True:
            done, st = os.waitpid(-1, 0)  # orphans that end meanwhile are reaped too
            if done == pid:
                status = st
                break
    except _Stop:
        status = signal.SIGKILL  # a raw wait status: killed by SIGKILL
    finally:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT, signal.SIGHUP})
        _reap_all()
    if os.WIFSIGNALED(status):
        # Die of the same signal, so our parent sees what the command died of.
        sig = os.WTERMSIG(status)
        if sig not in (signal.SIGKILL, signal.SIGSTOP):
            signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {sig})
        os.kill(os.getpid(), sig)
    return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
