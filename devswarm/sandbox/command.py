"""Run one shell command for an agent: own process group, timeout, cut output, no secrets.

Each command is a fresh `bash -c` in its own session (no shell state to go wrong). Its output
goes to an anonymous temporary file, never a pipe, so a command that prints gigabytes neither
fills our memory nor blocks on a full pipe; we read back only the head and the tail. When the
command ends (or times out) the whole process group is killed, so nothing it started in the
background outlives it. Where bubblewrap works, the command also runs in a read-only view of
the machine with the working directory the only writable path and no network.
"""

from __future__ import annotations

import os
import resource
import select
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from pydantic import BaseModel

from devswarm.errors import UserError
from devswarm.sandbox.bwrap import bwrap_argv, bwrap_available
from devswarm.sandbox.env import scrubbed_env


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
    use_bwrap: bool | None = None,
    writable: Sequence[Path] = (),
    hidden: Sequence[Path] = (),
) -> CommandResult:
    """Run `bash -c command` in `cwd`; kill it and everything it started after `timeout` s.

    stdin is /dev/null; stdout and stderr go, interleaved, to one temporary file whose head
    and tail (within `output_limit` characters) are returned. `env` defaults to the scrubbed
    os.environ. `use_bwrap`: None = bubblewrap when it works here, True = require it,
    False = never. Inside bubblewrap, `writable` adds writable paths besides `cwd`, and
    `hidden` paths (e.g. devswarm's data folder, with its database socket and other runs'
    records) look empty; the worktree and its git folders stay visible even when inside one.
    """
    cwd = Path(cwd)
    if not cwd.is_dir():
        raise UserError(f"working directory does not exist: {cwd}")
    if use_bwrap and not bwrap_available():
        raise UserError("bubblewrap was requested but does not work on this machine")
    sandboxed = bwrap_available() if use_bwrap is None else use_bwrap
    child_env = dict(scrubbed_env() if env is None else env)
    # Set limits, then run the command in a fresh bash so its line numbers and $0 are its own.
    argv = [
        "bash",
        "-c",
        _ulimit_prefix(limits or ResourceLimits()) + ' || exit 126; exec bash -c "$1"',
        "bash",
        command,
    ]
    if sandboxed:
        argv = [*bwrap_argv(cwd, writable, hidden), *argv]
        child_env["TMPDIR"] = "/tmp"  # the only temporary folder that is writable inside

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
            # Kill the group whether the command ended or not: background children must not
            # outlive their command (and a KeyboardInterrupt here must not leak them either).
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
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
