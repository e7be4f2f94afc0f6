"""A run's story in the Prefect UI: the `devswarm` logger's lines reach the API of the flow run
they are logged in (its Logs tab), while a terminal stays as quiet as before.

The core logs with plain `logging` on `devswarm.<role>` (devswarm/run/story.py: redacted,
bounded). `story_to_prefect` gives the `devswarm` logger, once per process, Prefect's API log
handler — the handler PREFECT_LOGGING_EXTRA_LOGGERS=devswarm would add, here only for lines
logged inside a flow or task run (elsewhere Prefect would warn about each) — and INFO level.
The lines also reach the root logger; what a terminal prints of them is the console handler's
level: the CLI sets it to WARNING (devswarm/commands/common.py), a Prefect worker's process
prints them as it prints any flow's logs.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from prefect.context import FlowRunContext, TaskRunContext
from prefect.logging.handlers import APILogHandler

from devswarm.run.run import Run

LOGGER = "devswarm"


class _InARun(logging.Filter):
    """Lines logged inside a flow or task run, or naming their flow run."""

    def filter(self, record: logging.LogRecord) -> bool:
        return bool(
            getattr(record, "flow_run_id", None) or FlowRunContext.get() or TaskRunContext.get()
        )


def story_to_prefect() -> None:
    """Send the `devswarm` logger's INFO lines to the Prefect API of the run they are logged in.
    Idempotent; a handler the user's logging settings put there already is kept."""
    logger = logging.getLogger(LOGGER)
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    if not any(isinstance(h, APILogHandler) for h in logger.handlers):
        handler = APILogHandler()
        handler.addFilter(_InARun())
        logger.addHandler(handler)


@contextlib.contextmanager
def swarm_log(run: Run, flow_run_id: str) -> Iterator[None]:
    """While the block runs, the run's event lines (run.progress.emit: cycles, task endings,
    budget, drain) go to the swarm flow run's log, from whichever thread says them."""
    logger = logging.LoggerAdapter(
        logging.getLogger(f"{LOGGER}.swarm"), {"flow_run_id": flow_run_id}
    )

    def listener(line: str) -> None:
        if (text := run.story.line(None, line)) is not None:
            logger.info(text)

    run.progress.listeners.append(listener)
    try:
        yield
    finally:
        run.progress.listeners.remove(listener)
