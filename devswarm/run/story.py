"""What a run tells the people watching it, a line at a time: each agent's steps, checks and
landings, the judge's verdict, the swarm's cycle lines.

Plain `logging`, at INFO, on the loggers `devswarm.<role>` (planner, worker, judge, swarm): the
core stays Prefect-free. Prefect's edge (tasks/logs.py) sends the `devswarm` logger to the API
of the flow run a line is logged in, so each flow run's Logs tab tells its own story; the
terminal shows none of it (its handler stays at WARNING).

Every line is redacted (the run's secrets and the process's, in any of their encoded forms) and
cut short; tool calls show a short form of their arguments and never a file's contents. Volume
is bounded: at most PER_AGENT lines for one agent and PER_RUN for the run, then one note.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import Counter
from collections.abc import Iterable
from typing import Any

from devswarm.sandbox.redact import Redactor, process_secrets
from devswarm.tools.specs import ToolResult

PER_AGENT = 200  # a worker takes tens of steps; a runaway one is cut here
PER_RUN = 5_000  # a few hundred agents' worth: Prefect keeps every line in its database
WIDTH = 400  # characters in one line (a check's output tail may take TAIL)
TAIL = 1_500
# Arguments that hold a file's text (write_file, edit_file): shown as their length only.
FILE_TEXT = frozenset({"content", "old", "new"})
_ARG_WIDTH = 80


class Story:
    """The run's log lines: redacted, cut, and counted against the caps."""

    def __init__(
        self, secrets: Iterable[str] = (), *, per_agent: int = PER_AGENT, per_run: int = PER_RUN
    ) -> None:
        self._redact = Redactor(process_secrets(secrets))
        self.per_agent, self.per_run = per_agent, per_run
        self._lock = threading.Lock()
        self._lines: Counter[str] = Counter()
        self._total = 0

    def line(self, who: str | None, text: str, *, width: int = WIDTH) -> str | None:
        """The line to log for `who` (an agent id; None: the run itself, only the run's cap
        applies): `text` redacted and cut; a note instead once a cap is reached; None after."""
        with self._lock:
            self._total += 1
            if who is not None:
                self._lines[who] += 1
            mine, total = self._lines[who] if who is not None else 0, self._total
        caps = (
            (total, self.per_run, f"(this run's log stops here: {self.per_run} lines is the cap "
             "per run; the transcripts and DuckDB have everything)"),
            (mine, self.per_agent, f"(no more lines from {who}: {self.per_agent} lines is the cap "
             "per agent; its transcript has everything)"),
        )  # fmt: skip
        for count, cap, note in caps:
            if count > cap:
                return note if count == cap + 1 else None
        return self.redact(text, width)

    def redact(self, text: str, width: int = WIDTH) -> str:
        """`text` without the secrets, cut to `width` (not counted against the caps)."""
        text = self._redact(text)  # before the cut: a cut could split a secret
        return text if len(text) <= width else text[: width - 1] + "…"

    def tell(self, role: str, who: str | None, text: str, *, width: int = WIDTH) -> None:
        """Log one line of `who`'s story on `devswarm.<role>` (INFO), if the caps allow."""
        try:
            if (line := self.line(who, text, width=width)) is not None:
                logging.getLogger(f"devswarm.{role}").info(line)
        except Exception:  # telling the story must never stop the swarm
            pass

    def tool_step(
        self, role: str, who: str, step: int, name: str, arguments: str, result: ToolResult
    ) -> None:
        """One tool call as one line: its step, tool, a short form of the arguments, outcome."""
        self.tell(role, who, tool_step_line(step, name, arguments, result))


def tool_step_line(step: int, name: str, arguments: str, result: ToolResult) -> str:
    """`step 3: read_file path='calc.py' -> ok, 40 lines of output`: never a file's contents."""
    return f"step {step + 1}: {name} {short_arguments(arguments)} -> {outcome(name, result)}"


def short_arguments(arguments: str) -> str:
    """A tool call's arguments, short: file texts as their length, long strings cut."""
    try:
        args = json.loads(arguments) if arguments.strip() else {}
    except ValueError:
        return f"(unreadable arguments, {len(arguments)} chars)"
    if not isinstance(args, dict):
        return f"(arguments not an object, {len(arguments)} chars)"
    return " ".join(f"{k}={_short_value(k, v)}" for k, v in args.items())


def _short_value(key: str, value: Any) -> str:
    if isinstance(value, str) and key in FILE_TEXT:
        return f"<{len(value)} chars>"
    text = value if isinstance(value, str) else json.dumps(value)
    text = " ".join(text.split())  # one line
    if len(text) > _ARG_WIDTH:
        text = f"{text[: _ARG_WIDTH - 20]}… ({len(text)} chars)"
    return repr(text) if isinstance(value, str) else text


def outcome(name: str, result: ToolResult) -> str:
    """What a tool call came to, without what it read: an error's first line, a command's exit
    code, a count of lines for reads and searches."""
    first = result.output.strip().splitlines()[0] if result.output.strip() else ""
    if result.error_type:
        return f"{result.error_type}: {first[:160]}"
    if name in ("read_file", "search", "list_files"):  # what they read is the agent's only
        return f"ok, {len(result.output.splitlines())} lines of output"
    if name == "finish":
        return "finished"
    return first[:160] or "ok"
