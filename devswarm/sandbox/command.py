"""Run one shell command for an agent: own process group, timeout, cut output, no secrets.

Each command is a fresh `bash -c` in its own session (no shell state to go wrong). Its output
goes to an anonymous temporary file, never a pipe, so a command that prints gigabytes neither
fills our memory nor blocks on a full pipe; we read back only the head and the tail. When the
command ends (or times out) the whole process group is killed, so nothing it started in the
background outlives it. Where bubblewrap works, the command also runs in a read-only view of
the machine with the working directory the only writable path and no network.
"""

from __future__ import annotations

import functools
import os
import re
import resource
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from pydantic import BaseModel

from devswarm.errors import UserError
from devswarm.git.plumbing import redirects_git

# Variable names that hint at a credential, matched anywhere in the name (case-insensitive).
# AUTH but not AUTHOR: GIT_AUTHOR_NAME is an identity, not a credential.
SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|PASSWD|AUTH(?!OR)|CREDENTIAL", re.IGNORECASE)
# Whole families of configuration an agent's command has no business seeing.
SECRET_NAME_PREFIXES = ("OPENAI_", "PREFECT_", "ANTHROPIC_", "AWS_", "DEVSWARM_")
# Git config for every command: no git transport to a local path. Without bubblewrap, the
# private clone's `origin` is the user's repository, and `git push origin ...` would otherwise
# write the user's branches (with bubblewrap the user's repository is read-only anyway).
AGENT_GIT_CONFIG = {"protocol.file.allow": "never"}


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


def scrubbed_env(
    base: Mapping[str, str] | None = None, *, secrets: Iterable[str] = ()
) -> dict[str, str]:
    """The environment for an agent's command: `base` (default os.environ) minus anything secret.

    Drops variables whose name looks like a credential or belongs to devswarm/model/cloud
    configuration, variables that redirect git to another repository or carry git config, and
    any variable whose value contains one of `secrets`. Sets AGENT_GIT_CONFIG for git (no push
    or fetch to a local path, such as the user's repository). Puts the directory of the running interpreter first on
    PATH so `python` is the one devswarm runs on.
    """
    source = os.environ if base is None else base
    needles = [s for s in secrets if s]
    env: dict[str, str] = {}
    for name, value in source.items():
        upper = name.upper()
        if SECRET_NAME.search(name):
            continue
        if upper.startswith(SECRET_NAME_PREFIXES) or redirects_git(upper):
            continue
        if any(n in value for n in needles):
            continue
        env[name] = value
    bindir = os.path.dirname(sys.executable)
    rest = [p for p in env.get("PATH", os.defpath).split(os.pathsep) if p and p != bindir]
    env["PATH"] = os.pathsep.join([bindir, *rest])
    env["GIT_CONFIG_COUNT"] = str(len(AGENT_GIT_CONFIG))
    for i, (key, value) in enumerate(AGENT_GIT_CONFIG.items()):
        env[f"GIT_CONFIG_KEY_{i}"], env[f"GIT_CONFIG_VALUE_{i}"] = key, value
    # No command may wait for a password: there is nobody to type it.
    env["GIT_TERMINAL_PROMPT"] = "0"
    # __pycache__ folders would appear as untracked files in the worktree and could be landed.
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    # stdout and stderr share one file; unbuffered Python keeps a traceback after the prints
    # that came before it instead of ahead of them.
    env["PYTHONUNBUFFERED"] = "1"
    return env


# /run holds sockets (docker, user session buses, services); sockets on a read-only mount still
# accept connections, so it is replaced by an empty tmpfs. A command with no network needs none.
_BWRAP_FLAGS = (
    "--ro-bind", "/", "/",
    "--dev", "/dev",
    "--proc", "/proc",
    "--tmpfs", "/tmp",
    "--tmpfs", "/run",
)  # fmt: skip
# Credentials commonly kept in a home folder: hidden inside bubblewrap (readable otherwise).
DEFAULT_HIDDEN = (
    "~/.ssh",
    "~/.aws",
    "~/.azure",
    "~/.config/gcloud",
    "~/.config/gh",
    "~/.docker",
    "~/.kube",
    "~/.gnupg",
    "~/.git-credentials",
    "~/.netrc",
    "~/.pypirc",
)
_BWRAP_ISOLATION = ("--unshare-net", "--unshare-pid", "--die-with-parent", "--new-session")


