"""What a person watching a run sees: a live panel on a terminal, one line per event elsewhere."""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.live import Live
from rich.table import Table

from devswarm.run import registry
from devswarm.run.progress import NOT_OUTCOMES

_last_rows: dict[str, list[str]] = {}  # a run's last row stays on the panel after it ends


def _panel(started: float) -> Table:
    table = Table(title="devswarm", show_header=True, header_style="bold")
    for col in (
        "run",
        "planning",
        "tasks: working / pending / landed / failed / skipped",
        "tokens",
        "US$",
        "conflicts",
        "tip",
        "elapsed",
    ):
        table.add_column(col)
    for run in registry.active_runs():
        s = Counter(run.progress.counts())
        failed = sum(v for k, v in s.items() if k not in NOT_OUTCOMES | {"skipped"})
        pending = max(0, s["planned"] - s["working"] - s["landed"] - s["skipped"] - failed)
        _last_rows[run.run_id] = [
            run.run_id,
            str(s["planning"]),
            f"{s['working']} / {pending} / {s['landed']} / {failed} / {s['skipped']}",
            f"{run.ledger.tokens:,}",
            f"{run.ledger.cost:.4f}",
            str(s["conflicts"]),
            run.progress.tip,
            f"{time.monotonic() - started:.0f} s",
        ]
    for row in _last_rows.values():
        table.add_row(*row)
    if not _last_rows:
        table.add_row(
            "(starting Prefect)", "", "", "", "", "", "", f"{time.monotonic() - started:.0f} s"
        )
    return table


@contextmanager
def watch(console: Console | None = None) -> Iterator[None]:
    """Show progress while the block runs (a panel on a terminal, event lines otherwise)."""
    console = console or Console(stderr=True)
    started = time.monotonic()
    if console.is_terminal:
        with Live(_panel(started), console=console, refresh_per_second=2, transient=False) as live:

            def listener(line: str) -> None:
                live.console.print(
                    f"[dim]{time.strftime('%H:%M:%S')}[/dim] {line}", highlight=False
                )
                live.update(_panel(started))

            try:
                with registry.listening(listener):
                    yield
            finally:
                live.update(_panel(started))
    else:

        def printer(line: str) -> None:
            print(f"[{time.monotonic() - started:7.1f}s] {line}", file=sys.stderr, flush=True)

        with registry.listening(printer):
            yield
