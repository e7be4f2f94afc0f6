"""run_command: process groups, timeouts, cut output, scrubbed environment, limits, bubblewrap."""

from __future__ import annotations

import http.server
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
import uuid
from pathlib import Path

import pytest

from devswarm.errors import UserError
from devswarm.sandbox import bwrap
from devswarm.sandbox.bwrap import SANDBOX_HOME
from devswarm.sandbox.command import ResourceLimits, cut_output, run_command
from devswarm.sandbox.env import command_env
from devswarm.sandbox.probe import SandboxUnavailable
from tests.sandboxes import KINDS, MODES, sandboxed_fixture  # noqa: F401

MARKER = re.compile(r"\[\.\.\. (\d+) bytes cut \.\.\.\]\n")


def _marker_seconds() -> str:
    """A sleep duration no other process on the machine uses, to find ours in /proc."""
    return f"30.{uuid.uuid4().int % 10**9:09d}"


def _alive(needle: str) -> list[int]:
    """PIDs of live (not zombie) processes whose command line contains `needle`."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if needle.encode() in cmdline and state != "Z":
            found.append(int(entry))
    return found


def _pid_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _eventually(check, seconds: float = 3.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.02)
    return check()


# -- environment ----------------------------------------------------------------------------


def test_command_env_keeps_only_the_allowlist():
    base = {
        "OPENAI_API_KEY": "a",
        "OPENAI_BASE_URL": "b",
        "github_token": "c",
        "DB_PASSWORD": "d",
        "MYSQL_PASSWD": "e",
        "SSH_AUTH_SOCK": "f",
        "GOOGLE_APPLICATION_CREDENTIALS": "g",
        "CLIENT_SECRET": "h",
        "PREFECT_API_URL": "i",
        "ANTHROPIC_MODEL": "j",
        "AWS_REGION": "k",
        "DEVSWARM_DATA": "l",
        "GIT_DIR": "/elsewhere/.git",
        "HOME": "/root",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "TERM": "xterm",
        "TZ": "UTC",
        "PATH": "/usr/bin:/bin",
        "GIT_AUTHOR_NAME": "someone",
        "GIT_CONFIG_PARAMETERS": "'protocol.file.allow'='always'",
        "GIT_CONFIG_COUNT": "2",
        "GIT_CONFIG_KEY_1": "core.hooksPath",
        "GIT_CONFIG_VALUE_1": "/elsewhere/hooks",
        # What the old denylist let through:
        "DATABASE_URL": "postgresql://app:hunter2@db/app",
        "GITHUB_PAT": "ghp_0123456789",
        "SENTRY_DSN": "https://abc123@o1.ingest.sentry.io/1",
        "HTTPS_PROXY": "http://user:pa55@proxy:3128",
        "http_proxy": "http://user:pa55@proxy:3128",
    }
    env = command_env(base)
    assert set(env) == {
        "HOME",
        "LANG",
        "LC_ALL",
        "TERM",
        "TZ",
        "PATH",
        "GIT_TERMINAL_PROMPT",
        "PYTHONDONTWRITEBYTECODE",
        "PYTHONUNBUFFERED",
        "GIT_CONFIG_COUNT",
        "GIT_CONFIG_KEY_0",
        "GIT_CONFIG_VALUE_0",
    }
    # Git config through the environment is ours alone: no transport to a local path.
    assert (env["GIT_CONFIG_COUNT"], env["GIT_CONFIG_KEY_0"], env["GIT_CONFIG_VALUE_0"]) == (
        "1",
        "protocol.file.allow",
        "never",
    )
    assert env["PATH"].split(os.pathsep) == [os.path.dirname(sys.executable), "/usr/bin", "/bin"]
    assert env["GIT_TERMINAL_PROMPT"] == "0"
    assert base["OPENAI_API_KEY"] == "a"  # the caller's mapping is left alone


def test_command_env_passes_what_the_user_names_unless_it_holds_a_secret():
    base = {"PATH": "/bin", "MY_TOOL_HOME": "/opt/tool", "LEAKY": "Bearer sk-live-123"}
    env = command_env(base, pass_env=["MY_TOOL_HOME", "LEAKY", "ABSENT"], secrets=["sk-live-123"])
    assert env["MY_TOOL_HOME"] == "/opt/tool"
    assert "LEAKY" not in env and "ABSENT" not in env


@pytest.mark.parametrize("name", ["GIT_DIR", "GIT_CONFIG_KEY_3", "git_config_parameters", "A-B"])
def test_pass_env_refuses_names_that_take_git_from_devswarm(name):
    with pytest.raises(UserError, match="--pass-env"):
        command_env({}, pass_env=[name])


def test_command_env_drops_variables_whose_value_holds_a_secret():
    base = {"LANG": "Bearer sk-live-123", "TERM": "fine", "PATH": "/bin"}
    env = command_env(base, secrets=["sk-live-123", ""])
    assert "LANG" not in env
    assert env["TERM"] == "fine"  # an empty secret must not match everything


def test_command_env_defaults_to_os_environ(monkeypatch):
    monkeypatch.setenv("DEVSWARM_TEST_PLAIN_VAR_XYZ", "1")
    monkeypatch.setenv("SOME_VISIBLE_VAR_XYZ", "2")
    monkeypatch.setenv("TZ", "Europe/Paris")
    env = command_env()
    assert env["TZ"] == "Europe/Paris"
    assert "SOME_VISIBLE_VAR_XYZ" not in env  # not named: not passed
    assert command_env(pass_env=["SOME_VISIBLE_VAR_XYZ"])["SOME_VISIBLE_VAR_XYZ"] == "2"
    assert "DEVSWARM_TEST_PLAIN_VAR_XYZ" not in env


@pytest.mark.parametrize("mode", MODES)
def test_command_does_not_see_the_api_key(tmp_path, monkeypatch, sandboxed):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret")
    monkeypatch.setenv("INNOCENT_LOOKING", "xx-sk-secret-xx")
    result = run_command(
        "env; python -c 'import sys; print(sys.executable)'",
        tmp_path,
        env=command_env(secrets=["sk-secret"]),
        sandbox=sandboxed,
    )
    assert result.exit_code == 0
    assert "sk-secret" not in result.output
    assert "PATH=" in result.output
    # `python` is the interpreter devswarm runs on
    assert os.path.dirname(sys.executable) in result.output.splitlines()[-1]


def test_default_env_is_the_allowlist(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret")
    result = run_command("env", tmp_path, sandbox=False)
    assert "sk-secret" not in result.output and "HOME=" in result.output


@pytest.mark.parametrize("mode", MODES)
def test_what_the_denylist_let_through_does_not_reach_a_command(tmp_path, monkeypatch, sandboxed):
    leaks = {
        "DATABASE_URL": "postgresql://app:hunter2@db/app",
        "GITHUB_PAT": "ghp_leak0123456789",
        "SENTRY_DSN": "https://leak123@o1.ingest.sentry.io/1",
        "HTTPS_PROXY": "http://user:pa55leak@proxy:3128",
    }
    for name, value in leaks.items():
        monkeypatch.setenv(name, value)
    result = run_command("env", tmp_path, sandbox=sandboxed)
    assert result.exit_code == 0 and "PATH=" in result.output
    for name, value in leaks.items():
        assert name not in result.output and value not in result.output


@pytest.mark.parametrize("mode", KINDS)
def test_home_in_the_sandbox_is_private_and_empty(tmp_path, sandboxed):
    first = run_command('echo "$HOME"; ls -A "$HOME"; echo x > "$HOME/.cache"', tmp_path)
    assert first.exit_code == 0 and first.output == f"{SANDBOX_HOME}\n"
    second = run_command('ls -A "$HOME"', tmp_path)
    assert second.output == ""  # nothing carries over from one command to the next


# -- running ---------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_exit_code_and_interleaved_output(tmp_path, sandboxed):
    result = run_command(
        "echo one; echo two >&2; echo three; pwd; exit 3", tmp_path, sandbox=sandboxed
    )
    assert result.exit_code == 3
    assert result.output == f"one\ntwo\nthree\n{os.path.realpath(tmp_path)}\n"
    assert not result.timed_out and not result.truncated


@pytest.mark.parametrize("mode", MODES)
def test_stdin_is_closed(tmp_path, sandboxed):
    result = run_command("cat; echo done", tmp_path, timeout=10, sandbox=sandboxed)
    assert result.exit_code == 0
    assert result.output == "done\n"
    assert result.duration_s < 5


@pytest.mark.parametrize("mode", MODES)
def test_timeout_kills_the_command_and_its_children(tmp_path, sandboxed):
    secs = _marker_seconds()
    command = (
        f"sleep {secs} & echo $! >> pids; "
        f"(sleep {secs}; true) & echo $! >> pids; "
        f"echo started; sleep {secs}"
    )
    started = time.monotonic()
    result = run_command(command, tmp_path, timeout=0.5, sandbox=sandboxed)
    assert result.timed_out
    assert result.exit_code is None
    assert result.output == "started\n"
    assert time.monotonic() - started < 3
    assert _eventually(lambda: not _alive(secs)), f"survivors: {_alive(secs)}"
    if not sandboxed:  # inside bubblewrap the PIDs are those of its own PID namespace
        pids = [int(p) for p in (tmp_path / "pids").read_text().split()]
        assert len(pids) == 2
        assert _eventually(lambda: not any(_pid_alive(p) for p in pids))


@pytest.mark.parametrize("mode", MODES)
def test_background_children_do_not_outlive_their_command(tmp_path, sandboxed):
    secs = _marker_seconds()
    result = run_command(f"sleep {secs} & echo bye", tmp_path, timeout=10, sandbox=sandboxed)
    assert result.exit_code == 0 and result.output == "bye\n"
    assert result.duration_s < 5
    assert _eventually(lambda: not _alive(secs))


@pytest.mark.parametrize("mode", MODES)
def test_ten_megabytes_of_output_cut_to_head_and_tail_quickly(tmp_path, sandboxed):
    command = "echo START; yes line | head -n 2000000; echo END"
    total = len(b"START\n") + 2_000_000 * len(b"line\n") + len(b"END\n")
    tracemalloc.start()
    try:
        result = run_command(command, tmp_path, output_limit=2000, sandbox=sandboxed)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.exit_code == 0
    assert result.truncated
    assert result.duration_s < 5
    assert peak < 1_000_000  # only the head and tail were read, never the 10 MB
    assert result.output.startswith("START\nline\n")
    assert result.output.endswith("line\nEND\n")
    match = MARKER.search(result.output)
    assert match
    shown = result.output[: match.start()] + result.output[match.end() :]
    assert int(match.group(1)) + len(shown.encode()) == total
    assert len(result.output) <= 2000 + len(match.group(0))


def test_short_output_is_not_cut(tmp_path):
    result = run_command("printf 'x%.0s' $(seq 100)", tmp_path, output_limit=100, sandbox=False)
    assert result.output == "x" * 100 and not result.truncated


def test_output_is_decoded_with_replacement(tmp_path):
    result = run_command(r"printf 'ok \377\376 end'", tmp_path, sandbox=False)
    assert result.output == "ok \ufffd\ufffd end"


def test_missing_working_directory_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        run_command("true", tmp_path / "nope")


# -- limits ----------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_file_size_limit_stops_a_large_write(tmp_path, sandboxed):
    limits = ResourceLimits(file_size_bytes=1 << 20)
    result = run_command(
        'head -c 3000000 /dev/zero > big.bin; echo "rc=$?"',
        tmp_path,
        limits=limits,
        sandbox=sandboxed,
    )
    assert "rc=0" not in result.output
    assert "rc=153" in result.output  # 128 + SIGXFSZ
    assert (tmp_path / "big.bin").stat().st_size == 1 << 20


def test_memory_limit_stops_a_large_allocation(tmp_path):
    limits = ResourceLimits(memory_bytes=256 << 20)
    result = run_command("python -c 'bytearray(1 << 30)'", tmp_path, limits=limits, sandbox=False)
    assert result.exit_code != 0
    assert "MemoryError" in result.output


def test_cpu_limit_stops_a_busy_loop(tmp_path):
    limits = ResourceLimits(cpu_seconds=1)
    result = run_command(
        "python -c 'while True: pass'", tmp_path, timeout=20, limits=limits, sandbox=False
    )
    assert not result.timed_out
    assert result.exit_code != 0
    assert result.duration_s < 10


def test_limits_are_hard_so_a_command_cannot_raise_them(tmp_path):
    limits = ResourceLimits(file_size_bytes=1 << 20)
    result = run_command("ulimit -f unlimited", tmp_path, limits=limits, sandbox=False)
    assert result.exit_code != 0


# -- cut_output ------------------------------------------------------------------------------


def test_cut_output_keeps_short_text():
    assert cut_output("hello", 10) == ("hello", False)


def test_cut_output_keeps_head_and_tail_and_counts_the_cut():
    text = "".join(f"line {i}\n" for i in range(1000))
    cut, truncated = cut_output(text, 200)
    assert truncated
    assert cut.startswith("line 0\n") and cut.endswith("line 999\n")
    match = MARKER.search(cut)
    assert match
    shown = cut[: match.start()] + cut[match.end() :]
    assert int(match.group(1)) + len(shown) == len(text)
    assert len(shown) <= 200


# -- bubblewrap ------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", KINDS)
def test_bwrap_worktree_is_the_only_writable_path(tmp_path, sandboxed):
    # tmp_path is under /tmp: the worktree must be bound on top of the private /tmp
    worktree = tmp_path / "wt"
    worktree.mkdir()
    outside = Path(tempfile.mkdtemp(dir="/var/tmp", prefix="devswarm-test-"))
    try:
        result = run_command(
            f"echo in > inside.txt && echo out > {outside}/x.txt; echo rc=$?",
            worktree,
            sandbox=sandboxed,
        )
        assert (worktree / "inside.txt").read_text() == "in\n"
        assert not (outside / "x.txt").exists()
        assert "Read-only file system" in result.output and "rc=1" in result.output
    finally:
        shutil.rmtree(outside)


@pytest.mark.parametrize("mode", KINDS)
def test_bwrap_hides_the_rest_of_tmp(tmp_path, sandboxed):
    worktree, sibling = tmp_path / "wt", tmp_path / "sibling"
    worktree.mkdir()
    sibling.mkdir()
    (sibling / "secret.txt").write_text("other worker's file")
    result = run_command(
        f"cat {sibling}/secret.txt; echo x > {sibling}/new.txt", worktree, sandbox=sandboxed
    )
    assert "other worker's file" not in result.output
    assert "No such file or directory" in result.output
    assert not (sibling / "new.txt").exists()


@pytest.mark.parametrize("mode", KINDS)
def test_bwrap_extra_writable_paths(tmp_path, sandboxed):
    worktree, cache = tmp_path / "wt", tmp_path / "cache"
    worktree.mkdir()
    cache.mkdir()
    result = run_command(f"echo hit > {cache}/entry", worktree, sandbox=sandboxed, writable=[cache])
    assert result.exit_code == 0
    assert (cache / "entry").read_text() == "hit\n"


@pytest.mark.parametrize("mode", KINDS)
def test_bwrap_tmp_is_private(tmp_path, sandboxed):
    name = f"/tmp/devswarm-probe-{uuid.uuid4().hex}"
    result = run_command(f"echo x > {name} && cat {name}", tmp_path, sandbox=sandboxed)
    assert result.output == "x\n"
    assert not os.path.exists(name)


@pytest.mark.parametrize("mode", KINDS)
def test_bwrap_git_metadata_is_read_only(tmp_path, sandboxed):
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    config = tmp_path / ".git" / "config"
    before = config.read_text()
    result = run_command(
        "echo '[core]' >> .git/config; git status --short; echo x > file.txt",
        tmp_path,
        sandbox=sandboxed,
    )
    assert config.read_text() == before
    assert "Read-only file system" in result.output
    assert (tmp_path / "file.txt").exists()  # the work tree itself stays writable


@pytest.fixture
def loopback_server():
    class Hello(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"hello")

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hello)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("mode", KINDS)
def test_bwrap_has_no_network_not_even_loopback(tmp_path, loopback_server, sandboxed):
    fetch = (
        "python -c 'import sys, urllib.request; "
        f'print(urllib.request.urlopen("{loopback_server}", timeout=5).read().decode())\''
    )
    plain = run_command(fetch, tmp_path, timeout=20, sandbox=False)
    assert plain.exit_code == 0 and plain.output == "hello\n"
    boxed = run_command(fetch, tmp_path, timeout=20, sandbox=sandboxed)
    assert boxed.exit_code != 0
    assert "hello" not in boxed.output
    assert "URLError" in boxed.output


def _git(cwd: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
    )


@pytest.mark.parametrize("mode", KINDS)
def test_bwrap_worktree_of_a_shared_clone_under_tmp_can_read_git(tmp_path, sandboxed):
    # The layout devswarm uses: the user's repo, a --shared private clone, a worktree of it,
    # all under /tmp here, which bubblewrap replaces with an empty tmpfs.
    _git(tmp_path, "init", "-q", "user")
    (tmp_path / "user" / "a.txt").write_text("a\n")
    _git(tmp_path / "user", "add", "a.txt")
    _git(tmp_path / "user", "commit", "-q", "-m", "first commit")
    _git(tmp_path, "clone", "-q", "--shared", "user", "clone")
    _git(tmp_path / "clone", "worktree", "add", "-q", "../wt")
    worktree = tmp_path / "wt"
    result = run_command(
        "git log --oneline; echo b > b.txt; git status --short; "
        "git add b.txt || echo add-refused; rm -f .git || echo rm-refused",
        worktree,
        sandbox=sandboxed,
    )
    assert "first commit" in result.output
    assert "?? b.txt" in result.output
    assert "add-refused" in result.output  # devswarm commits for the agent, outside
    assert "rm-refused" in result.output
    assert (worktree / ".git").is_file()


@pytest.mark.parametrize("mode", KINDS)
def test_bwrap_hidden_data_folder_keeps_the_worktree_and_hides_the_rest(tmp_path, sandboxed):
    # The data folder is outside /tmp here, so only `hidden` can hide it.
    data = Path(tempfile.mkdtemp(dir="/var/tmp", prefix="devswarm-test-"))
    server = socket.socket(socket.AF_UNIX)
    try:
        (data / "records.jsonl").write_text("other run's records\n")
        server.bind(str(data / "db.sock"))  # like the embedded PostgreSQL's socket
        server.listen()
        server.settimeout(5)
        _git(data, "init", "-q", "clone")
        (data / "clone" / "a.txt").write_text("a\n")
        _git(data / "clone", "add", "a.txt")
        _git(data / "clone", "commit", "-q", "-m", "first commit")
        _git(data / "clone", "worktree", "add", "-q", str(data / "worktrees" / "w1"))
        worktree = data / "worktrees" / "w1"
        probe = (
            f"cat {data}/records.jsonl; "
            "python -c 'import socket; s = socket.socket(socket.AF_UNIX); "
            f's.connect("{data}/db.sock"); print("connected")\'; '
            "git log --oneline"
        )
        seen = run_command(probe, worktree, timeout=20, sandbox=sandboxed)
        assert "other run's records" in seen.output and "connected" in seen.output  # control
        server.accept()[0].close()
        hidden = run_command(probe, worktree, timeout=20, sandbox=sandboxed, hidden=[data])
        assert "other run's records" not in hidden.output
        assert "connected" not in hidden.output
        assert "first commit" in hidden.output
    finally:
        server.close()
        shutil.rmtree(data)


# -- everything a command starts dies with it ------------------------------------------------


def _escapers(secs: str) -> str:
    """Background processes that leave the command's process group: `setsid`, a double fork,
    and a double fork inside a new session."""
    return (
        f"setsid sleep {secs} & "
        f"( (sleep {secs} &) & ); "
        f"setsid bash -c '(sleep {secs} &) &' & "
        "sleep 0.2; echo started"
    )


@pytest.mark.parametrize("mode", MODES)
def test_setsid_and_double_forked_children_die_with_their_command(tmp_path, sandboxed):
    secs = _marker_seconds()
    result = run_command(_escapers(secs), tmp_path, timeout=20, sandbox=sandboxed)
    assert result.exit_code == 0 and result.output == "started\n"
    assert _eventually(lambda: not _alive(secs)), f"survivors: {_alive(secs)}"


@pytest.mark.parametrize("mode", MODES)
def test_setsid_and_double_forked_children_die_at_the_timeout(tmp_path, sandboxed):
    secs = _marker_seconds()
    command = f"{_escapers(secs)}; sleep {secs}"
    result = run_command(command, tmp_path, timeout=1, sandbox=sandboxed)
    assert result.timed_out and result.output == "started\n"
    assert _eventually(lambda: not _alive(secs)), f"survivors: {_alive(secs)}"


# -- no silent fallback ----------------------------------------------------------------------


def test_a_sandbox_that_does_not_work_is_refused_not_skipped(tmp_path, monkeypatch):
    monkeypatch.setattr(bwrap, "system_bwrap", lambda: None)
    monkeypatch.setattr(bwrap, "bundled_bwrap", lambda: None)
    with pytest.raises(SandboxUnavailable, match="bubblewrap is not installed.*--no-sandbox"):
        run_command("echo ran > ran.txt", tmp_path)
    assert not (tmp_path / "ran.txt").exists()
    assert run_command("echo ran", tmp_path, sandbox=False).output == "ran\n"  # the opt-out


@pytest.mark.parametrize("mode", KINDS)
def test_network_only_when_asked(tmp_path, loopback_server, sandboxed):
    fetch = (
        "python -c 'import urllib.request; "
        f'print(urllib.request.urlopen("{loopback_server}", timeout=5).read().decode())\''
    )
    opened = run_command(fetch, tmp_path, timeout=20, sandbox=sandboxed, network=True)
    assert opened.exit_code == 0 and opened.output == "hello\n"
    closed = run_command(fetch, tmp_path, timeout=20, sandbox=sandboxed)
    assert closed.exit_code != 0 and "hello" not in closed.output


@pytest.mark.parametrize("mode", KINDS)
def test_sandboxed_command_sees_only_its_own_processes(tmp_path, sandboxed, monkeypatch):
    # The orchestrator's own environment holds the key: /proc must not show it.
    monkeypatch.setenv("DEVSWARM_TEST_PARENT_SECRET", "sk-parent-environ-123")
    result = run_command(
        f"cat /proc/{os.getpid()}/environ; grep -a -l sk-parent /proc/[0-9]*/environ; "
        "ls -d /proc/[0-9]* | wc -l",
        tmp_path,
        sandbox=sandboxed,
    )
    assert "sk-parent-environ-123" not in result.output
    assert int(result.output.split()[-1]) < 10  # bwrap, bash and the command's own


@pytest.mark.parametrize("mode", KINDS)
def test_the_server_folder_is_hidden_wherever_it_lives(tmp_path, sandboxed):
    # `devswarm server`'s folder outside the data folder (as root: /var/lib/devswarm/server),
    # with its auth file and the database socket; and a single hidden file.
    server = Path(tempfile.mkdtemp(dir="/var/tmp", prefix="devswarm-test-server-"))
    lone = Path(tempfile.mkstemp(dir="/var/tmp", prefix="devswarm-test-key-")[1])
    sock = socket.socket(socket.AF_UNIX)
    try:
        (server / "auth").write_text("admin:server-auth-secret\n")
        lone.write_text("lone-file-secret\n")
        (server / "pgrun").mkdir()
        sock.bind(str(server / "pgrun" / ".s.PGSQL.5432"))
        sock.listen()
        probe = (
            f"cat {server}/auth {lone}; ls {server}; "
            "python -c 'import socket; s = socket.socket(socket.AF_UNIX); "
            f's.connect("{server}/pgrun/.s.PGSQL.5432"); print("connected")\''
        )
        result = run_command(probe, tmp_path, timeout=20, hidden=[server, lone])
        assert "server-auth-secret" not in result.output
        assert "lone-file-secret" not in result.output
        assert "pgrun" not in result.output and "connected" not in result.output
    finally:
        sock.close()
        shutil.rmtree(server)
        lone.unlink()
