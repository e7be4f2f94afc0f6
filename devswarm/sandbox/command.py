"""Run one shell command for an agent: sandboxed, own session, timeout, cut output.

Each command is a fresh `bash -c` in its own session (no shell state to go wrong). Its output
goes to an anonymous temporary file, never a pipe, so a command that prints gigabytes neither
fills our memory nor blocks on a full pipe; we read back only the head and the tail. It runs in
bubblewrap (a read-only view of the machine, the working directory the only writable path, no
network, its own PID namespace) unless the caller opts out. When it ends or times out, every
process it started dies with it: the PID namespace ends, or without a sandbox a subreaper
kills what it adopted and the process group is killed.
"""

from __future__ import annotations

import os
import resource
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from pydantic import BaseModel

from devswarm.errors import UserError
from devswarm.sandbox.bwrap import SANDBOX_HOME, bwrap_argv
from devswarm.sandbox.env import command_env
from devswarm.sandbox.probe import require_sandbox

# Commands run without a sandbox go through this script (see its docstring).
_REAPER = str(Path(__file__).with_name("reaper.py"))
# How long the subreaper may take to kill what a command left behind before we kill it.
_REAPER_GRACE_S = 5.0


class ResourceLimits(BaseModel):
    """Per-process limits for a command (inherited by everything it starts)."""

    cpu_seconds: int = 600
    memory_bytes: int = 4 << 30  # address space, not resident memory
    file_size_bytes: int = 1 << 30  # also caps the command's output file


class CommandResult(BaseModel):
    """What a command did: exit code (None when it timed out), cut output, timing."""

    exit_code: int | None
    output: str
    timed_out: bool
    truncated: bool
    duration_s: float


