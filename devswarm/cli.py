"""The devswarm command line. Bad input ends in one line on stderr and a non-zero exit.

The commands live in devswarm/commands/ (run, demo and model-server in run.py; runs, logs, stop,
resume in ops.py; sql, report, export, history in analysis.py; init in blocks.py; server in
server.py); this module builds the app and turns every error into one line: a usage mistake
(a bad or unknown option) exits 2, an interruption 130, and a bug of ours 3 with its traceback
in a private crash log.
"""

from __future__ import annotations

import os
import stat
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any

import typer
from typer._click import exceptions as click  # typer 0.29 ships its own click
from typer.core import TyperGroup

from devswarm.commands import analysis, blocks, ops, run, server
from devswarm.config import default_home
from devswarm.sandbox.redact import Redactor, process_secrets


class OneLineErrors(TyperGroup):
    """The app's command group: what click and typer would print as a usage box, or Python as
    a traceback, is one line on stderr instead."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
        except click.NoArgsIsHelpError as exc:  # `devswarm` alone: the help
            typer.echo(exc.ctx.get_help() if exc.ctx else exc.format_message())
            code = 2
        except click.UsageError as exc:  # a bad value, an unknown or missing option
            where = f" (see {exc.ctx.command_path} --help)" if exc.ctx else ""
            typer.echo(f"devswarm: {exc.format_message()}{where}", err=True)
            code = 2
        except click.ClickException as exc:
            typer.echo(f"devswarm: {exc.format_message()}", err=True)
            code = exc.exit_code
        except (typer.Abort, KeyboardInterrupt):
            typer.echo("devswarm: interrupted", err=True)
            code = 130
        except Exception as exc:  # a bug of ours: one line for the user, the traceback in a file
            redact = Redactor(process_secrets())
            path = crash_log(redact(traceback.format_exc()))
            line = f"internal error: {type(exc).__name__}: {exc}".splitlines()[0][:300]
            typer.echo(f"devswarm: {redact(line)} (traceback in {path})", err=True)
            code = 3
        # `code` is an exit code from typer.Exit, or None when a command returned normally.
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(
    cls=OneLineErrors,
    pretty_exceptions_enable=False,
    add_completion=False,
    no_args_is_help=True,
    help="Swarms of coding agents on one git repository.",
)
for _module in (run, analysis, blocks, ops, server):
    _module.register(app)


def crash_log(text: str) -> Path:
    """Write a traceback to a new file only this user can read, in a folder only this user can
    write (`<data folder>/crashes`, else a fresh private temporary folder): a fixed name in /tmp
    could be a link another user planted."""
    try:
        folder = default_home() / "crashes"
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = folder.lstat()
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o022:
            raise PermissionError(f"{folder} is not private")
    except OSError:
        folder = Path(tempfile.mkdtemp(prefix="devswarm-crash-"))  # 0700, unpredictable
    fd, name = tempfile.mkstemp(prefix="error-", suffix=".log", dir=folder)  # 0600
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return Path(name)


def main() -> None:
    """The `devswarm` console script."""
    app()


if __name__ == "__main__":
    main()
