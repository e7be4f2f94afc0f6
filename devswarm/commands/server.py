"""devswarm CLI commands: `devswarm server start|stop|status` (a Prefect server on PostgreSQL,
and run reports served on loopback)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from devswarm.commands.common import fail
from devswarm.errors import UserError

server_app = typer.Typer(
    no_args_is_help=True,
    help="A Prefect server (UI included) on 127.0.0.1, backed by an embedded PostgreSQL.",
)

DirOption = Annotated[
    Path | None,
    typer.Option(
        "--dir",
        help="Server folder (default $DEVSWARM_HOME/server; as root /var/lib/devswarm/server)",
    ),
]


def register(app: typer.Typer) -> None:
    """Add this module's commands to the devswarm CLI."""
    app.add_typer(server_app, name="server")


def _root(dir: Path | None) -> Path:
    from devswarm.server import server_dir

    return (dir or server_dir()).expanduser().resolve()


@server_app.command()
def start(
    dir: DirOption = None,
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1")] = 4200,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for a healthy server")] = 120.0,
    report_port: Annotated[
        int | None,
        typer.Option(help="Port on 127.0.0.1 for run reports (default --port + 1 if free)"),
    ] = None,
) -> None:
    """Start PostgreSQL and the Prefect server in the background; return once it is healthy."""
    from devswarm.server import ServerPaths
    from devswarm.server import start as start_server

    root = _root(dir)
    try:
        state, opened = start_server(root, port=port, timeout=timeout, report_port=report_port)
    except UserError as exc:
        fail(str(exc))
    for folder in opened:
        typer.echo(f"note: made {folder} traversable (o+x) for PostgreSQL's system user", err=True)
    auth = ServerPaths(root).auth
    typer.echo(f"Prefect server up at {state.url} (PostgreSQL; ready in {state.start_seconds} s)")
    typer.echo(f"UI login: the contents of {auth} (readable by you only)")
    typer.echo(f"Run reports at {state.reports_url}<token> (the run summary links each one)")
    typer.echo("Point clients (devswarm run, prefect deploy, prefect worker) at it with:")
    typer.echo(f"  export PREFECT_API_URL={state.api_url}")
    typer.echo(f'  export PREFECT_API_AUTH_STRING="$(cat {auth})"')


@server_app.command()
def stop(dir: DirOption = None) -> None:
    """Stop the Prefect server and its PostgreSQL (from any process)."""
    from devswarm.server import stop as stop_server

    root = _root(dir)
    try:
        stopped = stop_server(root)
    except UserError as exc:
        fail(str(exc))
    typer.echo(f"stopped ({root})" if stopped else f"not running ({root})")


@server_app.command()
def status(dir: DirOption = None) -> None:
    """Say whether the server is up, and where. Exit 1 when it is down."""
    from devswarm.server import report_server_up
    from devswarm.server import status as server_status

    root = _root(dir)
    state = server_status(root)
    if state is None:
        typer.echo(f"down ({root})")
        raise typer.Exit(1)
    typer.echo(
        f"up: {state.url} (PREFECT_API_URL={state.api_url}; {state.database}; pid {state.pid}; "
        f"since {state.started_at})"
    )
    if report_server_up(state):
        typer.echo(f"reports: {state.reports_url}<token> (pid {state.report_server_pid})")
    else:
        typer.echo("reports: not served (devswarm server start serves them again)")
