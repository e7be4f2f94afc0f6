"""Bad input (#14 part 4): a clear line, the right exit, nothing half-done.

A table of inputs and what each must give: a refusal exits 2 with one line on stderr, no
traceback, and no run folder; a tolerated input exits 0 with one warning line. Either way the
user's repository (files, refs, config, status, the bytes of .git/index) is unchanged. The CLI
runs in this process (typer's CliRunner) where it can; a few cases need a real process: the
Prefect API settings (read before Prefect is imported), and the crash log of `main()`.
"""

from __future__ import annotations

import http.server
import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from devswarm.cli import app
from devswarm.offline.server import ModelServer, Scenario
from tests.conftest import git, make_repo, snapshot
from tests.helpers import JUDGE_DONE, plan_reply, serving, task, write_and_finish

DEAD = "http://127.0.0.1:9/v1"  # nothing listens: a refusal that should come first does
# Variables the CLI reads or sets, cleared for each in-process call (and restored after it).
CLEAN_ENV = {
    name: None
    for name in (
        "OPENAI_API_KEY",
        "OPENAI_BASE_URL",
        "DEVSWARM_HOME",
        "PREFECT_API_URL",
        "PREFECT_API_AUTH_STRING",
        "PREFECT_SERVER_API_AUTH_STRING",
    )
}


@dataclass
class World:
    root: Path
    repo: Path
    url: str  # the offline model server, serving offline-model only


@pytest.fixture(autouse=True)
def _own_environment() -> Iterator[None]:
    """The CLI runs in this process and sets Prefect's environment for itself (quiet_prefect,
    the temporary server's auth string): the tests after these must not inherit it."""
    saved = dict(os.environ)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("bad-input")
    repo = make_repo(root / "user", {"README.md": "x\n"})
    (root / "plain").mkdir()
    (root / "a-file").write_text("not a folder\n")
    (root / "latin1.md").write_bytes("caf\xe9 au lait\n".encode("latin-1"))
    (root / "scenario-bad.json").write_text("{not json")
    configs = {
        "unknown.toml": "max_wrokers = 3\n",
        "nested.toml": "[budget]\nmax_dollars = 3\n",
        "broken.toml": "max_workers = \n",
        "key.toml": 'api_key = "sk-in-a-file"\n',
        "type.toml": 'max_workers = "many"\n',
        "price.toml": '[prices."some-model"]\ninput = nan\noutput = 1.0\n',
        "zero.toml": "max_workers = 0\n",
    }
    for name, text in configs.items():
        (root / name).write_text(text)
    (root / "latin1.toml").write_bytes("# caf\xe9\nmax_workers = 2\n".encode("latin-1"))
    # A data folder with one good run, one whose config.json is damaged, and a transcript.
    home = root / "ops-home"
    for run_id in ("good-run", "broken-run"):
        (home / "runs" / run_id).mkdir(parents=True)
    (home / "runs" / "good-run" / "config.json").write_text(
        json.dumps({"goal": "g", "repo": str(repo), "run_id": "good-run", "home": str(home)})
    )
    (home / "runs" / "broken-run" / "config.json").write_text('{"goal": "g", "repo": ')
    transcripts = home / "runs" / "good-run" / "transcripts"
    transcripts.mkdir()
    line = {"agent_id": "worker/x", "message": {"role": "user", "content": "first message"}}
    later = {"agent_id": "worker/x", "message": {"role": "assistant", "content": "after it"}}
    (transcripts / "worker_x.jsonl").write_bytes(
        (json.dumps(line) + "\n").encode()
        + b'{"agent_id": "wor\xff\n'
        + (json.dumps(later) + "\n").encode()
    )
    scenario = Scenario.from_data({"models": ["offline-model"], "agents": []})
    with ModelServer(scenario, log_path=root / "requests.jsonl") as server:
        yield World(root, repo, server.url)


