"""The tools a model sees: list, read, write, edit, search, run, finish.

`Toolbox.call` never raises for a model's mistake: unknown tools, bad JSON, bad arguments,
refused paths and timed out commands all come back as a `ToolResult` with an `error_type` the
agent loop can record and the model can read and recover from. The tools' handlers live by
responsibility (files.py, search.py; run and finish here) and every path they touch goes
through `resolve_inside` (paths.py).
"""

from __future__ import annotations

import copy
import functools
import json
import os
import signal
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from pydantic import BaseModel, ValidationError

from devswarm.errors import UserError
from devswarm.sandbox.command import ResourceLimits, run_command
from devswarm.sandbox.env import command_env
from devswarm.tools import files, search
from devswarm.tools.listing import Listing
from devswarm.tools.specs import (
    EditFileArgs,
    FinishArgs,
    ListFilesArgs,
    ReadFileArgs,
    RunArgs,
    SearchArgs,
    Tool,
    ToolError,
    ToolResult,
    WriteFileArgs,
    tool_spec,
)

__all__ = ["Toolbox", "ToolResult"]


class Toolbox:
    """The tools of one agent, confined to `root` (a worktree, or the clone a planner reads)."""

    def __init__(
        self,
        root: Path,
        *,
        read_only: bool = False,
        command_timeout: float = 120,
        output_limit: int = 20_000,
        env: Mapping[str, str] | None = None,
        sandbox: bool = True,
        limits: ResourceLimits | None = None,
        secrets: Iterable[str] = (),
        hidden: Sequence[Path] = (),
    ) -> None:
        """`env` is the commands' environment as command_env() makes it (a run's Run.env(),
        with the user's --pass-env names), used as it is; without one, command_env() of
        os.environ without any variable whose value contains one of `secrets` (pass the model
        API key). `hidden` paths look empty to commands run under bubblewrap (pass Run.hidden:
        the data and server folders)."""
        self.root = Path(root)
        if not self.root.is_dir():
            raise UserError(f"toolbox root is not a folder: {root}")
        self.real_root = os.path.realpath(self.root)
        self.read_only = read_only
        self.command_timeout = command_timeout
        self.output_limit = output_limit
        # Filtered once, where it is made: a second filter here dropped the --pass-env names.
        self.env = command_env(secrets=secrets) if env is None else dict(env)
        self.sandbox = sandbox
        self.limits = limits
        self.hidden = tuple(hidden)
        self.pcre = True  # search uses git grep -P until git says it was built without PCRE
        self.listing = Listing(self.real_root, self.env)

    def forget(self) -> None:
        """Drop what the toolbox remembers of the files: call it when something other than
        this toolbox's tools may have changed them (a check run, a rebase between turns)."""
        self.listing.forget()

    def tool_names(self) -> list[str]:
        """Names of the tools this agent may call."""
        return [n for n, t in _TOOLS.items() if not (self.read_only and t.writes)]

    def specs(self) -> list[dict]:
        """The tools in the OpenAI `tools` request parameter format (a fresh copy)."""
        return copy.deepcopy(_specs(self.read_only))

    def call(self, name: str, arguments: str | dict) -> ToolResult:
        """Run tool `name` with the model's `arguments` (JSON text or a dict); never raises for
        the model's mistakes, which come back as a ToolResult with an error_type."""
        tool = _TOOLS.get(name)
        if tool is None:
            return ToolResult(
                output=f"unknown tool {name!r}; the tools are: {', '.join(self.tool_names())}",
                error_type="unknown_tool",
            )
        if self.read_only and tool.writes:
            return ToolResult(
                output=f"{name} is not available to a read-only agent; "
                f"the tools are: {', '.join(self.tool_names())}",
                error_type="read_only",
            )
        if tool.writes:  # files may change, even when the tool fails halfway
            self.listing.forget()
        try:
            args = _parse(tool, arguments)
            result = tool.handler(self, args)
        except ToolError as exc:
            return ToolResult(output=str(exc), error_type=exc.error_type)
        except OSError as exc:  # the file system said no: tell the model, it may try otherwise
            reason = exc.strerror or str(exc)
            return ToolResult(output=f"{name} failed: {reason}", error_type="os_error")
        return result if isinstance(result, ToolResult) else ToolResult(output=result)

    # -- the tools that are not about files (docstrings are the descriptions the model reads)

    def _run(self, a: RunArgs) -> str:
        """Run a bash command in the repository root and see its exit code and output (stdout
        and stderr together; long output is cut to its start and end). Each command starts
        fresh: no shell state (cd, variables) carries over. No input can be typed. The command
        and everything it starts are killed at the timeout."""
        timeout = (
            self.command_timeout if a.timeout is None else min(a.timeout, self.command_timeout)
        )
        result = run_command(
            a.command,
            self.root,
            timeout=timeout,
            output_limit=self.output_limit,
            env=self.env,
            limits=self.limits,
            sandbox=self.sandbox,
            hidden=self.hidden,
        )
        if result.timed_out:
            raise ToolError(
                f"the command timed out after {timeout:g} s and was killed, with everything it "
                f"started. Its output until then:\n{result.output or '(none)'}\n"
                f"Run something quicker, split the work, or pass a timeout (at most "
                f"{self.command_timeout:g} s).",
                "timeout",
            )
        code = result.exit_code
        status = f"exit code {code}"
        if code is not None and code < 0:
            try:
                status += f" (killed by signal {signal.Signals(-code).name})"
            except ValueError:
                status += f" (killed by signal {-code})"
        return f"{status}\n{result.output}" if result.output else f"{status}\n(no output)"

    def _finish(self, a: FinishArgs) -> ToolResult:
        """Call this once when your task is done (or cannot be done). The summary is your
        handoff to your planner: what you changed and how you checked it, what you did not do,
        and any concerns. Your work is checked and landed after this; you can't act again."""
        return ToolResult(output="finished", finish=a.model_dump())


