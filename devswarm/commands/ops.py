"""devswarm CLI commands for day-to-day operation: runs, logs, stop, resume."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError

from devswarm.commands.common import fail
from devswarm.config import SwarmConfig, default_home
from devswarm.errors import UserError
from devswarm.settings import describe

HomeOpt = Annotated[Path | None, typer.Option(help="Data folder (default $DEVSWARM_HOME)")]


def _run_dir(home: Path | None, run: str) -> Path:
    path = (home or default_home()) / "runs" / run
    # A run id names one folder: nothing that climbs out of runs/ ("../x", "a/b").
    if Path(run).name != run or run in (".", "..") or not (path / "config.json").is_file():
        raise UserError(f"no run {run} in {path.parent}")
    return path


def register(app: typer.Typer) -> None:
    """Add this module's commands to the devswarm CLI."""

    @app.command()
    def runs(home: HomeOpt = None) -> None:
        """List runs with their status and cost."""
        from rich.console import Console
        from rich.table import Table

        if home is not None and home.exists() and not home.is_dir():
            fail(f"--home {home} is a file, not a folder")
        root = (home or default_home()) / "runs"
        table = Table("run", "status", "cycles", "tasks landed", "model calls", "US$", "started")
        for cfg_file in sorted(root.glob("*/config.json")):
            try:
                cfg = read_run_config(cfg_file.parent)
            except UserError as exc:  # one broken run must not hide the others
                typer.echo(f"devswarm: note: skipped {exc}", err=True)
                continue
            table.add_row(*_run_row(cfg, cfg_file.parent.name))
        Console(width=160).print(table)

    @app.command()
    def logs(
        run: Annotated[str, typer.Argument(help="Run id")],
        agent: Annotated[
            str | None, typer.Option(help="Only agents whose id contains this")
        ] = None,
        follow: Annotated[
            bool, typer.Option("--follow", "-f", help="Keep printing new messages")
        ] = False,
        home: HomeOpt = None,
    ) -> None:
        """Show agents' transcripts (every message, as the model saw it)."""
        try:
            folder = _run_dir(home, run) / "transcripts"
        except UserError as exc:
            fail(str(exc))
        offsets: dict[Path, int] = {}
        while True:
            for path in sorted(folder.glob("*.jsonl")):
                if agent and agent.replace("/", "_") not in path.name and agent not in path.name:
                    continue
                with path.open("rb") as f:
                    done = offsets.get(path, 0)
                    f.seek(done)
                    for raw in f:
                        if not raw.endswith(b"\n"):  # being written: read it whole next time
                            break
                        done += len(raw)
                        try:
                            message = json.loads(raw)
                            if not isinstance(message, dict):
                                raise ValueError("not an object")
                        except ValueError:  # a line torn by a crash, or damaged since
                            typer.echo(f"devswarm: note: {path.name}: skipped an unreadable line",
                                       err=True)  # fmt: skip
                            continue
                        typer.echo(_format(message))
                    offsets[path] = done
            if not follow:
                return
            time.sleep(1)

    @app.command()
    def stop(run: Annotated[str, typer.Argument(help="Run id")], home: HomeOpt = None) -> None:
        """Drain a running swarm: no new workers; running ones stop at their next step."""
        try:
            folder = _run_dir(home, run)
        except UserError as exc:
            fail(str(exc))
        (folder / "STOP").write_text("stop requested\n")
        typer.echo(f"stop requested for {run}: it drains at the agents' next step")

    @app.command()
    def resume(run: Annotated[str, typer.Argument(help="Run id")], home: HomeOpt = None) -> None:
        """Continue a crashed or stopped run: landed tasks are kept, answered model calls replay free."""
        from devswarm.commands.common import execute, finish
        from devswarm.settings import api_key_from_env

        try:
            cfg = read_run_config(_run_dir(home, run))
            cfg.api_key = api_key_from_env()
            summary = execute(cfg, resume=True)
        except UserError as exc:
            fail(str(exc))
        finish(summary)


def read_run_config(folder: Path) -> SwarmConfig:
    """A run's config.json, or UserError naming the run and what is wrong with the file."""
    try:
        return SwarmConfig.model_validate_json((folder / "config.json").read_bytes())
    except (OSError, ValidationError) as exc:
        what = describe(exc) if isinstance(exc, ValidationError) else exc.strerror or str(exc)
        raise UserError(f"run {folder.name}: its config.json cannot be read: {what}") from None


def _run_row(cfg: SwarmConfig, name: str) -> list[str]:
    from devswarm.store.warehouse import open_readonly

    state = ["?"] * 5
    try:
        store = open_readonly(cfg.db_path)
        try:
            cols, rows = store.query(
                "SELECT r.status, r.cycles, (SELECT count(*) FROM tasks t WHERE t.run_id = r.run_id AND t.status = 'landed'),"
                " (SELECT count(*) FROM model_calls c WHERE c.run_id = r.run_id),"
                " (SELECT round(coalesce(sum(cost_usd), 0), 4) FROM model_calls c WHERE c.run_id = r.run_id), r.started_at"
                " FROM runs r WHERE r.run_id = ?",
                [name],
            )
        finally:
            store.close()
        if rows:
            state = [str(v) for v in rows[0]]
    except Exception:
        pass
    return [name, *state][:7] + [""] * max(0, 7 - len(state) - 1)


def _format(rec: dict) -> str:
    m = rec.get("message", {})
    role = m.get("role", "?")
    head = f"--- {rec.get('agent_id', '')} · {role}"
    parts = [head]
    if m.get("content"):
        parts.append(str(m["content"]))
    for call in m.get("tool_calls") or []:
        fn = call.get("function", {})
        parts.append(f"→ {fn.get('name')}({fn.get('arguments')})")
    return "\n".join(parts)
