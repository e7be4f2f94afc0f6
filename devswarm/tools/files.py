"""The file tools: list_files, read_file, write_file, edit_file.

Each handler takes the Toolbox and its validated arguments; its docstring is the description
the model reads (see specs.py).
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from devswarm.tools.globs import glob_under
from devswarm.tools.lines import decode, lines, skip_lines
from devswarm.tools.paths import relative, resolve_existing, resolve_inside
from devswarm.tools.specs import (
    EditFileArgs,
    ListFilesArgs,
    ReadFileArgs,
    ToolError,
    WriteFileArgs,
)

if TYPE_CHECKING:
    from devswarm.tools.toolbox import Toolbox

MAX_LISTED = 500  # list_files entries
READ_CAP = 50_000  # read_file characters
BINARY_SNIFF = 8192  # a NUL byte in this many leading bytes means binary, as git decides
# read_file reads a line in pieces of this many bytes: a line longer than one piece has more
# than READ_CAP characters (a character, or a replaced bad byte sequence, is at most 4 bytes)
LINE_PIECE = 4 * READ_CAP + 4
EDIT_CAP = 2 << 20  # edit_file bytes: the file, its text and the new text are all in memory


def text_file(root: Path, path: str) -> Path:
    """A regular text file inside root, or the right ToolError."""
    target = resolve_existing(root, path)
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


def replace_file(target: Path, data: bytes) -> None:
    """Write `data` to `target` as a new file in the same folder, renamed over it: a hard link
    at `target` (perhaps to a file outside the root) is replaced, never written through, and
    no reader sees half a file. An existing file keeps its mode; a new one gets 0o666 less the
    umask. A symlink at `target` is refused (OSError ELOOP): resolve_inside already resolved
    symlinks, so one is there only if planted since."""
    try:
        st: os.stat_result | None = os.lstat(target)
    except FileNotFoundError:
        st = None
    if st is not None and stat.S_ISLNK(st.st_mode):
        raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), os.fspath(target))
    # O_EXCL | O_NOFOLLOW: the temporary name is new, whatever an agent's command put there
    temp = target.with_name(f".devswarm-{secrets.token_hex(8)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(temp, flags, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            if st is not None:
                os.fchmod(f.fileno(), stat.S_IMODE(st.st_mode))
            f.write(data)
        os.replace(temp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise


# -- the tools (docstrings are the descriptions the model reads) ---------------------------


def list_files(box: Toolbox, a: ListFilesArgs) -> str:
    """List the files under a folder, as paths relative to the repository root, sorted.
    Files ignored by git (.gitignore) are left out. Use `pattern` to narrow the list:
    '*.py' matches a file name at any depth, 'src/**/*.ts' a path under the folder.
    At most 500 paths are shown."""
    target = resolve_existing(box.root, a.path)
    base = relative(box.real_root, target)
    wanted = glob_under(base, a.pattern)
    files = [rel for rel in box.listing.files_under(target) if wanted(rel)]
    if not files:
        return f"no files match {a.pattern!r} under {base}"
    shown = "\n".join(files[:MAX_LISTED])
    if len(files) > MAX_LISTED:
        shown += f"\n... {len(files) - MAX_LISTED} more; narrow the pattern or the path"
    return shown


def read_file(box: Toolbox, a: ReadFileArgs) -> str:
    """Read a text file, or a range of its lines. The first line of the answer says which
    lines are shown and how many the file has; the file's text follows unchanged (no line
    numbers added). About 50,000 characters at most per call: read long files in parts
    with start_line and end_line."""
    if a.end_line is not None and a.end_line < a.start_line:
        raise ToolError(
            f"end_line ({a.end_line}) is before start_line ({a.start_line})",
            "invalid_arguments",
        )
    target = text_file(box.root, a.path)
    rel = relative(box.real_root, target)
    shown: list[str] = []
    size = 0
    last = a.start_line - 1  # last line shown
    cut_note = ""
    with open(target, "rb") as f:
        total = skip_lines(f, a.start_line - 1)
        pieces = lines(f, LINE_PIECE)
        while a.end_line is None or total < a.end_line:
            if (next_line := next(pieces, None)) is None:
                break
            total += 1
            line, length = decode(*next_line)  # reads the whole line: f is at the next one
            if size + length > READ_CAP:
                if not shown:  # one enormous line: show its start
                    shown.append(line[:READ_CAP] + "\n")
                    last = total
                    cut_note = (
                        f"[line {total} is {length} characters long; only its start is shown]"
                    )
                else:
                    cut_note = f"[cut at {READ_CAP} characters; read on with start_line={total}]"
                break
            shown.append(line)  # whole: a line kept only in part is longer than READ_CAP
            size += length
            last = total
        total += skip_lines(f, sys.maxsize)  # the header says how many lines the file has
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


def write_file(box: Toolbox, a: WriteFileArgs) -> str:
    """Create a file, or replace a file's whole content. Missing parent folders are
    created. For a small change to an existing file, edit_file is cheaper and safer."""
    target = resolve_inside(box.root, a.path)
    if target.is_dir():
        raise ToolError(f"{a.path} is a folder", "not_a_file")
    existed = os.path.lexists(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise ToolError(f"{a.path}: a parent of this path is a file", "not_a_file") from None
    data = a.content.encode("utf-8", errors="replace")
    replace_file(target, data)
    return f"wrote {len(data)} bytes to {relative(box.real_root, target)}" + (
        "" if existed else " (new file)"
    )


def edit_file(box: Toolbox, a: EditFileArgs) -> str:
    """Replace one exact piece of text in a file: `old` must occur exactly once, with the
    same whitespace and indentation as in the file (read the file first). To change
    several places, call edit_file once per place; to delete, pass new=''."""
    if not a.old:
        raise ToolError(
            "old is empty; give the exact text to replace (write_file creates a file)",
            "invalid_arguments",
        )
    target = text_file(box.root, a.path)
    rel = relative(box.real_root, target)
    # surrogateescape: bytes that aren't UTF-8 elsewhere in the file are written back as-is
    text = _read_for_edit(target, rel).decode("utf-8", errors="surrogateescape")
    count = text.count(a.old)
    if count == 0:
        raise ToolError(_not_found_hint(rel, text, a.old), "not_found")
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
    replace_file(target, text.replace(a.old, new, 1).encode("utf-8", "surrogateescape"))
    return (
        f"edited {rel} at line {line}: replaced {a.old.count(chr(10)) + 1} line(s) "
        f"with {a.new.count(chr(10)) + 1} line(s)"
    )


def _read_for_edit(target: Path, rel: str) -> bytes:
    """The file's bytes, or a ToolError if it is larger than EDIT_CAP (at most EDIT_CAP + 1
    bytes are read, so a file that grows meanwhile can't make it read more)."""
    with open(target, "rb") as f:
        data = f.read(EDIT_CAP + 1)
        if len(data) > EDIT_CAP:
            size = max(os.fstat(f.fileno()).st_size, len(data))
            raise ToolError(
                f"{rel} is {size:,} bytes; edit_file changes files of at most "
                f"{EDIT_CAP:,} bytes (2 MB). Change it with run (e.g. a sed or python command), "
                "or edit the source it is generated from",
                "file_too_large",
            )
    return data


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
