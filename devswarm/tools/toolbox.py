"""The tools a model sees: list, read, write, edit, search, run, finish.

Every tool takes a pydantic arguments model (its JSON schema is what the model is shown) and
its handler's docstring is the tool's description, written for the model. `Toolbox.call` never
raises for a model's mistake: unknown tools, bad JSON, bad arguments, refused paths and timed
out commands all come back as a `ToolResult` with an `error_type` the agent loop can record and
the model can read and recover from.

Every path goes through `resolve_inside`, which keeps reads and writes inside the root: no
absolute paths, no `..` out, no symlinks out, nothing under `.git`.
"""

from __future__ import annotations

import copy
import functools
import inspect
import json
import os
import re
import signal
import stat
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from devswarm.errors import UserError
from devswarm.sandbox.command import ResourceLimits, run_command
from devswarm.sandbox.env import command_env

MAX_LISTED = 500  # list_files entries
MAX_REMEMBERED = 5_000  # paths of git's file list kept between tools (× agents at once)
MAX_MATCHES = 200  # search lines
MAX_MATCH_CHARS = 300  # one search line (minified files have 100 KB lines)
READ_CAP = 50_000  # read_file characters
BINARY_SNIFF = 8192  # a NUL byte in this many leading bytes means binary, as git decides


class ToolResult(BaseModel):
    """A tool's answer: the text the model reads, an error type for records, finish arguments."""

    output: str
    error_type: str | None = None
    finish: dict | None = None


class ToolError(Exception):
    """A mistake the model can recover from; becomes ToolResult(error_type=..., output=message)."""

    error_type = "tool_error"

    def __init__(self, message: str, error_type: str | None = None) -> None:
        super().__init__(message)
        if error_type is not None:
            self.error_type = error_type


class PathRefused(ToolError):
    """A path that would leave the root or touch `.git`."""

    error_type = "path_refused"


def _has_git_part(parts: Iterable[str]) -> bool:
    # casefold: on a case-insensitive file system `.GIT` is the same folder
    return any(p.casefold() == ".git" for p in parts)


def resolve_inside(root: Path, path: str | os.PathLike[str]) -> Path:
    """The real path of `path` (relative to `root`), or PathRefused if it is not inside root.

    Refuses absolute paths, anything with a `.git` component, and anything whose real path
    (symlinks resolved, including those in parents of a file not yet created) is outside root.
    """
    raw = os.fspath(path) or "."
    if "\0" in raw:
        raise PathRefused("path contains a NUL character")
    if os.path.isabs(raw):
        raise PathRefused(
            f"{raw}: absolute paths are refused; use a path relative to the repository root"
        )
    if _has_git_part(PurePosixPath(raw).parts):
        raise PathRefused(f"{raw}: .git is off limits (devswarm manages the repository's git data)")
    real_root = os.path.realpath(root)
    real = os.path.realpath(os.path.join(real_root, raw))
    if real != real_root and not real.startswith(real_root.rstrip(os.sep) + os.sep):
        lexical = os.path.normpath(os.path.join(real_root, raw))
        if lexical == real_root or lexical.startswith(real_root + os.sep):
            raise PathRefused(f"{raw}: a symlink leads outside the repository")
        raise PathRefused(f"{raw}: outside the repository")
    if _has_git_part(PurePosixPath(os.path.relpath(real, real_root)).parts):
        raise PathRefused(f"{raw}: leads into .git, which is off limits")
    return Path(real)


# -- globs ---------------------------------------------------------------------------------


def _glob_regex(pattern: str) -> str:
    """Translate a glob (`**`, `*`, `?`, `[...]`, `{a,b}`) to a regular expression."""
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
            continue
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            j = i + 1
            if j < n and pattern[j] in "!^":
                j += 1
            if j < n and pattern[j] == "]":
                j += 1
            j = pattern.find("]", j)
            if j < 0:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1 : j].replace("\\", "\\\\")
                if body[:1] in ("!", "^"):
                    body = "^" + body[1:]
                out.append(f"[{body}]")
                i = j
        elif c == "{" and (j := pattern.find("}", i)) > i:
            alternatives = pattern[i + 1 : j].split(",")
            out.append("(?:" + "|".join(_glob_regex(a) for a in alternatives) + ")")
            i = j
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