@functools.cache
def bwrap_available() -> bool:
    """True when `bwrap` is installed and a sandbox with our flags actually starts here.

    Containers often lack user namespaces or the capabilities bubblewrap needs; then the
    probe fails and commands run without it. Probed once per process.
    """
    exe = shutil.which("bwrap")
    if exe is None:
        return False
    try:
        probe = subprocess.run(
            [exe, *_BWRAP_FLAGS, *_BWRAP_ISOLATION, "true"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return probe.returncode == 0


def _git_dirs(cwd: str) -> list[str]:
    """The repository folders git in `cwd` reads that lie outside it: a worktree's own git
    folder, the common folder of the clone, and object alternates (a `clone --shared`)."""
    dotgit = os.path.join(cwd, ".git")
    found: list[str] = []
    if os.path.isdir(dotgit):
        common = dotgit
    else:
        try:
            text = Path(dotgit).read_text().strip()
        except OSError:
            return []
        if not text.startswith("gitdir:"):
            return []
        gitdir = os.path.realpath(os.path.join(cwd, text.removeprefix("gitdir:").strip()))
        found.append(gitdir)
        try:
            rel = Path(gitdir, "commondir").read_text().strip()
            common = os.path.realpath(os.path.join(gitdir, rel))
        except OSError:
            common = gitdir
        found.append(common)
    objects = [os.path.join(common, "objects")]
    while objects and len(found) < 16:  # alternates may chain; a loop must not hang us
        alternates = os.path.join(objects.pop(), "info", "alternates")
        try:
            lines = Path(alternates).read_text().splitlines()
        except OSError:
            continue
        for line in lines:
            if line.strip() and not line.startswith("#"):
                alt = os.path.realpath(
                    os.path.join(os.path.dirname(os.path.dirname(alternates)), line.strip())
                )
                if alt not in found:
                    found.append(alt)
                    objects.append(alt)
    return [d for d in dict.fromkeys(found) if os.path.isdir(d)]


def bwrap_argv(
    cwd: Path, writable: Sequence[Path] = (), hidden: Sequence[Path | str] = ()
) -> list[str]:
    """The bubblewrap prefix: read-only root, private /tmp, `cwd` and `writable` writable,
    `hidden` (and DEFAULT_HIDDEN) replaced by an empty folder or file.

    Mount order matters (later mounts land on top). The fresh /tmp and the hidden paths come
    first; then the git folders the worktree needs, read-only (they may live under /tmp or a
    hidden data folder); then the writable paths; last, a `.git` in `cwd` is bound read-only
    again: an agent must not rewrite the repository's config or hooks, which devswarm's own git
    commands run outside the sandbox.
    """
    real_cwd = os.path.realpath(cwd)
    argv = [shutil.which("bwrap") or "bwrap", *_BWRAP_FLAGS]
    for path in (*DEFAULT_HIDDEN, *hidden):
        real = os.path.realpath(os.path.expanduser(path))
        if os.path.isdir(real):
            argv += ["--tmpfs", real]
        elif os.path.exists(real):
            argv += ["--ro-bind", "/dev/null", real]
    # The interpreter devswarm runs on (`python` in agents' commands) stays visible even when its
    # virtual environment lives under /tmp or a hidden folder.
    for prefix in sorted(
        {os.path.realpath(sys.prefix), os.path.realpath(os.path.dirname(sys.executable))}, key=len
    ):
        if os.path.isdir(prefix) and prefix != "/":
            argv += ["--ro-bind", prefix, prefix]
    for gitdir in sorted(_git_dirs(real_cwd), key=len):  # parents before children
        argv += ["--ro-bind", gitdir, gitdir]
    for path in (real_cwd, *writable):
        real = os.path.realpath(path)
        argv += ["--bind", real, real]
    dotgit = os.path.join(real_cwd, ".git")
    if os.path.lexists(dotgit) and not os.path.islink(dotgit):
        argv += ["--ro-bind", dotgit, dotgit]
    argv += [*_BWRAP_ISOLATION, "--chdir", real_cwd]
    return argv


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