_TOOLS: dict[str, Tool] = {
    t.name: t
    for t in (
        Tool("list_files", ListFilesArgs, files.list_files, writes=False),
        Tool("read_file", ReadFileArgs, files.read_file, writes=False),
        Tool("write_file", WriteFileArgs, files.write_file, writes=True),
        Tool("edit_file", EditFileArgs, files.edit_file, writes=True),
        Tool("search", SearchArgs, search.search, writes=False),
        Tool("run", RunArgs, Toolbox._run, writes=True),
        Tool("finish", FinishArgs, Toolbox._finish, writes=True),
    )
}


@functools.cache
def _specs(read_only: bool) -> list[dict]:
    """Built once per process: pydantic's schema generation cost ~13 % of the swarm process's
    CPU when it ran for every model call (bench/scale.py under py-spy)."""
    return [tool_spec(tool) for tool in _TOOLS.values() if not (read_only and tool.writes)]


def _parse(tool: Tool, arguments: str | dict) -> BaseModel:
    """The model's arguments validated against the tool's model, or a ToolError that says what
    is wrong in words the model can act on."""
    if isinstance(arguments, str):
        text = arguments.strip() or "{}"  # some models send "" for a call without arguments
        try:
            parsed = json.loads(text)
            if isinstance(parsed, str):  # arguments encoded twice
                parsed = json.loads(parsed)
        except json.JSONDecodeError as exc:
            excerpt = text[max(0, exc.pos - 60) : exc.pos + 60]
            raise ToolError(
                f"the arguments of {tool.name} are not valid JSON ({exc.msg} at character "
                f"{exc.pos}, near {excerpt!r}); send one JSON object",
                "invalid_json",
            ) from None
    else:
        parsed = arguments
    if not isinstance(parsed, dict):
        raise ToolError(
            f"the arguments of {tool.name} must be a JSON object, not {type(parsed).__name__}",
            "invalid_arguments",
        )
    try:
        return tool.args.model_validate(parsed)
    except ValidationError as exc:
        problems = [
            f"{'.'.join(str(p) for p in e['loc']) or '(arguments)'}: {e['msg']}"
            for e in exc.errors()[:8]
        ]
        fields = ", ".join(
            f"{f}{'' if info.is_required() else '?'}" for f, info in tool.args.model_fields.items()
        )
        raise ToolError(
            f"invalid arguments for {tool.name}: {'; '.join(problems)} "
            f"(fields: {fields}; ? = optional)",
            "invalid_arguments",
        ) from None