def glob_matcher(pattern: str) -> Callable[[str], bool]:
    """A test for relative paths: a pattern without `/` matches the file name at any depth
    (like .gitignore); one with `/` matches the whole path relative to the searched folder."""
    pattern = pattern.strip()
    while pattern.startswith("./"):
        pattern = pattern[2:]
    if not pattern:
        return lambda _rel: True
    regex = re.compile(_glob_regex(pattern) + r"\Z", re.DOTALL)
    if "/" in pattern:
        return lambda rel: regex.match(rel) is not None
    return lambda rel: regex.match(rel.rsplit("/", 1)[-1]) is not None


# -- argument models (their schemas are what the model sees) ---------------------------------


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid")  # → "additionalProperties": false


class ListFilesArgs(_Args):
    path: str = Field(".", description="Folder to list, relative to the repository root.")
    pattern: str = Field(
        "**/*",
        description="Glob for the files to list, e.g. '*.py' (a name at any depth), "
        "'src/**/*.ts' (a path under the folder), '*.{js,ts}'.",
    )


class ReadFileArgs(_Args):
    path: str = Field(description="File to read, relative to the repository root.")
    start_line: int = Field(1, ge=1, description="First line to show (1-based).")
    end_line: int | None = Field(None, ge=1, description="Last line to show; default: the end.")


class WriteFileArgs(_Args):
    path: str = Field(description="File to create or overwrite, relative to the repository root.")
    content: str = Field(description="The complete new content of the file.")


class EditFileArgs(_Args):
    path: str = Field(description="File to edit, relative to the repository root.")
    old: str = Field(
        description="Exact text to replace, including whitespace and indentation; it must "
        "occur exactly once in the file."
    )
    new: str = Field(description="The text to put in its place (may be empty to delete).")


class SearchArgs(_Args):
    pattern: str = Field(description="Regular expression (Perl-style) to search for.")
    path: str = Field(".", description="Folder or file to search, relative to the repository root.")
    glob: str | None = Field(
        None, description="Only search files matching this glob, e.g. '*.py' or 'tests/**/*.py'."
    )


class RunArgs(_Args):
    command: str = Field(min_length=1, description="A bash command, run in the repository root.")
    timeout: float | None = Field(
        None,
        gt=0,
        description="Seconds before the command is killed; default and maximum: the limit.",
    )


class FinishArgs(_Args):
    summary: str = Field(description="What you did: the changes, and how you checked them.")
    not_done: str = Field("", description="What you did not do or could not finish, and why.")
    concerns: str = Field(
        "", description="Risks, doubts or follow-up work your planner should know."
    )


@dataclass(frozen=True)
class _Tool:
    name: str
    args: type[_Args]
    handler: str  # Toolbox method name; its docstring is the description
    writes: bool  # hidden from read-only agents


_TOOLS: dict[str, _Tool] = {
    t.name: t
    for t in (
        _Tool("list_files", ListFilesArgs, "_list_files", writes=False),
        _Tool("read_file", ReadFileArgs, "_read_file", writes=False),
        _Tool("write_file", WriteFileArgs, "_write_file", writes=True),
        _Tool("edit_file", EditFileArgs, "_edit_file", writes=True),
        _Tool("search", SearchArgs, "_search", writes=False),
        _Tool("run", RunArgs, "_run", writes=True),
        _Tool("finish", FinishArgs, "_finish", writes=True),
    )
}


