"""A file's lines in bounded pieces: a 100 MB minified line is never in memory whole.

read_file shows at most a few thousand lines, but counts all of a file's lines for its header
and skips those before the first it shows; both go through chunks, not lines.
"""

from __future__ import annotations

import codecs
import os
from collections.abc import Iterator
from typing import BinaryIO

COUNT_CHUNK = 1 << 20  # bytes read at once while skipping or counting lines


def lines(f: BinaryIO, piece: int) -> Iterator[tuple[bytes, Iterator[bytes] | None]]:
    """Each line of `f` from where it is, as its first `piece` bytes and, for a longer line,
    an iterator over the rest in pieces of at most `piece` bytes (skipped if not read)."""
    while head := f.readline(piece):
        if len(head) < piece or head.endswith(b"\n"):
            yield head, None
            continue
        rest = _rest_of_line(f, piece)
        yield head, rest
        for _ in rest:  # what the reader left of the line
            pass


def _rest_of_line(f: BinaryIO, piece: int) -> Iterator[bytes]:
    while part := f.readline(piece):
        yield part
        if part.endswith(b"\n"):
            return


def decode(head: bytes, rest: Iterator[bytes] | None) -> tuple[str, int]:
    """A line from `lines` as text and its length in characters, as if decoded whole with
    bad bytes replaced; of a line in pieces only the start (its head) is kept, the rest is
    read and counted."""
    if rest is None:
        text = head.decode("utf-8", errors="replace")
        return text, len(text)
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    text = decoder.decode(head)
    length = len(text) + sum(len(decoder.decode(part)) for part in rest)
    return text, length + len(decoder.decode(b"", final=True))


def skip_lines(f: BinaryIO, n: int) -> int:
    """Move `f` past its next `n` lines, reading in chunks; answers how many lines it passed,
    fewer than `n` only at the end of the file (a last line without a newline counts)."""
    passed = 0
    partial = False  # bytes after the last newline read so far
    while passed < n and (chunk := f.read(COUNT_CHUNK)):
        newlines = chunk.count(b"\n")
        if passed + newlines >= n:
            at = -1
            for _ in range(n - passed):
                at = chunk.index(b"\n", at + 1)
            f.seek(at + 1 - len(chunk), os.SEEK_CUR)
            return n
        passed += newlines
        partial = not chunk.endswith(b"\n")
    return passed + partial