def _ulimit_prefix(limits: ResourceLimits) -> str:
    """A bash `ulimit` line that sets soft and hard limits, never above what we may grant.

    Limits are set by the shell rather than in a preexec_fn: Python documents preexec_fn as
    unsafe in a process with threads (the swarm runs workers on a thread pool), and without it
    subprocess can use vfork.
    """

    def cap(res: int, wanted: int) -> int:
        hard = resource.getrlimit(res)[1]
        return wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)

    cpu = max(1, cap(resource.RLIMIT_CPU, limits.cpu_seconds))
    mem_kib = max(1, cap(resource.RLIMIT_AS, limits.memory_bytes) // 1024)
    fsize_kib = max(1, cap(resource.RLIMIT_FSIZE, limits.file_size_bytes) // 1024)
    return f"ulimit -t {cpu} -v {mem_kib} -f {fsize_kib}"


def _snap(head: str | bytes, tail: str | bytes) -> tuple[str | bytes, str | bytes]:
    """Move the cut points to line ends when a line end is near, so no half line is shown."""
    nl = "\n" if isinstance(head, str) else b"\n"
    end = head.rfind(nl)  # type: ignore[arg-type]
    if end >= len(head) // 2:
        head = head[: end + 1]
    start = tail.find(nl)  # type: ignore[arg-type]
    if 0 <= start < len(tail) // 2:
        tail = tail[start + 1 :]
    return head, tail


def cut_output(text: str, limit: int) -> tuple[str, bool]:
    """Keep the head and tail of `text` within `limit` characters; say how much was cut.

    Returns (text, truncated). The marker counts the UTF-8 bytes left out.
    """
    if len(text) <= limit:
        return text, False
    head, tail = _snap(text[: limit // 2], text[len(text) - (limit - limit // 2) :])
    middle = text[len(head) : len(text) - len(tail)]
    cut = len(middle.encode("utf-8", errors="replace"))
    return _join(head, cut, tail), True


def _read_cut(fd: int, limit: int) -> tuple[str, bool]:
    """Read a command's output file: all of it when small, else only its head and tail bytes."""
    size = os.fstat(fd).st_size
    if size <= limit:
        return os.pread(fd, size, 0).decode("utf-8", errors="replace"), False
    tail_n = limit - limit // 2
    head, tail = _snap(os.pread(fd, limit // 2, 0), os.pread(fd, tail_n, size - tail_n))
    cut = size - len(head) - len(tail)
    text = _join(
        head.decode("utf-8", errors="replace"), cut, tail.decode("utf-8", errors="replace")
    )
    return text, True


def _join(head: str, cut: int, tail: str) -> str:
    """head + marker + tail, the marker on a line of its own."""
    before = "" if head.endswith("\n") else "\n"
    return f"{head}{before}[... {cut} bytes cut ...]\n{tail}"


def _wait_exited(pid: int, timeout: float) -> bool:
    """Wait until `pid` has exited, without reaping it; False on timeout.

    Leaving the zombie unreaped keeps its pid reserved, so the group kill that follows can't
    hit an unrelated process that got the number.
    """
    try:
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        pidfd = None
    if pidfd is not None:
        try:
            ready, _, _ = select.select([pidfd], [], [], max(timeout, 0))
            return bool(ready)
        finally:
            os.close(pidfd)
    deadline = time.monotonic() + timeout
    delay = 0.001
    while True:
        if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
            return True
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        time.sleep(min(delay, remaining))
        delay = min(delay * 2, 0.05)


def run_command(
    command: str,
    cwd: Path,
    *,
    timeout: float = 120,
    output_limit: int = 20_000,
    env: Mapping[str, str] | None = None,
    limits: ResourceLimits | None = None,
    sandbox: bool = True,
    network: bool = False,
    writable: Sequence[Path] = (),
    hidden: Sequence[Path | str] = (),
) -> CommandResult:
    """Run `bash -c command` in `cwd`; kill it and everything it started after `timeout` s.

    stdin is /dev/null; stdout and stderr go, interleaved, to one temporary file whose head
    and tail (within `output_limit` characters) are returned. `env` defaults to command_env()
    of os.environ.

    `sandbox` (the default) runs it in bubblewrap: read-only machine, `cwd` and `writable`
    writable, `hidden` paths (devswarm's data and server folders) empty, own PID namespace, no
    network unless `network`. Where no sandbox works this raises SandboxUnavailable, with the
    cause and its fix: there is no silent fallback. `sandbox=False` is the caller's explicit
    opt-out: the command can then do what this user can, and a subreaper still kills what it
    leaves behind.
    """
    cwd = Path(cwd)
    if not cwd.is_dir():
        raise UserError(f"working directory does not exist: {cwd}")
    bwrap = require_sandbox().bwrap if sandbox else None
    child_env = dict(command_env() if env is None else env)
    # Set limits, then run the command in a fresh bash so its line numbers and $0 are its own.
    argv = [
        "bash",
        "-c",
        _ulimit_prefix(limits or ResourceLimits()) + ' || exit 126; exec bash -c "$1"',
        "bash",
        command,
    ]
    if bwrap:
        argv = [*bwrap_argv(bwrap, cwd, writable, hidden, network=network), *argv]
        # The only temporary folder writable inside, and a private, empty home folder.
        child_env["TMPDIR"], child_env["HOME"] = "/tmp", SANDBOX_HOME
    else:
        argv = [sys.executable, "-I", "-S", _REAPER, *argv]

    started = time.monotonic()
    with tempfile.TemporaryFile(prefix="devswarm-run-") as out:
        proc = subprocess.Popen(
            argv,
            cwd=cwd,
            env=child_env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own session and process group: one kill reaches all
        )
        try:
            timed_out = not _wait_exited(proc.pid, timeout)
        finally:
            _end(proc.pid, reaper=bwrap is None)
            proc.wait()
        duration = time.monotonic() - started
        output, truncated = _read_cut(out.fileno(), output_limit)
    return CommandResult(
        exit_code=None if timed_out else proc.returncode,
        output=output,
        timed_out=timed_out,
        truncated=truncated,
        duration_s=round(duration, 3),
    )


def _end(pid: int, *, reaper: bool) -> None:
    """Kill what is left of a command, whether it ended or not (a KeyboardInterrupt here must
    not leak it either). In bubblewrap, killing its group ends its PID namespace and all in it.
    The subreaper is first asked to kill the processes it adopted (setsid, double forks)."""
    if reaper:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        _wait_exited(pid, _REAPER_GRACE_S)
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
