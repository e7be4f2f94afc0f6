"""The search tool: `git grep` in a git work tree (ignored and binary files skipped), a
Python grep over the listed files elsewhere."""

from __future__ import annotations

import re
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from devswarm.tools.files import BINARY_SNIFF
from devswarm.tools.globs import glob_under
from devswarm.tools.listing import Listing, read_only_git
from devswarm.tools.paths import PathRefused, relative, resolve_existing, resolve_inside
from devswarm.tools.specs import SearchArgs, ToolError

if TYPE_CHECKING:
    from devswarm.tools.toolbox import Toolbox

MAX_MATCHES = 200  # search lines
MAX_MATCH_CHARS = 300  # one search line (minified files have 100 KB lines)


def search(box: Toolbox, a: SearchArgs) -> str:
    """Search file contents for a regular expression (Perl-style, e.g. 'def \\w+_test').
    Answers 'path:line:text' for each matching line, at most 200; files ignored by git and
    binary files are skipped. Narrow with `path` (a folder or file) and `glob`."""
    target = resolve_existing(box.root, a.path)
    base = relative(box.real_root, target)
    wanted = glob_under(base, a.glob or "")
    if _in_git_work_tree(box.real_root, box.env):
        hits = _git_grep(box, a.pattern, base)
    else:
        hits = _py_grep(box.root, box.listing, a.pattern, target)
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


def _in_git_work_tree(real_root: str, env: Mapping[str, str]) -> bool:
    argv, git_env = read_only_git(env, "rev-parse", "--is-inside-work-tree")
    proc = subprocess.run(
        argv, cwd=real_root, env=git_env, stdin=subprocess.DEVNULL, capture_output=True
    )
    return proc.returncode == 0 and proc.stdout.strip() == b"true"


def _git_grep(box: Toolbox, pattern: str, base: str) -> Iterator[tuple[str, int, str]]:
    """Matching lines from `git grep`: tracked and untracked files, ignored ones skipped.
    Streams git's output, so a pattern matching every line costs no memory."""
    for dialect in ("-P", "-E") if box.pcre else ("-E",):
        argv, env = read_only_git(
            box.env, "grep", "--untracked", "-I", "-n", "-z", "--no-color", dialect
        )
        argv += ["-e", pattern, "--", base]
        with (
            tempfile.TemporaryFile() as err,  # a file: a chatty stderr can't block git
            subprocess.Popen(
                argv,
                cwd=box.real_root,
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
            box.pcre = False  # this git was built without PCRE: use extended regexes
            continue
        last = message.splitlines()[-1] if message else f"git grep exit {proc.returncode}"
        raise ToolError(f"search failed: {last}", "invalid_arguments")


def _py_grep(
    root: Path, listing: Listing, pattern: str, target: Path
) -> Iterator[tuple[str, int, str]]:
    try:
        regex = re.compile(pattern)
    except re.error as exc:
        raise ToolError(f"invalid regular expression: {exc}", "invalid_arguments") from None
    return _py_grep_files(root, listing, regex, target)


def _py_grep_files(
    root: Path, listing: Listing, regex: re.Pattern[str], target: Path
) -> Iterator[tuple[str, int, str]]:
    for rel in listing.files_under(target):
        try:
            real = resolve_inside(root, rel)  # a symlink may lead out: skip it
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