RUN = ["run", "--repo", "{repo}", "--goal", "write notes", "--base-url", DEAD]
LIVE = ["--base-url", "{url}", "--model", "offline-model"]  # past the endpoint's checks

# (id, arguments, what the one line says). Arguments are formatted with {repo}, {root}, {url}.
REFUSED: list[tuple[str, list[str], str]] = [
    ("max-cost-nan", [*RUN, "--max-cost", "nan"], "--max-cost nan: must be a finite number"),
    ("max-cost-inf", [*RUN, "--max-cost", "inf"], "--max-cost inf: must be a finite number"),
    ("max-cost-overflow", [*RUN, "--max-cost", "1e400"], "--max-cost inf: must be a finite"),
    ("max-cost-negative", [*RUN, "--max-cost", "-5"], "--max-cost -5: must be above 0"),
    ("max-cost-zero", [*RUN, "--max-cost", "0"], "--max-cost 0: must be above 0"),
    ("max-cost-text", [*RUN, "--max-cost", "lots"], "Invalid value for '--max-cost'"),
    ("workers-zero", [*RUN, "--workers", "0"], "--workers 0: must be at least 1"),
    ("workers-negative", [*RUN, "--workers", "-1"], "--workers -1: must be at least 1"),
    ("workers-text", [*RUN, "--workers", "many"], "Invalid value for '--workers'"),
    ("cycles-zero", [*RUN, "--cycles", "0"], "--cycles 0: must be at least 1"),
    ("cycles-negative", [*RUN, "--cycles", "-2"], "--cycles -2: must be at least 1"),
    ("max-tokens-negative", [*RUN, "--max-tokens", "-1"], "--max-tokens -1: must be at least 1"),
    ("max-tokens-zero", [*RUN, "--max-tokens", "0"], "--max-tokens 0: must be at least 1"),
    ("goal-file-folder", [*RUN[:3], "--goal-file", "{root}"], "is a folder, not a file"),
    ("goal-file-not-utf8", [*RUN[:3], "--goal-file", "{root}/latin1.md"], "is not UTF-8 text"),
    ("goal-file-missing", [*RUN[:3], "--goal-file", "{root}/nope.md"], "does not exist"),
    ("goal-empty", [*RUN[:3], "--goal", ""], "the goal is empty"),
    ("goal-blank", [*RUN[:3], "--goal", "  \n "], "the goal is empty"),
    ("goal-twice", [*RUN, "--goal-file", "{root}/latin1.md"], "--goal-file FILE, not both"),
    ("config-folder", [*RUN, "--config", "{root}"], "is a folder, not a file"),
    ("config-unknown", [*RUN, "--config", "{root}/unknown.toml"], "max_wrokers: unknown setting"),
    ("config-nested", [*RUN, "--config", "{root}/nested.toml"], "budget.max_dollars: unknown"),
    ("config-not-toml", [*RUN, "--config", "{root}/broken.toml"], "not TOML"),
    ("config-missing", [*RUN, "--config", "{root}/nope.toml"], "does not exist"),
    ("config-api-key", [*RUN, "--config", "{root}/key.toml"], "keep the API key out of files"),
    ("config-type", [*RUN, "--config", "{root}/type.toml"], "max_workers: Input should be"),
    ("config-price", [*RUN, "--config", "{root}/price.toml"], "input: must be a finite number"),
    ("config-zero", [*RUN, "--config", "{root}/zero.toml"], "max_workers: must be at least 1"),
    ("config-not-utf8", [*RUN, "--config", "{root}/latin1.toml"], "is not UTF-8 text"),
    ("home-file", [*RUN, "--home", "{root}/a-file"], "is a file, not a folder"),
    ("home-under-file", [*RUN, "--home", "{root}/a-file/sub"], "not a folder this user can"),
    ("run-id-climbs", [*RUN, "--run-id", "../../x"], "--run-id ../../x: use lowercase letters"),
    ("run-id-space", [*RUN, "--run-id", "my run"], "--run-id my run: use lowercase"),
    ("run-id-capitals", [*RUN, "--run-id", "Nightly"], "--run-id Nightly: use lowercase"),
    ("run-id-slash", [*RUN, "--run-id", "a/b"], "--run-id a/b: use lowercase"),
    ("repo-none", ["run", *RUN[3:]], "which repository?"),
    ("repo-missing", [*RUN, "--repo", "{root}/nope"], "does not exist"),
    ("repo-not-git", [*RUN, *LIVE, "--repo", "{root}/plain"], "not a git repository"),
    ("repo-file", [*RUN, *LIVE, "--repo", "{root}/a-file"], "not a directory"),
    ("branch-checked-out", [*RUN, *LIVE, "--branch", "main"], "branch main is checked out"),
    ("branch-bad-name", [*RUN, *LIVE, "--branch", "a..b"], "a..b"),
    ("executor", [*RUN, "--executor", "ray"], "--executor must be local or deployment"),
    ("base-url-text", [*RUN, "--base-url", "nonsense"], "--base-url nonsense: not an http(s)"),
    ("base-url-ftp", [*RUN, "--base-url", "ftp://h/v1"], "--base-url ftp://h/v1: not an http"),
    ("base-url-dead", RUN, "cannot reach the model endpoint"),
    ("pass-env-name", [*RUN, "--pass-env", "MY-VAR"], "'MY-VAR': not an environment variable"),
    ("pass-env-git", [*RUN, "--pass-env", "GIT_DIR"], "devswarm sets git's environment"),
    ("model-empty", [*RUN, "--model", ""], "--model: String should have at least 1"),
    (
        "model-unknown",
        [*RUN, *LIVE, "--judge-model", "no-such-model"],
        "does not know the model 'no-such-model'",
    ),
    ("db-folder", [*RUN, "--db", "{root}"], "a folder, not a DuckDB file"),
    ("option-misspelt", [*RUN, "--wrokers", "3"], "No such option: --wrokers"),
    ("port-too-high", ["model-server", "--scenario", "x", "--port", "70000"], "or equal to 65535"),
    ("port-negative", ["model-server", "--scenario", "x", "--port", "-1"], "or equal to 0"),
    ("scenario-missing", ["model-server", "--scenario", "{root}/nope.json"], "not found"),
    ("scenario-not-json", ["model-server", "--scenario", "{root}/scenario-bad.json"], "JSON"),
    ("logs-climbs", ["logs", "../../user", "--home", "{root}/ops-home"], "no run ../../user"),
    ("logs-unknown", ["logs", "nope", "--home", "{root}/ops-home"], "no run nope"),
    ("stop-climbs", ["stop", "..", "--home", "{root}/ops-home"], "no run .."),
    ("resume-unknown", ["resume", "nope", "--home", "{root}/ops-home"], "no run nope"),
    ("resume-damaged", ["resume", "broken-run", "--home", "{root}/ops-home"], "cannot be read"),
    ("runs-home-file", ["runs", "--home", "{root}/a-file"], "is a file, not a folder"),
]


