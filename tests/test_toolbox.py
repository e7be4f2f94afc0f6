"""The agents' tools: each tool's answers and errors, confinement to the root, read-only mode."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from devswarm.errors import UserError
from devswarm.tools.files import MAX_LISTED
from devswarm.tools.globs import glob_matcher
from devswarm.tools.paths import PathRefused, resolve_inside
from devswarm.tools.search import MAX_MATCHES
from devswarm.tools.toolbox import Toolbox

WORKER_TOOLS = ["list_files", "read_file", "write_file", "edit_file", "search", "run", "finish"]
READ_TOOLS = ["list_files", "read_file", "search"]


def git(cwd: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
    )


@pytest.fixture
def repo(tmp_path) -> Path:
    """A git work tree: tracked files, an ignored file and folder, an untracked file."""
    root = tmp_path / "repo"
    (root / "src").mkdir(parents=True)
    (root / "tests").mkdir()
    (root / "src" / "calc.py").write_text("def add(a, b):\n    return a + b\n")
    (root / "tests" / "test_calc.py").write_text(
        "from src.calc import add\n\n\ndef test_add():\n    assert add(1, 2) == 3\n"
    )
    (root / "README.md").write_text("# calc\nAdds numbers 123.\n")
    (root / ".gitignore").write_text("*.log\nbuild/\n")
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "init")
    (root / "app.log").write_text("add in a log\n")
    (root / "build").mkdir()
    (root / "build" / "out.py").write_text("def add(): pass\n")
    (root / "notes.txt").write_text("untracked note about add\n")
    return root


@pytest.fixture
def tb(repo) -> Toolbox:
    return Toolbox(repo, command_timeout=10)


def ok(result) -> str:
    assert result.error_type is None, result.output
    return result.output


# -- specs -----------------------------------------------------------------------------------


def test_worker_specs_list_all_tools_with_strict_object_schemas(tb):
    specs = tb.specs()
    assert [s["function"]["name"] for s in specs] == WORKER_TOOLS
    for spec in specs:
        assert spec["type"] == "function"
        fn = spec["function"]
        assert len(fn["description"]) > 40 and "\n" not in fn["description"]
        params = fn["parameters"]
        assert params["type"] == "object"
        assert params["additionalProperties"] is False
        assert "title" not in params
    json.dumps(specs)  # goes into an HTTP request as is
    read = next(s for s in specs if s["function"]["name"] == "read_file")["function"]
    assert read["parameters"]["required"] == ["path"]


def test_read_only_specs_have_only_reading_tools(repo):
    assert [s["function"]["name"] for s in Toolbox(repo, read_only=True).specs()] == READ_TOOLS


def test_root_must_be_a_folder(tmp_path):
    with pytest.raises(UserError):
        Toolbox(tmp_path / "missing")


# -- list_files ------------------------------------------------------------------------------


def test_list_files_is_gitignore_aware_and_sorted(tb):
    out = ok(tb.call("list_files", "{}")).splitlines()
    assert out == [
        ".gitignore",
        "README.md",
        "notes.txt",
        "src/calc.py",
        "tests/test_calc.py",
    ]


def test_list_files_pattern_without_slash_matches_names_at_any_depth(tb):
    assert ok(tb.call("list_files", {"pattern": "*.py"})).splitlines() == [
        "src/calc.py",
        "tests/test_calc.py",
    ]
    assert ok(tb.call("list_files", {"pattern": "*.{md,txt}"})).splitlines() == [
        "README.md",
        "notes.txt",
    ]


def test_list_files_under_a_folder_answers_paths_from_the_root(tb):
    assert ok(tb.call("list_files", {"path": "src"})) == "src/calc.py"
    assert ok(tb.call("list_files", {"path": "tests", "pattern": "**/test_*.py"})) == (
        "tests/test_calc.py"
    )
    assert "no files match" in ok(tb.call("list_files", {"pattern": "*.rs"}))
    assert ok(tb.call("list_files", {"path": "src/calc.py"})) == "src/calc.py"
    assert ok(tb.call("search", {"pattern": "return", "path": "src/calc.py"})) == (
        "src/calc.py:2:    return a + b"
    )


def test_list_files_sees_deleted_tracked_files_no_more(tb, repo):
    (repo / "README.md").unlink()
    assert "README.md" not in ok(tb.call("list_files", {}))


def test_list_files_caps_at_500_with_a_note(tb, repo):
    many = repo / "many"
    many.mkdir()
    for i in range(MAX_LISTED + 37):
        (many / f"f{i:04d}.txt").write_text("")
    out = ok(tb.call("list_files", {"path": "many"})).splitlines()
    assert len(out) == MAX_LISTED + 1
    assert out[-1] == "... 37 more; narrow the pattern or the path"


def test_git_file_list_is_kept_until_a_tool_or_forget_may_have_changed_files(repo, tmp_path):
    """Agents list and search again and again between edits: one `git ls-files` serves them
    until a writing tool runs or the toolbox is told to forget (checks, a rebase between turns)."""
    shim = tmp_path / "bin"
    shim.mkdir()
    calls = tmp_path / "git-calls"
    real = subprocess.run(["which", "git"], capture_output=True, text=True).stdout.strip()
    (shim / "git").write_text(f'#!/bin/sh\necho "$*" >> {calls}\nexec {real} "$@"\n')
    (shim / "git").chmod(0o755)
    tb = Toolbox(repo, env={**os.environ, "PATH": f"{shim}:{os.environ['PATH']}"})

    def listings() -> int:
        return sum("ls-files" in line for line in calls.read_text().splitlines())

    assert "notes.txt" in ok(tb.call("list_files", {}))
    assert ok(tb.call("list_files", {"path": "src"})) == "src/calc.py"
    assert "src/calc.py" in ok(tb.call("list_files", {"pattern": "*.py"}))
    assert listings() == 1
    ok(tb.call("write_file", {"path": "src/new.py", "content": "x = 1\n"}))
    assert ok(tb.call("list_files", {"path": "src"})).splitlines() == ["src/calc.py", "src/new.py"]
    ok(tb.call("run", {"command": "rm src/new.py && touch made.txt"}))
    out = ok(tb.call("list_files", {})).splitlines()
    assert "made.txt" in out and "src/new.py" not in out
    assert listings() == 3
    (repo / "by-a-check.txt").write_text("")  # not through a tool: seen after forget()
    tb.forget()
    assert "by-a-check.txt" in ok(tb.call("list_files", {}))
    assert listings() == 4


def test_list_files_missing_folder_is_not_found(tb):
    result = tb.call("list_files", {"path": "nope"})
    assert result.error_type == "not_found"


def test_list_files_outside_git_walks_and_skips_dot_git(tmp_path):
    (tmp_path / ".git").mkdir()  # not a repository: git refuses it, the walk must skip it
    (tmp_path / ".git" / "config").write_text("x")
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "c.txt").write_text("c")
    (tmp_path / "top.txt").write_text("t")
    out = ok(Toolbox(tmp_path).call("list_files", {}))
    assert out.splitlines() == ["a/b/c.txt", "top.txt"]


# -- read_file -------------------------------------------------------------------------------


def test_read_file_has_a_header_and_the_text_unchanged(tb):
    out = ok(tb.call("read_file", {"path": "src/calc.py"}))
    assert out == "src/calc.py (lines 1-2 of 2)\ndef add(a, b):\n    return a + b\n"


def test_read_file_line_range(tb):
    out = ok(tb.call("read_file", {"path": "tests/test_calc.py", "start_line": 4, "end_line": 5}))
    assert (
        out == "tests/test_calc.py (lines 4-5 of 5)\ndef test_add():\n    assert add(1, 2) == 3\n"
    )
    past = tb.call("read_file", {"path": "src/calc.py", "start_line": 9})
    assert past.error_type == "invalid_arguments" and "2 lines" in past.output
    backwards = tb.call("read_file", {"path": "src/calc.py", "start_line": 2, "end_line": 1})
    assert backwards.error_type == "invalid_arguments"


def test_read_file_long_file_is_cut_with_directions(tb, repo):
    (repo / "big.txt").write_text("".join(f"{i:039d}\n" for i in range(1, 3001)))  # 120 KB
    out = ok(tb.call("read_file", {"path": "big.txt"}))
    header, *_ = out.splitlines()
    assert header == "big.txt (lines 1-1250 of 3000)"
    assert out.rstrip().endswith("read on with start_line=1251]")
    assert len(out) < 51_000
    rest = ok(tb.call("read_file", {"path": "big.txt", "start_line": 1251, "end_line": 1252}))
    assert rest.splitlines()[1] == f"{1251:039d}"


def test_read_file_one_enormous_line_shows_its_start(tb, repo):
    (repo / "min.js").write_text("x" * 200_000)
    out = ok(tb.call("read_file", {"path": "min.js"}))
    assert out.startswith("min.js (lines 1-1 of 1)\n" + "x" * 100)
    assert "200000 characters long" in out and len(out) < 51_000


def test_read_file_errors(tb, repo):
    (repo / "blob.bin").write_bytes(b"\x89PNG\r\n\x00\x00data")
    (repo / "empty.txt").write_text("")
    assert tb.call("read_file", {"path": "blob.bin"}).error_type == "binary_file"
    assert tb.call("read_file", {"path": "src"}).error_type == "not_a_file"
    assert tb.call("read_file", {"path": "nope.py"}).error_type == "not_found"
    assert ok(tb.call("read_file", {"path": "empty.txt"})) == "empty.txt (empty file)"


# -- write_file / edit_file ------------------------------------------------------------------


def test_write_file_creates_parents_and_reports_bytes(tb, repo):
    out = ok(tb.call("write_file", {"path": "pkg/sub/mod.py", "content": "é = 1\n"}))
    assert out == "wrote 7 bytes to pkg/sub/mod.py (new file)"
    assert (repo / "pkg" / "sub" / "mod.py").read_text() == "é = 1\n"
    again = ok(tb.call("write_file", {"path": "pkg/sub/mod.py", "content": "x\r\n"}))
    assert again == "wrote 3 bytes to pkg/sub/mod.py"
    assert (repo / "pkg" / "sub" / "mod.py").read_bytes() == b"x\r\n"  # newlines untouched


def test_write_file_onto_a_folder_or_through_a_file_is_refused(tb):
    assert tb.call("write_file", {"path": "src", "content": ""}).error_type == "not_a_file"
    through = tb.call("write_file", {"path": "README.md/x", "content": ""})
    assert through.error_type == "not_a_file"


def test_edit_file_replaces_exactly_once(tb, repo):
    out = ok(tb.call("edit_file", {"path": "src/calc.py", "old": "a + b", "new": "b + a"}))
    assert out.startswith("edited src/calc.py at line 2")
    assert (repo / "src" / "calc.py").read_text() == "def add(a, b):\n    return b + a\n"


def test_edit_file_keeps_bytes_that_are_not_utf8(tb, repo):
    (repo / "latin1.txt").write_bytes(b"caf\xe9\nold line\n")
    ok(tb.call("edit_file", {"path": "latin1.txt", "old": "old line", "new": "new line"}))
    assert (repo / "latin1.txt").read_bytes() == b"caf\xe9\nnew line\n"


def test_edit_file_not_found_suggests_reading(tb, repo):
    result = tb.call("edit_file", {"path": "src/calc.py", "old": "return a+b", "new": "x"})
    assert result.error_type == "not_found"
    assert "read_file" in result.output
    near = tb.call("edit_file", {"path": "src/calc.py", "old": "\treturn a + b", "new": "x"})
    assert near.error_type == "not_found" and "line 2" in near.output
    assert (repo / "src" / "calc.py").read_text() == "def add(a, b):\n    return a + b\n"


def test_edit_file_ambiguous_says_how_many(tb):
    result = tb.call("edit_file", {"path": "src/calc.py", "old": "a", "new": "z"})
    assert result.error_type == "ambiguous"
    assert "3 times" in result.output and "more" in result.output


def test_edit_file_empty_old_and_missing_file(tb):
    assert (
        tb.call("edit_file", {"path": "src/calc.py", "old": "", "new": "x"}).error_type
        == "invalid_arguments"
    )
    assert tb.call("edit_file", {"path": "no.py", "old": "a", "new": "b"}).error_type == (
        "not_found"
    )


# -- search ----------------------------------------------------------------------------------


def test_search_covers_tracked_and_untracked_not_ignored(tb):
    out = ok(tb.call("search", {"pattern": r"\badd\b"})).splitlines()
    assert "src/calc.py:1:def add(a, b):" in out
    assert "notes.txt:1:untracked note about add" in out
    assert not any(line.startswith(("app.log", "build/")) for line in out)


def test_search_perl_style_classes_and_glob_and_path(tb):
    assert ok(tb.call("search", {"pattern": r"\d{3}"})) == "README.md:2:Adds numbers 123."
    py_only = ok(tb.call("search", {"pattern": "add", "glob": "*.py"})).splitlines()
    assert py_only and all(line.split(":")[0].endswith(".py") for line in py_only)
    in_tests = ok(tb.call("search", {"pattern": "add", "path": "tests"})).splitlines()
    assert in_tests and all(line.startswith("tests/") for line in in_tests)
    assert "no matches" in ok(tb.call("search", {"pattern": "zebra"}))


def test_search_caps_at_200_lines_with_a_note(tb, repo):
    (repo / "hits.txt").write_text("hit\n" * (MAX_MATCHES + 50))
    out = ok(tb.call("search", {"pattern": "^hit$"})).splitlines()
    assert len(out) == MAX_MATCHES + 1
    assert out[-1].startswith("... 50 more matching lines")


def test_search_bad_regex_is_invalid_arguments(tb):
    result = tb.call("search", {"pattern": "(unclosed"})
    assert result.error_type == "invalid_arguments"
    assert "search failed" in result.output


def test_search_outside_git_uses_python(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.py").write_text("x = 1\nvalue = 42\n")
    (tmp_path / "b.bin").write_bytes(b"42\x00")
    tb = Toolbox(tmp_path)
    assert ok(tb.call("search", {"pattern": r"\d\d"})) == "d/a.py:2:value = 42"
    assert tb.call("search", {"pattern": "("}).error_type == "invalid_arguments"


# -- run -------------------------------------------------------------------------------------


def test_run_reports_exit_code_and_output(tb, repo):
    out = ok(tb.call("run", {"command": "pwd; echo oops >&2; exit 4"}))
    assert out == f"exit code 4\n{os.path.realpath(repo)}\noops\n"  # non-zero is not an error
    assert ok(tb.call("run", {"command": "true"})) == "exit code 0\n(no output)"


def test_run_timeout_is_a_recoverable_error_and_capped(repo):
    tb = Toolbox(repo, command_timeout=0.5)
    result = tb.call("run", {"command": "echo before; sleep 20", "timeout": 60})
    assert result.error_type == "timeout"
    assert "timed out after 0.5 s" in result.output and "before" in result.output


def test_run_does_not_see_secrets(repo, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret")
    monkeypatch.setenv("PLAIN_NAME", "has sk-other inside")
    tb = Toolbox(repo, secrets=["sk-other"])
    out = ok(tb.call("run", {"command": "env"}))
    assert "sk-secret" not in out and "sk-other" not in out
    assert "PATH=" in out


# -- finish ----------------------------------------------------------------------------------


def test_finish_returns_the_handoff(tb):
    result = tb.call("finish", json.dumps({"summary": "added sub()", "concerns": "no docs"}))
    assert result.output == "finished" and result.error_type is None
    assert result.finish == {"summary": "added sub()", "not_done": "", "concerns": "no docs"}


# -- errors ----------------------------------------------------------------------------------


def test_unknown_tool(tb):
    result = tb.call("delete_everything", {})
    assert result.error_type == "unknown_tool" and "read_file" in result.output


def test_invalid_json_quotes_the_arguments(tb):
    result = tb.call("read_file", '{"path": "src/calc.py",')
    assert result.error_type == "invalid_json"
    assert "src/calc.py" in result.output


def test_schema_errors_are_listed(tb):
    result = tb.call("read_file", {"path": 3, "start_line": 0, "colour": "red"})
    assert result.error_type == "invalid_arguments"
    for field in ("path", "start_line", "colour"):
        assert field in result.output
    assert tb.call("read_file", "[1, 2]").error_type == "invalid_arguments"
    assert tb.call("run", {"command": ""}).error_type == "invalid_arguments"


def test_empty_arguments_mean_defaults(tb):
    assert "src/calc.py" in ok(tb.call("list_files", ""))


def test_read_only_toolbox_refuses_writing_tools(repo):
    tb = Toolbox(repo, read_only=True)
    for name, args in [
        ("write_file", {"path": "x.txt", "content": "x"}),
        ("edit_file", {"path": "src/calc.py", "old": "a", "new": "b"}),
        ("run", {"command": "touch y.txt"}),
        ("finish", {"summary": "s"}),
    ]:
        result = tb.call(name, args)
        assert result.error_type == "read_only", name
    assert not (repo / "x.txt").exists() and not (repo / "y.txt").exists()
    assert "src/calc.py" in ok(tb.call("read_file", {"path": "src/calc.py"}))


# -- confinement -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    ["../x", "/etc/passwd", "sub/../../x", ".git/hooks/x", ".git/config", "src/../.git/HEAD"],
)
def test_paths_outside_or_into_git_are_refused(tb, repo, tmp_path, path):
    for name, args in [
        ("read_file", {"path": path}),
        ("write_file", {"path": path, "content": "pwned"}),
        ("edit_file", {"path": path, "old": "a", "new": "b"}),
        ("list_files", {"path": path}),
        ("search", {"pattern": "a", "path": path}),
    ]:
        result = tb.call(name, args)
        assert result.error_type == "path_refused", (name, result.output)
    assert not (tmp_path / "x").exists()
    assert not (repo / ".git" / "hooks" / "x").exists()


def test_symlinks_leading_outside_are_refused_for_read_and_write(tb, repo, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret")
    (repo / "out").symlink_to(outside)
    (repo / "link.txt").symlink_to(outside / "secret.txt")
    (repo / "dangling.txt").symlink_to(outside / "new.txt")
    for name, args in [
        ("read_file", {"path": "out/secret.txt"}),
        ("read_file", {"path": "link.txt"}),
        ("write_file", {"path": "out/new.txt", "content": "x"}),
        ("write_file", {"path": "out/deeper/new.txt", "content": "x"}),
        ("write_file", {"path": "link.txt", "content": "x"}),
        ("write_file", {"path": "dangling.txt", "content": "x"}),
        ("edit_file", {"path": "link.txt", "old": "secret", "new": "x"}),
    ]:
        result = tb.call(name, args)
        assert result.error_type == "path_refused", (name, args)
        assert "symlink" in result.output
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]
    assert (outside / "secret.txt").read_text() == "secret"


def test_symlink_into_git_is_refused(tb, repo):
    (repo / "g").symlink_to(repo / ".git")
    result = tb.call("write_file", {"path": "g/hooks/pre-commit", "content": "#!/bin/sh\n"})
    assert result.error_type == "path_refused"
    assert not (repo / ".git" / "hooks" / "pre-commit").exists()


def test_symlinks_inside_the_root_are_followed(tb, repo):
    (repo / "alias.py").symlink_to(repo / "src" / "calc.py")
    assert "def add" in ok(tb.call("read_file", {"path": "alias.py"}))
    ok(tb.call("write_file", {"path": "src/../ok.txt", "content": "y"}))
    assert (repo / "ok.txt").read_text() == "y"


def test_resolve_inside_directly(repo):
    assert resolve_inside(repo, "src/calc.py") == Path(os.path.realpath(repo / "src/calc.py"))
    assert resolve_inside(repo, "") == Path(os.path.realpath(repo))
    assert resolve_inside(repo, "new/dir/file.txt").parent.name == "dir"
    for bad in ("../x", "/etc/passwd", ".git", "a/.GIT/config", "x\0y"):
        with pytest.raises(PathRefused):
            resolve_inside(repo, bad)


# -- globs -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "path", "expected"),
    [
        ("*.py", "a.py", True),
        ("*.py", "deep/er/a.py", True),
        ("*.py", "a.pyc", False),
        ("src/*.py", "src/a.py", True),
        ("src/*.py", "src/x/a.py", False),
        ("src/**/*.py", "src/a.py", True),
        ("src/**/*.py", "src/x/y/a.py", True),
        ("src/**/*.py", "lib/a.py", False),
        ("**/*", "any/thing", True),
        ("*.{ts,tsx}", "ui/app.tsx", True),
        ("*.{ts,tsx}", "ui/app.js", False),
        ("[ab].txt", "b.txt", True),
        ("[!ab].txt", "b.txt", False),
        ("file?.md", "file1.md", True),
        ("./docs/*.md", "docs/x.md", True),
    ],
)
def test_glob_matcher(pattern, path, expected):
    assert glob_matcher(pattern)(path) is expected
