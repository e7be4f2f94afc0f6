"""The file tools under hostile files (#14): enormous lines, huge files, hard links out."""

from __future__ import annotations

import errno
import os
import stat
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

from devswarm.tools.files import EDIT_CAP, READ_CAP, replace_file
from devswarm.tools.specs import ToolResult
from devswarm.tools.toolbox import Toolbox

T = TypeVar("T")
MB = 1 << 20


@pytest.fixture
def root(tmp_path) -> Path:
    path = tmp_path / "root"
    path.mkdir()
    return path


@pytest.fixture
def tb(root) -> Toolbox:
    return Toolbox(root, sandbox=False)


def ok(result: ToolResult) -> str:
    assert result.error_type is None, result.output
    return result.output


def peak_bytes(work: Callable[[], T]) -> tuple[T, int]:
    """What `work` returns, and the most memory Python allocated while it ran."""
    tracemalloc.start()
    try:
        answer = work()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return answer, peak


@pytest.fixture
def enormous_line(root) -> tuple[Path, int]:
    """min.js: a short line, a 100 MB line, a last line; removed after the test (pytest keeps
    the tmp folders of recent runs)."""
    path, size = root / "min.js", 100 * MB
    with open(path, "wb") as f:
        f.write(b"// header\n")
        for _ in range(size // MB):
            f.write(b"x" * MB)
        f.write(b"\nend\n")
    yield path, size
    path.unlink()


def test_read_file_of_a_100_mb_line_reads_it_in_bounded_pieces(tb, enormous_line):
    _, size = enormous_line
    out, peak = peak_bytes(lambda: ok(tb.call("read_file", {"path": "min.js"})))
    assert (
        out
        == "min.js (lines 1-1 of 3)\n// header\n[cut at 50000 characters; read on with start_line=2]\n"
    )
    assert peak < 4 * MB, peak

    out, peak = peak_bytes(lambda: ok(tb.call("read_file", {"path": "min.js", "start_line": 2})))
    header, text, note = out.splitlines()
    assert header == "min.js (lines 2-2 of 3)"
    assert text == "x" * READ_CAP
    assert note == f"[line 2 is {size + 1} characters long; only its start is shown]"
    assert peak < 4 * MB, peak

    out = ok(tb.call("read_file", {"path": "min.js", "start_line": 3}))
    assert out == "min.js (lines 3-3 of 3)\nend\n"


def test_read_file_counts_characters_of_a_long_line_not_bytes(tb, root):
    """A long line of multi-byte characters (and a broken one at its end) is measured and cut
    in characters, as when it was decoded whole."""
    line = "é" * (3 * READ_CAP) + "€"
    (root / "wide.txt").write_bytes(line.encode() + b"\xe2\x82")  # a cut-off '€' at the end
    out = ok(tb.call("read_file", {"path": "wide.txt"}))
    header, text, note = out.splitlines()
    assert header == "wide.txt (lines 1-1 of 1)"
    assert text == "é" * READ_CAP
    assert note == f"[line 1 is {len(line) + 1} characters long; only its start is shown]"


@pytest.mark.parametrize(
    "content",
    ["a\nbb\n\nccc\r\nd", "one\n", "x\n\n\n", "no newline", "é\nü\n" * 5],
    ids=["last-line-open", "one-line", "empty-lines", "no-newline", "utf8"],
)
def test_read_file_ranges_and_counts_agree_with_splitlines(tb, root, monkeypatch, content):
    """Lines are skipped and counted in chunks: with chunks of 3 bytes, newlines fall on every
    chunk edge, and each range still shows exactly its lines with the file's line count."""
    monkeypatch.setattr("devswarm.tools.lines.COUNT_CHUNK", 3)
    (root / "f.txt").write_bytes(content.encode())
    expected = content.splitlines(keepends=True)
    n = len(expected)
    for start in range(1, n + 1):
        for end in range(start, n + 2):
            args = {"path": "f.txt", "start_line": start, "end_line": end}
            out = ok(tb.call("read_file", args))
            shown = expected[start - 1 : end]
            last = start - 1 + len(shown)
            text = "".join(shown)
            assert out == f"f.txt (lines {start}-{last} of {n})\n{text}".rstrip("\n") + "\n"
    past = tb.call("read_file", {"path": "f.txt", "start_line": n + 1})
    assert past.error_type == "invalid_arguments" and f"({n} lines)" in past.output


def test_edit_file_refuses_a_file_over_the_cap_with_a_recoverable_error(tb, root):
    (root / "at_cap.txt").write_bytes(b"old\n" + b"x" * (EDIT_CAP - 4))
    (root / "over_cap.txt").write_bytes(b"old\n" + b"x" * (EDIT_CAP - 3))
    ok(tb.call("edit_file", {"path": "at_cap.txt", "old": "old", "new": "new"}))
    assert (root / "at_cap.txt").read_bytes()[:4] == b"new\n"

    result = tb.call("edit_file", {"path": "over_cap.txt", "old": "old", "new": "new"})
    assert result.error_type == "file_too_large"
    assert f"{EDIT_CAP + 1:,} bytes" in result.output and "run" in result.output
    assert (root / "over_cap.txt").read_bytes()[:4] == b"old\n"


@pytest.mark.parametrize("tool", ["write_file", "edit_file"])
def test_a_hard_link_to_a_file_outside_is_replaced_not_written_through(tb, root, tmp_path, tool):
    outside = tmp_path / "outside.txt"
    outside.write_text("secret = 1\n")
    os.link(outside, root / "linked.txt")
    args = {"path": "linked.txt"}
    args |= {"content": "mine\n"} if tool == "write_file" else {"old": "1", "new": "2"}
    ok(tb.call(tool, args))
    assert outside.read_text() == "secret = 1\n"
    assert (root / "linked.txt").read_text() == (
        "mine\n" if tool == "write_file" else "secret = 2\n"
    )
    assert os.stat(root / "linked.txt").st_nlink == 1
    assert sorted(p.name for p in root.iterdir()) == ["linked.txt"]  # no temporary file left


def test_writes_keep_the_mode_of_an_existing_file_and_new_files_follow_the_umask(tb, root):
    script = root / "run.sh"
    script.write_text("echo hi\n")
    script.chmod(0o750)
    ok(tb.call("edit_file", {"path": "run.sh", "old": "hi", "new": "there"}))
    ok(tb.call("write_file", {"path": "run.sh", "content": "echo again\n"}))
    assert stat.S_IMODE(script.stat().st_mode) == 0o750
    ok(tb.call("write_file", {"path": "new.txt", "content": "x"}))
    (root / "by-python.txt").write_text("x")  # 0o666 less the umask
    assert (root / "new.txt").stat().st_mode == (root / "by-python.txt").stat().st_mode


def test_replace_file_refuses_a_symlink_planted_at_the_target(root, tmp_path):
    """The tools resolve symlinks first; one appearing at the resolved path since is refused,
    not replaced and not followed."""
    outside = tmp_path / "outside.txt"
    outside.write_text("keep")
    (root / "planted").symlink_to(outside)
    with pytest.raises(OSError) as refused:
        replace_file(root / "planted", b"pwned")
    assert refused.value.errno == errno.ELOOP
    assert outside.read_text() == "keep" and (root / "planted").is_symlink()
    assert sorted(p.name for p in root.iterdir()) == ["planted"]