def _invoke(world: World, args: list[str], **env: str | None) -> tuple[int, str, str]:
    """Run the CLI in this process; (exit code, stdout, stderr)."""
    argv = [a.format(repo=world.repo, root=world.root, url=world.url) for a in args]
    result = CliRunner().invoke(app, argv, env={**CLEAN_ENV, **env})
    assert result.exception is None or isinstance(result.exception, SystemExit), argv
    return result.exit_code, result.stdout, result.stderr


def test_the_table_covers_forty_inputs_across_twelve_options() -> None:
    assert len({case for case, _, _ in REFUSED}) == len(REFUSED) >= 40
    options = {a for _, args, _ in REFUSED for a in args if a.startswith("--")}
    assert len(options - {"--repo", "--goal"}) >= 12


@pytest.mark.parametrize(("case", "args", "says"), REFUSED, ids=[c for c, _, _ in REFUSED])
def test_a_refusal_is_one_line_exit_2_and_leaves_nothing(
    world: World, case: str, args: list[str], says: str
) -> None:
    before = snapshot(world.repo)
    home = world.root / "homes" / case
    if args[0] == "run" and "--home" not in args:
        args = [*args, "--home", str(home)]
    code, out, err = _invoke(world, args)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, (out, err)
    assert len(lines) == 1 and lines[0].startswith("devswarm: "), err
    assert says in lines[0]
    assert "Traceback" not in out + err
    assert not (home / "runs").exists()  # no run folder: nothing was started
    assert snapshot(world.repo) == before


