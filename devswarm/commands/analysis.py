"""devswarm CLI commands: analysis — SQL on the store, the run report, Parquet export, and the
import of Prefect's run history into DuckDB."""

from __future__ import annotations

import csv
import json
import sys
import time
from collections.abc import Callable
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any

import typer

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
    from devswarm.cli import _fail

    if as_csv and as_json:
        _fail("--csv and --json exclude each other")
    path = _db(db)
    try:
        cols, rows = run_sql(path, query)
    except UserError as exc:
        _fail(str(exc))
    except Exception as exc:  # DuckDB's own parse/bind errors are the user's to fix
        _fail(str(exc).splitlines()[0])
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
    from devswarm.cli import _fail
    from devswarm.report.report import load_report, render_html, report_lines
    from devswarm.store.warehouse import open_readonly

    try:
        with open_readonly(_db(db)) as store:
            the_report = load_report(store, run)
        if html is not None:
            html.parent.mkdir(parents=True, exist_ok=True)
            html.write_text(render_html(the_report), encoding="utf-8")
    except UserError as exc:
        _fail(str(exc))
    except OSError as exc:
        _fail(f"cannot write {html}: {exc.strerror or exc}")
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
    from devswarm.cli import _fail
    from devswarm.store.warehouse import open_readonly

    try:
        with open_readonly(_db(db)) as store:
            counts = store.export_parquet(parquet)
    except UserError as exc:
        _fail(str(exc))
    except OSError as exc:
        _fail(f"cannot write to {parquet}: {exc.strerror or exc}")
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
    from devswarm.cli import _fail, _quiet_prefect

    _quiet_prefect()
    try:
        counts = import_history(_db(db), run, wait=wait)
    except UserError as exc:
        _fail(str(exc))
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


# --- Prefect history


def import_history(
    db: Path, run_id: str | None = None, *, wait: float = 60.0, flow_run_id: str | None = None
) -> dict[str, Any]:
    """Import the Prefect flow and task runs of one run (the latest if None) into the store.

    Waits up to ``wait`` seconds for their states to be final, then upserts them (idempotent:
    importing again updates the rows) and joins them to our agents. Returns counts.
    """
    from devswarm.history import flow_run_record, task_run_record
    from devswarm.report.report import latest_run
    from devswarm.store.warehouse import open_readonly

    try:
        with open_readonly(db) as store:
            run_id = run_id or latest_run(store)
            rows = store.query("SELECT flow_run_id FROM runs WHERE run_id = ?", [run_id])[1]
    except UserError:
        if run_id is None:
            raise
        rows = []  # the store may not have the run yet: Prefect is asked by its name
    if not rows and flow_run_id is None:
        raise UserError(f"no run {run_id!r} in the store")
    roots = {r for r in [flow_run_id, *(row[0] for row in rows)] if r}
    flow_runs, task_runs, flow_names, not_final = fetch_history(run_id, roots, wait=wait)
    if not flow_runs:
        raise UserError(f"Prefect has no flow runs of run {run_id!r} (is PREFECT_API_URL right?)")
    parents = {str(t["id"]): t.get("flow_run_id") for t in task_runs}
    subflows = {
        str(f["parent_task_run_id"]): f["id"] for f in flow_runs if f.get("parent_task_run_id")
    }
    records = [
        flow_run_record(
            f,
            flow_names.get(str(f.get("flow_id")), ""),
            run_id,
            parents.get(str(f.get("parent_task_run_id"))),
        )
        for f in flow_runs
    ] + [task_run_record(t, run_id, subflows.get(str(t["id"]))) for t in task_runs]
    joined = _write_history(db, run_id, records)
    return {
        "run_id": run_id,
        "flow_runs": len(flow_runs),
        "task_runs": len(task_runs),
        "joined_task_runs": joined,
        "not_final": not_final,
    }


def _write_history(db: Path, run_id: str, records: list[dict], timeout: float = 30.0) -> int:
    """Upsert into the warehouse, waiting while another process holds it."""
    from devswarm.store.store import open_writer

    with open_writer(db, timeout=timeout) as store:
        store.add_many(records, source="Prefect history")
        store.link_history(run_id)
        return store.query(
            "SELECT count(*) FROM prefect_task_runs WHERE run_id = ? AND agent_id IN"
            " (SELECT agent_id FROM agents)",
            [run_id],
        )[1][0][0]


def _paged(read: Callable[..., list], **kwargs: Any) -> list:
    """Every object a Prefect read_* call returns, 200 a page."""
    out: list = []
    while True:
        page = read(limit=200, offset=len(out), **kwargs)
        out.extend(page)
        if len(page) < 200:
            return out


def fetch_history(
    run_id: str, roots: set[str], *, wait: float
) -> tuple[list[dict], list[dict], dict[str, str], int]:
    """Read a run's flow runs (every ``swarm · <run id>`` root, resumed ones too, and all their
    descendants) and their task runs from Prefect's API, waiting up to ``wait`` seconds for
    every state to be final. Returns (flow runs, task runs, flow names by id, runs not final).
    """
    from uuid import UUID

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterId,
        FlowRunFilterName,
        FlowRunFilterParentFlowRunId,
    )

    with get_client(sync_client=True) as client:
        named = _paged(
            client.read_flow_runs,
            flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[f"swarm · {run_id}"])),
        )
        ids = {r.id for r in named} | {UUID(str(r)) for r in roots}
        frontier = list(ids)
        while frontier:
            children = _paged(
                client.read_flow_runs,
                flow_run_filter=FlowRunFilter(
                    parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=frontier)
                ),
            )
            frontier = [c.id for c in children if c.id not in ids]
            ids.update(frontier)
        if not ids:
            return [], [], {}, 0
        deadline = time.monotonic() + wait
        while True:
            by_id = FlowRunFilter(id=FlowRunFilterId(any_=list(ids)))
            flows = _paged(client.read_flow_runs, flow_run_filter=by_id)
            tasks = _paged(client.read_task_runs, flow_run_filter=by_id)
            not_final = sum(
                1 for r in [*flows, *tasks] if r.state is None or not r.state.is_final()
            )
            if not not_final or time.monotonic() >= deadline:
                break
            time.sleep(0.5)
        names = {str(fid): client.read_flow(fid).name for fid in {f.flow_id for f in flows}}
    return (
        [f.model_dump(exclude={"state"}) for f in flows],
        [t.model_dump(exclude={"state", "task_inputs"}) for t in tasks],
        names,
        not_final,
    )
