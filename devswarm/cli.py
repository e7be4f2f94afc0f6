"""The devswarm command line. Bad input ends in one line on stderr and a non-zero exit.

The commands live in devswarm/commands/ (run, demo and model-server in run.py; runs, logs, stop,
resume in ops.py; sql, report, export, history in analysis.py; init in blocks.py; server in
server.py); this module builds the app and turns a bug of ours into one line and a crash log.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from devswarm.commands import analysis, blocks, ops, run, server

app = typer.Typer(
    pretty_exceptions_enable=False,
    add_completion=False,
    no_args_is_help=True,
    help="Swarms of coding agents on one git repository.",
)
for _module in (run, analysis, blocks, ops, server):
    _module.register(app)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        typer.echo("devswarm: interrupted", err=True)
        sys.exit(130)
    except Exception as exc:  # a bug of ours: one line for the user, the traceback in a file
        import tempfile
        import traceback

        path = Path(tempfile.gettempdir()) / "devswarm-error.log"
        path.write_text(traceback.format_exc())
        typer.echo(
            f"devswarm: internal error: {type(exc).__name__}: {exc} (traceback in {path})", err=True
        )
        sys.exit(3)


if __name__ == "__main__":
    main()
