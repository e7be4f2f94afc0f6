"""The runs of this process: who is active, who listens, whose key is waiting, and signals.

Flows pass run ids between Prefect runs, not objects (parameters must be serialisable); each
flow looks its Run up here. The CLI's live panel and event printer listen here. The API key is
handed from the CLI to the flow here, so it never becomes a (stored) flow parameter.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr

if TYPE_CHECKING:
    from devswarm.run.run import Run

Listener = Callable[[str], None]

_LOCK = threading.Lock()
_RUNS: dict[str, Run] = {}
_LISTENERS: list[Listener] = []
_KEYS: dict[str, SecretStr] = {}
_TOLD: set[str] = set()  # (run id, notice) pairs already said once


def register(run: Run) -> None:
    with _LOCK:
        _RUNS[run.run_id] = run


def unregister(run_id: str) -> None:
    with _LOCK:
        _RUNS.pop(run_id, None)


def get_run(run_id: str) -> Run:
    """The live Run of this process with this id."""
    with _LOCK:
        run = _RUNS.get(run_id)
    if run is None:
        raise RuntimeError(f"run {run_id} is not active in this process")
    return run


def active_runs() -> list[Run]:
    with _LOCK:
        return list(_RUNS.values())


def listeners() -> list[Listener]:
    """The listeners a new run starts with (a copy)."""
    with _LOCK:
        return list(_LISTENERS)


@contextlib.contextmanager
def listening(listener: Listener) -> Iterator[None]:
    """Runs started while the block runs tell `listener` their event lines."""
    with _LOCK:
        _LISTENERS.append(listener)
    try:
        yield
    finally:
        with _LOCK:
            _LISTENERS.remove(listener)


def first_time(run_id: str, what: str) -> bool:
    """True the first time this process asks for (run, what): a notice said once per run (the
    CLI builds a probe Run before the flow builds the real one)."""
    with _LOCK:
        if (run_id, what) in _TOLD:
            return False
        _TOLD.add((run_id, what))
        return True


def hand_over_key(run_id: str | None, key: SecretStr) -> None:
    """Give a run's API key to its flow without making it a (stored) flow parameter."""
    if run_id and key.get_secret_value():
        with _LOCK:
            _KEYS[run_id] = key


def take_key(run_id: str | None) -> SecretStr | None:
    with _LOCK:
        return _KEYS.pop(run_id, None) if run_id else None


@contextlib.contextmanager
def drain_on_signals(announce: Listener | None = None) -> Iterator[None]:
    """SIGINT/SIGTERM drain every run of this process (no new workers, running ones stop at their
    next step, everything recorded); a second signal aborts. Main thread only (signals' rule).

    Inside a flow this replaces Prefect's SIGTERM bridge, so cancelling a deployment's run from
    the UI (the runner sends SIGTERM) drains the swarm instead of killing it mid-landing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    hits = 0

    def handler(signum: int, _frame: Any) -> None:
        nonlocal hits
        hits += 1
        if hits > 1:
            raise KeyboardInterrupt
        for run in active_runs():
            run.stop(f"stopped by {signal.Signals(signum).name}")
        if announce:
            announce("draining: running workers stop at their next step; signal again to abort")

    old = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, previous in old.items():
            signal.signal(sig, previous)