def _schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON schema without pydantic's titles (tokens the model doesn't need)."""
    schema = model.model_json_schema()
    schema.pop("title", None)
    for prop in schema.get("properties", {}).values():
        prop.pop("title", None)
    return schema


@functools.cache
def _specs(read_only: bool) -> list[dict]:
    """Built once per process: pydantic's schema generation cost ~13 % of the swarm process's
    CPU when it ran for every model call (bench/scale.py under py-spy)."""
    return [
        {
            "type": "function",
            "function": {
                "name": name,
                "description": _description(tool),
                "parameters": _schema(tool.args),
            },
        }
        for name, tool in _TOOLS.items()
        if not (read_only and tool.writes)
    ]


def _description(tool: _Tool) -> str:
    """The handler's docstring as one paragraph: the tool's description for the model."""
    return " ".join((inspect.getdoc(getattr(Toolbox, tool.handler)) or "").split())


# -- the toolbox -----------------------------------------------------------------------------


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
        use_bwrap: bool | None = None,
        limits: ResourceLimits | None = None,
        secrets: Iterable[str] = (),
        hidden: Sequence[Path] = (),
    ) -> None:
        """`env` (default os.environ) is scrubbed of credentials, and of any variable whose
        value contains one of `secrets` (pass the model API key), before a command sees it.
        `hidden` paths look empty to commands run under bubblewrap (pass the data folder)."""
        self.root = Path(root)
        if not self.root.is_dir():
            raise UserError(f"toolbox root is not a folder: {root}")
        self.real_root = os.path.realpath(self.root)
        self.read_only = read_only
        self.command_timeout = command_timeout
        self.output_limit = output_limit
        self.env = command_env(os.environ if env is None else env, secrets=secrets)
        self.use_bwrap = use_bwrap
        self.limits = limits
        self.hidden = tuple(hidden)
        self._pcre = True  # git grep -P until git says it was built without PCRE
        self._listing: list[str] | None = None  # git's view of the whole root, see _files_under
        self._listing_too_long = False

    def forget(self) -> None:
        """Drop what the toolbox remembers of the files: call it when something other than
        this toolbox's tools may have changed them (a check run, a rebase between turns)."""
        self._listing = None

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
            self._listing = None
        try:
            args = self._parse(tool, arguments)
            result = getattr(self, tool.handler)(args)
        except ToolError as exc:
            return ToolResult(output=str(exc), error_type=exc.error_type)
        except OSError as exc:  # the file system said no: tell the model, it may try otherwise
            reason = exc.strerror or str(exc)
            return ToolResult(output=f"{name} failed: {reason}", error_type="os_error")
        return result if isinstance(result, ToolResult) else ToolResult(output=result)

    def _parse(self, tool: _Tool, arguments: str | dict) -> _Args:
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
                f"{f}{'' if info.is_required() else '?'}"
                for f, info in tool.args.model_fields.items()
            )
            raise ToolError(
                f"invalid arguments for {tool.name}: {'; '.join(problems)} "
                f"(fields: {fields}; ? = optional)",
                "invalid_arguments",
            ) from None

    # -- helpers ------------------------------------------------------------------------------

    def _rel(self, real: Path | str) -> str:
        """A real path inside root as the model sees it: relative to root, '.' for root."""
        return os.path.relpath(real, self.real_root)

    def _existing(self, path: str) -> Path:
        target = resolve_inside(self.root, path)
        if not os.path.lexists(target):
            raise ToolError(f"{path}: no such file or folder", "not_found")
        return target

    def _text_file(self, path: str) -> Path:
        """A regular text file inside root, or the right ToolError."""
        target = self._existing(path)
        mode = os.stat(target).st_mode
        if stat.S_ISDIR(mode):
            raise ToolError(f"{path} is a folder; use list_files to see its files", "not_a_file")
        if not stat.S_ISREG(mode):  # a FIFO or device would block or never end
            raise ToolError(f"{path} is not a regular file", "not_a_file")
        with open(target, "rb") as f:
            if b"\0" in f.read(BINARY_SNIFF):
                size = os.fstat(f.fileno()).st_size
                raise ToolError(
                    f"{path} is a binary file ({size} bytes) and can't be shown as text",
                    "binary_file",
                )
        return target

    def _write(self, target: Path, data: bytes) -> None:
        # O_NOFOLLOW: resolve_inside already resolved symlinks; never follow one planted since.
        fd = os.open(
            target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666
        )
        with os.fdopen(fd, "wb") as f:
            f.write(data)

    def _git(self, *args: str) -> tuple[list[str], dict[str, str]]:
        """argv and environment for one of the toolbox's own read-only git commands."""
        env = {
            **self.env,
            "GIT_OPTIONAL_LOCKS": "0",  # never take the index lock an agent's command may need
            "GIT_LITERAL_PATHSPECS": "1",  # a path like app/[id]/page.tsx is not a glob
        }
        # fsmonitor would run a program named in the repository's config: never from here.
        return ["git", "-c", "core.fsmonitor=false", "-c", "core.quotePath=false", *args], env

    def _files_under(self, target: Path) -> list[str]:
        """Files under `target` (relative to root, sorted): git's view (tracked + untracked,
        ignored ones left out) in a git work tree, else a walk that skips .git.

        git's view of the whole root is kept until a writing tool runs or `forget()` (agents
        list and search again and again between edits; each `git ls-files` costs a process),
        unless it is longer than MAX_REMEMBERED paths."""
        rel = self._rel(target)
        files = self._listing if self._listing is not None else self._git_files(rel)
        if files is not None:
            if rel == ".":
                return files
            prefix = rel + "/"
            return [f for f in files if f == rel or f.startswith(prefix)]
        if target.is_file() or target.is_symlink():
            return [rel]
        found = []
        for dirpath, dirnames, filenames in os.walk(target):
            dirnames[:] = [d for d in dirnames if d.casefold() != ".git"]
            # os.walk doesn't follow a symlinked folder; like git, list the link itself
            links = [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]
            found += [self._rel(os.path.join(dirpath, f)) for f in (*filenames, *links)]
        return sorted(found)

    def _git_files(self, rel: str) -> list[str] | None:
        """git's view of the files under `rel`, sorted, or None outside a git work tree. The
        whole root's is remembered (see _files_under)."""
        argv, env = self._git("ls-files", "-z", "--cached", "--others", "--exclude-standard")
        whole = rel == "." or not self._listing_too_long
        if not whole:
            argv += ["--", rel]  # the whole list was too long to keep: ask for the folder
        proc = subprocess.run(
            argv, cwd=self.real_root, env=env, stdin=subprocess.DEVNULL, capture_output=True
        )
        if proc.returncode != 0:
            return None
        names = {n for n in proc.stdout.decode("utf-8", "surrogateescape").split("\0") if n}
        files = []
        for name in names:
            full = os.path.join(self.real_root, name)
            # --cached lists files deleted from the work tree; --others lists nested repos
            if os.path.islink(full) or os.path.isfile(full):
                files.append(name)
        files.sort()
        if whole:
            self._listing_too_long = len(files) > MAX_REMEMBERED
            if not self._listing_too_long:
                self._listing = files
        return files

    # -- the tools (docstrings are the descriptions the model reads) ------------------------

    def _list_files(self, a: ListFilesArgs) -> str:
        """List the files under a folder, as paths relative to the repository root, sorted.
        Files ignored by git (.gitignore) are left out. Use `pattern` to narrow the list:
        '*.py' matches a file name at any depth, 'src/**/*.ts' a path under the folder.
        At most 500 paths are shown."""
        target = self._existing(a.path)
        base = self._rel(target)
        matches = glob_matcher(a.pattern)
        files = []
        for rel in self._files_under(target):
            inner = rel if base == "." or rel == base else rel[len(base) + 1 :]
            if matches(inner if rel != base else os.path.basename(rel)):
                files.append(rel)
        if not files:
            return f"no files match {a.pattern!r} under {base}"
        shown = "\n".join(files[:MAX_LISTED])
        if len(files) > MAX_LISTED:
            shown += f"\n... {len(files) - MAX_LISTED} more; narrow the pattern or the path"
        return shown

    def _read_file(self, a: ReadFileArgs) -> str:
        """Read a text file, or a range of its lines. The first line of the answer says which
        lines are shown and how many the file has; the file's text follows unchanged (no line
        numbers added). About 50,000 characters at most per call: read long files in parts
        with start_line and end_line."""
        if a.end_line is not None and a.end_line < a.start_line:
            raise ToolError(
                f"end_line ({a.end_line}) is before start_line ({a.start_line})",
                "invalid_arguments",
            )
        target = self._text_file(a.path)
        rel = self._rel(target)
        shown: list[str] = []
        size = 0
        last = a.start_line - 1  # last line shown
        cut_note = ""
        total = 0
        with open(target, "rb") as f:
            for total, raw in enumerate(f, start=1):
                if total < a.start_line or (a.end_line is not None and total > a.end_line):
                    continue
                if cut_note:
                    continue  # keep counting lines for the header
                line = raw.decode("utf-8", errors="replace")
                if size + len(line) > READ_CAP:
                    if not shown:  # one enormous line: show its start
                        shown.append(line[:READ_CAP] + "\n")
                        last = total
                        cut_note = f"[line {total} is {len(line)} characters long; only its start is shown]"
                    else:
                        cut_note = (
                            f"[cut at {READ_CAP} characters; read on with start_line={total}]"
                        )
                    continue
                shown.append(line)
                size += len(line)
                last = total
        if total == 0:
            return f"{rel} (empty file)"
        if a.start_line > total:
            raise ToolError(
                f"start_line {a.start_line} is past the end of {rel} ({total} lines)",
                "invalid_arguments",
            )
        text = "".join(shown)
        if text and not text.endswith("\n"):
            text += "\n"
        header = f"{rel} (lines {a.start_line}-{last} of {total})"
        return f"{header}\n{text}{cut_note}".rstrip("\n") + "\n"

    def _write_file(self, a: WriteFileArgs) -> str:
        """Create a file, or replace a file's whole content. Missing parent folders are
        created. For a small change to an existing file, edit_file is cheaper and safer."""
        target = resolve_inside(self.root, a.path)
        if target.is_dir():
            raise ToolError(f"{a.path} is a folder", "not_a_file")
        existed = os.path.lexists(target)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise ToolError(f"{a.path}: a parent of this path is a file", "not_a_file") from None
        data = a.content.encode("utf-8", errors="replace")
        self._write(target, data)
        return f"wrote {len(data)} bytes to {self._rel(target)}" + (
            "" if existed else " (new file)"
        )

    def _edit_file(self, a: EditFileArgs) -> str:
        """Replace one exact piece of text in a file: `old` must occur exactly once, with the
        same whitespace and indentation as in the file (read the file first). To change
        several places, call edit_file once per place; to delete, pass new=''."""
        if not a.old:
            raise ToolError(
                "old is empty; give the exact text to replace (write_file creates a file)",
                "invalid_arguments",
            )
        target = self._text_file(a.path)
        rel = self._rel(target)
        # surrogateescape: bytes that aren't UTF-8 elsewhere in the file are written back as-is
        text = target.read_bytes().decode("utf-8", errors="surrogateescape")
        count = text.count(a.old)
        if count == 0:
            raise ToolError(self._not_found_hint(rel, text, a.old), "not_found")
        if count > 1:
            raise ToolError(
                f"old occurs {count} times in {rel}; include more surrounding lines so that it "
                "matches exactly once",
                "ambiguous",
            )
        at = text.index(a.old)
        line = text.count("\n", 0, at) + 1
        # a lone surrogate from the model's JSON can't be encoded: replace it, don't crash
        new = a.new.encode("utf-8", errors="replace").decode("utf-8")
        self._write(target, text.replace(a.old, new, 1).encode("utf-8", "surrogateescape"))
        return (
            f"edited {rel} at line {line}: replaced {a.old.count(chr(10)) + 1} line(s) "
            f"with {a.new.count(chr(10)) + 1} line(s)"
        )

    @staticmethod
    def _not_found_hint(rel: str, text: str, old: str) -> str:
        message = f"old was not found in {rel}; read_file it and copy the text exactly"
        if "\r\n" in text and "\r\n" not in old:
            message += " (this file uses CRLF line endings)"
        first = next((ln.strip() for ln in old.splitlines() if ln.strip()), "")
        if first:
            near = [i for i, ln in enumerate(text.splitlines(), 1) if ln.strip() == first][:5]
            if near:
                where = ", ".join(map(str, near))
                message += f"; its first line (ignoring indentation) is at line {where}"
        return message

    def _search(self, a: SearchArgs) -> str:
        """Search file contents for a regular expression (Perl-style, e.g. 'def \\w+_test').
        Answers 'path:line:text' for each matching line, at most 200; files ignored by git and
        binary files are skipped. Narrow with `path` (a folder or file) and `glob`."""
        target = self._existing(a.path)
        base = self._rel(target)
        matches = glob_matcher(a.glob) if a.glob else (lambda _rel: True)

        def wanted(rel: str) -> bool:
            inner = rel if base == "." or rel == base else rel[len(base) + 1 :]
            return matches(inner if rel != base else os.path.basename(rel))

        if self._in_git_work_tree():
            hits = self._git_grep(a.pattern, base)
        else:
            hits = self._py_grep(a.pattern, target)
        lines: list[str] = []
        more = 0
        for rel, number, text in hits:
            if not wanted(rel):
                continue
            if len(lines) >= MAX_MATCHES:
                more += 1  # keep counting so the note can say how many were left out
                continue
            if len(text) > MAX_MATCH_CHARS:
                text = text[:MAX_MATCH_CHARS] + " [...]"
            lines.append(f"{rel}:{number}:{text}")
        if not lines:
            where = f" in {a.glob}" if a.glob else ""
            return f"no matches for {a.pattern!r} under {base}{where}"
        if more:
            lines.append(f"... {more} more matching lines; narrow the pattern, path or glob")
        return "\n".join(lines)

    def _in_git_work_tree(self) -> bool:
        argv, env = self._git("rev-parse", "--is-inside-work-tree")
        proc = subprocess.run(
            argv, cwd=self.real_root, env=env, stdin=subprocess.DEVNULL, capture_output=True
        )
        return proc.returncode == 0 and proc.stdout.strip() == b"true"

    def _git_grep(self, pattern: str, base: str) -> Iterator[tuple[str, int, str]]:
        """Matching lines from `git grep`: tracked and untracked files, ignored ones skipped.
        Streams git's output, so a pattern matching every line costs no memory."""
        for dialect in ("-P", "-E") if self._pcre else ("-E",):
            argv, env = self._git("grep", "--untracked", "-I", "-n", "-z", "--no-color", dialect)
            argv += ["-e", pattern, "--", base]
            with (
                tempfile.TemporaryFile() as err,  # a file: a chatty stderr can't block git
                subprocess.Popen(
                    argv,
                    cwd=self.real_root,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=err,
                ) as proc,
            ):
                assert proc.stdout is not None
                for record in proc.stdout:
                    parts = record.rstrip(b"\n").split(b"\0", 2)
                    if len(parts) == 3:
                        name, number, text = (p.decode("utf-8", "replace") for p in parts)
                        yield name, int(number), text
                proc.wait()
                err.seek(0)
                message = err.read().decode("utf-8", "replace").strip()
            if proc.returncode in (0, 1):  # 1: no match
                return
            if dialect == "-P" and ("Perl" in message or "PCRE" in message):
                self._pcre = False  # this git was built without PCRE: use extended regexes
                continue
            last = message.splitlines()[-1] if message else f"git grep exit {proc.returncode}"
            raise ToolError(f"search failed: {last}", "invalid_arguments")

    def _py_grep(self, pattern: str, target: Path) -> Iterator[tuple[str, int, str]]:
        try:
            regex = re.compile(pattern)
        except re.error as exc:
            raise ToolError(f"invalid regular expression: {exc}", "invalid_arguments") from None
        return self._py_grep_files(regex, target)

    def _py_grep_files(
        self, regex: re.Pattern[str], target: Path
    ) -> Iterator[tuple[str, int, str]]:
        for rel in self._files_under(target):
            try:
                real = resolve_inside(self.root, rel)  # a symlink may lead out: skip it
                if not real.is_file():
                    continue
                with open(real, "rb") as f:
                    if b"\0" in f.read(BINARY_SNIFF):
                        continue
                    f.seek(0)
                    for number, raw in enumerate(f, start=1):
                        text = raw.decode("utf-8", "replace").rstrip("\r\n")
                        if regex.search(text):
                            yield rel, number, text
            except (PathRefused, OSError):
                continue

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
            sandbox=self.use_bwrap is not False,  # None: the default, sandboxed
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
