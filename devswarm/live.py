"""What a person watching a run sees: a live panel on a terminal, one line per event elsewhere."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.live import Live
from rich.table import Table

from devswarm.run import registry

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
        "sandbox",
        "tip",
        "elapsed",
    ):
        table.add_column(col)
    for run in registry.active_runs():
        b = run.progress.board()
        _last_rows[run.run_id] = [
            run.run_id,
            str(b["planning"]),
            f"{b['working']} / {b['pending']} / {b['landed']} / {b['failed']} / {b['skipped']}",
            f"{run.ledger.tokens:,}",
            f"{run.ledger.cost:.4f}",
            str(b["conflicts"]),
            # Turned off, it is what the user should not miss: in capitals, in red.
            "on" if run.config.sandbox else "[bold red]OFF[/bold red]",
            run.progress.tip,
            f"{time.monotonic() - started:.0f} s",
        ]
    for row in _last_rows.values():
        table.add_row(*row)
    if not _last_rows:
        table.add_row(
            "(starting Prefect)", "", "", "", "", "", "", "", f"{time.monotonic() - started:.0f} s"
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