# -- tolerated: exit 0, one warning line ------------------------------------------------------


def test_runs_lists_the_others_when_one_config_is_damaged(world: World) -> None:
    code, out, err = _invoke(world, ["runs", "--home", str(world.root / "ops-home")])
    assert code == 0, err
    assert "good-run" in out and "broken-run" not in out
    [note] = [line for line in err.splitlines() if line.strip()]
    assert note.startswith("devswarm: note: skipped run broken-run: its config.json cannot be")


def test_logs_skips_a_damaged_transcript_line_with_a_note(world: World) -> None:
    home = str(world.root / "ops-home")
    code, out, err = _invoke(world, ["logs", "good-run", "--home", home])
    assert code == 0, err
    assert "first message" in out and "after it" in out
    [note] = [line for line in err.splitlines() if line.strip()]
    assert note == "devswarm: note: worker_x.jsonl: skipped an unreadable line"


ONE_TASK = {
    "agents": [
        {"match": "planner/*", "steps": [plan_reply(task("notes", ["NOTES.md"]))]},
        {"match": "worker/*", "steps": write_and_finish("NOTES.md", "notes\n")},
        JUDGE_DONE,
    ]
}


def _tiny_run(
    prefect_server: None, tmp_path: Path, repo: Path, scenario: dict, model: str, *extra: str
):
    """`devswarm run` in this process against the session's Prefect server: one task."""
    from prefect.settings import PREFECT_API_URL

    world = World(tmp_path, repo, "")
    with ModelServer(Scenario.from_data(scenario), log_path=tmp_path / "requests.jsonl") as server:
        args = [
            "run", "--repo", str(repo), "--goal", "write notes", "--base-url", server.url,
            "--model", model, "--workers", "1", "--cycles", "1", "--home", str(tmp_path / "data"),
            *extra,
        ]  # fmt: skip
        return _invoke(world, args, PREFECT_API_URL=PREFECT_API_URL.value())


def _one_warning(err: str) -> str:
    assert "Traceback" not in err
    warnings = [line for line in err.splitlines() if "warning" in line.lower()]
    assert len(warnings) == 1, err
    return warnings[0]


def test_a_dirty_working_tree_is_a_warning_and_stays_as_it_was(
    prefect_server: None, tmp_path: Path
) -> None:
    repo = make_repo(tmp_path / "user", {"README.md": "x\n", "src.py": "a = 1\n"})
    (repo / "src.py").write_text("a = 2\n")  # changed, not staged
    (repo / "scratch.txt").write_text("mine\n")  # untracked
    git(repo, "add", "README.md")
    before = snapshot(repo)
    head = git(repo, "rev-parse", "HEAD")
    code, out, err = _tiny_run(prefect_server, tmp_path, repo, ONE_TASK, "offline-model")
    assert code == 0, (out, err)
    warning = _one_warning(err)
    assert f"has 2 uncommitted change(s); the run starts from HEAD ({head[:12]})" in warning
    assert snapshot(repo) == before


