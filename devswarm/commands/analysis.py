"""devswarm CLI commands: analysis — SQL on the store, the run report, Parquet export, and the
import of Prefect's run history into DuckDB."""

from __future__ import annotations

import csv
import json
import sys
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any

import typer

from devswarm.commands.common import fail, quiet_prefect
from devswarm.errors import UserError

DbOption = Annotated[Path | None, typer.Option(help="DuckDB file (default <home>/devswarm.duckdb)")]
RunOption = Annotated[str | None, typer.Option("--run", help="Run id (default: the latest run)")]


def _db(db: Path | None) -> Path:
    from devswarm.config import default_home

    return db or default_home() / "devswarm.duckdb"


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, timedelta):
        return value.total_seconds()
    return str(value)


def run_sql(db: Path, query: str) -> tuple[list[str], list[tuple]]:
    """Run one query on the store at ``db`` (with the runs not yet merged into it)."""
    from devswarm.store.warehouse import open_readonly

    with open_readonly(db) as store:
        return store.query(query)


def sql(
    query: Annotated[str, typer.Argument(help="SQL to run on the store")],
    db: DbOption = None,
    as_csv: Annotated[bool, typer.Option("--csv", help="Print CSV (with a header row)")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON array of objects")] = False,
) -> None:
    """Run SQL on the DuckDB store and print a table (or CSV, or JSON)."""

    if as_csv and as_json:
        fail("--csv and --json exclude each other")
    path = _db(db)
    try:
        cols, rows = run_sql(path, query)
    except UserError as exc:
        fail(str(exc))
    except Exception as exc:  # DuckDB's own parse/bind errors are the user's to fix
        fail(str(exc).splitlines()[0])
    if as_csv:
        out = csv.writer(sys.stdout, lineterminator="\n")
        out.writerow(cols)
        out.writerows(["" if v is None else v for v in row] for row in rows)
        return
    if as_json:
        records = [dict(zip(cols, row, strict=True)) for row in rows]
        typer.echo(json.dumps(records, default=_jsonable, ensure_ascii=False, indent=1))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(*cols)
    for row in rows:
        table.add_row(*["" if v is None else str(v) for v in row])
    Console(width=200).print(table)


def report(
    run: RunOption = None,
    html: Annotated[
        Path | None, typer.Option("--html", help="Also write a self-contained HTML report here")
    ] = None,
    db: DbOption = None,
) -> None:
    """Summarise a run: cost, who did what, outcomes, hot files, latency (and an HTML file)."""
    from devswarm.report.data import load_report
    from devswarm.report.html import render_html
    from devswarm.report.text import report_lines
    from devswarm.store.warehouse import open_readonly

    try:
        with open_readonly(_db(db)) as store:
            the_report = load_report(store, run)
        if html is not None:
            html.parent.mkdir(parents=True, exist_ok=True)
            html.write_text(render_html(the_report), encoding="utf-8")
    except UserError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"cannot write {html}: {exc.strerror or exc}")
    for line in report_lines(the_report):
        typer.echo(line)
    if html is not None:
        typer.echo(f"\nHTML report: {html}")


def export(
    parquet: Annotated[
        Path, typer.Option("--parquet", help="Folder for one Parquet file per table and view")
    ],
    db: DbOption = None,
) -> None:
    """Export every table (and view) to Parquet, for other tools."""
    from devswarm.store.warehouse import open_readonly

    try:
        with open_readonly(_db(db)) as store:
            counts = store.export_parquet(parquet)
    except UserError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"cannot write to {parquet}: {exc.strerror or exc}")
    for name, n in counts.items():
        typer.echo(f"{parquet / (name + '.parquet')}  {n} rows")


def history_import(
    run: RunOption = None,
    db: DbOption = None,
    wait: Annotated[
        float, typer.Option(help="Seconds to wait for the runs' Prefect states to be final")
    ] = 60.0,
) -> None:
    """Copy a run's Prefect flow and task runs into DuckDB (prefect_flow_runs, prefect_task_runs)."""
    quiet_prefect()  # before Prefect is imported
    from tasks.history import import_history

    try:
        counts = import_history(_db(db), run, wait=wait)
    except UserError as exc:
        fail(str(exc))
    line = (
        f"run {counts['run_id']}: {counts['flow_runs']} flow runs and {counts['task_runs']}"
        f" task runs imported ({counts['joined_task_runs']} task runs joined to agents)"
    )
    if counts["not_final"]:
        line += f"; {counts['not_final']} were not final yet (import again later)"
    typer.echo(line)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the devswarm CLI."""
    app.command()(sql)
    app.command()(report)
    app.command()(export)
    history = typer.Typer(no_args_is_help=True, help="Prefect's run history in DuckDB.")
    history.command("import")(history_import)
    app.add_typer(history, name="history")
