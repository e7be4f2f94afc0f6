"""The swarm run's live artifacts: a progress bar and a board, updated in place as the run goes.

- `swarm-progress` (a progress artifact): tasks settled (landed, failed or skipped) of the tasks
  planned so far, so a run whose tasks all ended reaches 100 whether or not they landed.
- `swarm-board` (markdown): planners at work; tasks working / pending / landed / failed /
  skipped; tokens and dollars against their caps; conflicts; the tip and its check; the latest
  event lines — what the terminal's live panel shows, in the Prefect UI.

Both are created once per run in the swarm flow run and then updated by id (Prefect 3.9's
PATCH /artifacts/{id}: the same artifact, no new version per update) from a small thread, at
most every few seconds and only when something changed; the thread ends with the run.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import threading
from collections import deque
from collections.abc import Iterator

from prefect.artifacts import create_markdown_artifact, create_progress_artifact
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import ArtifactUpdate

from devswarm.run.run import Run

EVERY = 3.0  # seconds between updates, at most
RECENT = 8  # event lines on the board

_log = logging.getLogger(__name__)


def board_markdown(run: Run, recent: list[str]) -> str:
    """The board: the run's counters, spend, tip and latest event lines, as markdown tables."""
    b = run.progress.board()
    spent = run.ledger.usage()
    tokens, max_tokens = spent["tokens"]
    cost, max_cost = spent["cost"]
    draining = f"; draining: {run.ledger.exhausted}" if run.ledger.exhausted else ""
    lines = [
        f"# Swarm run {run.run_id}: {len(run.state.cycles)} of at most {run.config.max_cycles} "
        f"cycle(s) done{draining}",
        "",
        "| planners planning | tasks planned | working | pending | landed | failed | skipped |",
        "|---|---|---|---|---|---|---|",
        f"| {b['planning']} | {b['planned']} | {b['working']} | {b['pending']} | {b['landed']} "
        f"| {b['failed']} | {b['skipped']} |",
        "",
        "| tokens | dollars | conflicts | tip |",
        "|---|---|---|---|",
        f"| {tokens:,.0f} of {max_tokens:,.0f} | ${cost:.4f} of ${max_cost:.2f} "
        f"| {b['conflicts']} | {tip_state(run)} |",
    ]
    if recent:
        lines += ["", "## Latest", *(f"- {line}" for line in recent)]
    return run.story.redact("\n".join(lines), 20_000)  # the check command may hold one


def tip_state(run: Run) -> str:
    """The branch's tip and what is known of its check (never runs it)."""
    tip = run.workspace.tip()
    if not run.config.check:
        return f"`{tip[:10]}` (no repository check)"
    check = run.checks.known(tip)
    state = "not checked yet" if check is None else "passes" if check.passed else "fails"
    return f"`{tip[:10]}` {state} `{run.config.check}`"


class LiveArtifacts:
    """The two artifacts of one run and the thread that keeps them current."""

    def __init__(self, run: Run, every: float = EVERY) -> None:
        self.run, self.every = run, every
        self.recent: deque[str] = deque(maxlen=RECENT)
        self._stop = threading.Event()
        self._shown: tuple[float, str] | None = None
        self.progress_id = create_progress_artifact(
            0.0,
            key="swarm-progress",
            description=f"Run {run.run_id}: tasks settled (landed, failed or skipped) "
            "of the tasks planned so far, in %",
        )
        self.board_id = create_markdown_artifact(
            board_markdown(run, []),
            key="swarm-board",
            description=f"Run {run.run_id} as it goes: tasks, spend, conflicts, the tip",
        )
        self._thread = threading.Thread(
            target=contextvars.copy_context().run,  # Prefect's settings (API, auth) come along
            args=(self._loop,),
            name=f"live-artifacts-{run.run_id}",
            daemon=True,
        )

    def hear(self, line: str) -> None:
        """An event line for the board's latest lines (redacted like the run's log)."""
        self.recent.append(self.run.story.redact(line, 200))  # redacted before it is cut

    def update(self) -> None:
        """Send what changed since the last update (nothing when nothing did)."""
        shown = (
            round(self.run.progress.percent_settled(), 1),
            board_markdown(self.run, list(self.recent)),
        )
        if shown == self._shown:
            return
        with get_client(sync_client=True) as client:
            if self._shown is None or shown[0] != self._shown[0]:
                client.update_artifact(self.progress_id, ArtifactUpdate(data=shown[0]))
            if self._shown is None or shown[1] != self._shown[1]:
                client.update_artifact(self.board_id, ArtifactUpdate(data=shown[1]))
        self._shown = shown

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            self._update_quietly()

    def _update_quietly(self) -> None:
        try:
            self.update()
        except Exception as exc:  # the UI's view must never stop the swarm
            _log.debug("live artifacts of %s not updated: %s", self.run.run_id, exc)

    def __enter__(self) -> LiveArtifacts:
        self.run.progress.listeners.append(self.hear)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.run.progress.listeners.remove(self.hear)
        self._update_quietly()  # the last word: the run's final counts


@contextlib.contextmanager
def live_artifacts(run: Run, every: float = EVERY) -> Iterator[LiveArtifacts]:
    """The run's live progress and board while the block runs (call it in the swarm flow run,
    which the artifacts belong to)."""
    with LiveArtifacts(run, every) as live:
        yield live