def test_a_model_the_endpoint_does_not_list_but_serves_is_a_warning(
    prefect_server: None, tmp_path: Path
) -> None:
    repo = make_repo(tmp_path / "user", {"README.md": "x\n"})
    before = snapshot(repo)
    scenario = {  # a gateway that lists only part of what it serves
        **ONE_TASK,
        "models": ["offline-model", "hidden-model"],
        "server": {"listed_models": ["offline-model"]},
    }
    priced = tmp_path / "prices.toml"  # priced, so no other warning than the one asked for
    priced.write_text('[prices."hidden-model"]\ninput = 1.0\noutput = 1.0\n')
    code, out, err = _tiny_run(
        prefect_server, tmp_path, repo, scenario, "hidden-model", "--config", str(priced)
    )
    assert code == 0, (out, err)
    warning = _one_warning(err)
    assert "hidden-model" in warning and "not listed" in warning
    assert snapshot(repo) == before


# -- in a real process: Prefect's settings, the crash log, a usage error --------------------------


def _devswarm(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in CLEAN_ENV}
    root = Path(__file__).resolve().parents[1]
    return subprocess.run(
        [sys.executable, "-m", "devswarm.cli", *args],
        env={**clean, "PYTHONPATH": str(root), **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def refusing_prefect() -> Iterator[str]:
    """An API that answers its health check and refuses everything else (401), as a Prefect
    server with an auth string does when the client has the wrong one."""

    class Refuse(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            ok = self.path.endswith("/health")
            self.send_response(200 if ok else 401)
            self.end_headers()
            self.wfile.write(b"true" if ok else b'{"exception_message": "Unauthorized"}')

        def log_message(self, *args: object) -> None:
            pass

    with serving(Refuse) as url:
        yield f"{url}/api"


@pytest.mark.parametrize("prefect", ["unreachable", "refusing"])
def test_a_prefect_api_that_cannot_be_used_is_one_line(
    world: World, tmp_path: Path, refusing_prefect: str, prefect: str
) -> None:
    before = snapshot(world.repo)
    api = "http://127.0.0.1:9/api" if prefect == "unreachable" else refusing_prefect
    env = {"PREFECT_API_URL": api, "PREFECT_API_AUTH_STRING": "admin:wrong"}
    done = _devswarm(*[a.format(repo=world.repo, root=world.root, url=world.url) for a in RUN],
                     *[a.format(url=world.url) for a in LIVE], "--home", str(tmp_path / "data"),
                     env=env)  # fmt: skip
    assert done.returncode == 2, done.stderr
    [line] = done.stderr.strip().splitlines()
    says = "cannot reach the Prefect API" if prefect == "unreachable" else "refused its credentials"
    assert says in line and api in line
    assert "SQLite" not in done.stdout + done.stderr and "Traceback" not in done.stderr
    assert "admin:wrong" not in line
    assert not (tmp_path / "data" / "runs").exists()
    assert snapshot(world.repo) == before


def test_a_usage_error_in_a_real_process_is_one_line() -> None:
    done = _devswarm("run", "--workers", "many")
    assert done.returncode == 2
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("devswarm: Invalid value for '--workers'")


def test_a_bug_is_one_line_and_a_private_crash_log(tmp_path: Path) -> None:
    secret = "tok-crash-secret-0123456789"
    script = (
        "import sys\n"
        "from devswarm import cli\n"
        "@cli.app.command('boom')\n"
        "def boom() -> None:\n"
        f"    raise RuntimeError('broken with {secret}')\n"
        "sys.argv = ['devswarm', 'boom']\n"
        "cli.main()\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in CLEAN_ENV}
    home = tmp_path / "home"
    done = subprocess.run(
        [sys.executable, "-c", script],
        env={**env, "DEVSWARM_HOME": str(home), "MY_SERVICE_TOKEN": secret,
             "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 3
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("devswarm: internal error: RuntimeError: broken with [redacted]")
    log = Path(line.rsplit("(traceback in ", 1)[1].rstrip(")"))
    assert log.parent == home / "crashes" and log.name != "devswarm-error.log"
    assert stat.S_IMODE(log.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    text = log.read_text()
    assert "Traceback" in text and "RuntimeError" in text and secret not in text
    assert not Path("/tmp/devswarm-error.log").exists() or secret not in Path(
        "/tmp/devswarm-error.log"
    ).read_text(errors="replace")
