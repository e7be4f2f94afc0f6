"""The sandboxes a test can run in: none (explicit opt-out), the system's bwrap, the bundled one.

Tests that need a sandbox run once with each bubblewrap found here, so a machine with the
system's `bwrap` and a pip install with only the bundled one are both covered. Use:

    @pytest.mark.parametrize("mode", MODES)   # or KINDS: sandboxed only
    def test_x(sandboxed): run_command(..., sandbox=sandboxed)

Import `sandboxed_fixture` into the test module (pytest finds it under the name `sandboxed`).
"""

from __future__ import annotations

import functools

import pytest

from devswarm.sandbox import bwrap
from devswarm.sandbox.probe import probe


@functools.cache
def kind_works(kind: str) -> str | None:
    """Why a kind of bubblewrap cannot be tested here; None when it works."""
    path = bwrap.system_bwrap() if kind == "system" else bwrap.bundled_bwrap()
    if path is None:
        return f"no {kind} bwrap here"
    status = probe(bwrap.Bwrap(path, kind))
    return None if status.works else status.diagnosis


def _kind(kind: str) -> object:
    why = kind_works(kind)
    return pytest.param(kind, id=kind, marks=pytest.mark.skipif(why is not None, reason=str(why)))


KINDS = [_kind("system"), _kind("bundled")]
MODES = [pytest.param("plain", id="plain"), *KINDS]


@pytest.fixture(name="sandboxed")
def sandboxed_fixture(mode: str, monkeypatch: pytest.MonkeyPatch) -> bool:
    """Make `mode`'s bubblewrap the one found (hiding the other); whether to sandbox."""
    if mode == "bundled":
        monkeypatch.setattr(bwrap, "system_bwrap", lambda: None)
    elif mode == "system":
        monkeypatch.setattr(bwrap, "bundled_bwrap", lambda: None)
    return mode != "plain"
