"""Safe by default, wired into the run (#14): the setup sandboxed with its cache folder and opt-in
network, --pass-env reaching agents' commands, the data and server folders hidden, the key out
of the environment, secrets redacted from what is kept, and --no-sandbox recorded and shown."""

from __future__ import annotations

import base64
import http.server
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console

from devswarm.config import Models, SwarmConfig
from devswarm.offline.server import ModelServer, Scenario
from devswarm.records import read_records
from devswarm.run.cycles import start_run
from devswarm.run.run import Run
from devswarm.sandbox.probe import sandbox_works
from devswarm.settings import api_key_from_env
from tests.conftest import chat_requests, make_repo
from tests.helpers import JUDGE_DONE, plan_reply, rows, serving, task, write_and_finish
from tests.test_worker import KEY, calls, finish, planned, running, tc, tool_outputs, work

needs_bwrap = pytest.mark.skipif(not sandbox_works(), reason="bubblewrap does not work here")


@pytest.fixture
def outside() -> Iterator[Path]:
    """A folder outside /tmp (inside the sandbox /tmp is a private tmpfs, so a write there would
    vanish rather than fail)."""
    path = Path(tempfile.mkdtemp(dir="/var/tmp", prefix="devswarm-test-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def loopback() -> Iterator[str]:
    class Hello(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"hello")

        def log_message(self, *args: object) -> None:
            pass

    with serving(Hello) as url:
        yield f"{url}/"


def _config(tmp_path: Path, repo: Path, **options: object) -> SwarmConfig:
    return SwarmConfig(
        goal="Test goal.",
        repo=repo,
        base_url=options.pop("base_url", "http://127.0.0.1:9/v1"),  # unless given: never called
        models=Models.single("offline-model"),
        home=options.pop("home", tmp_path / "data"),
        run_id=options.pop("run_id", "safe"),
        **options,  # type: ignore[arg-type]
    )


def _setup(run: Run) -> str:
    """The run's setup in a fresh worktree at the tip: its output, or its failure's."""
    with run.workspace.worktree("setup-probe", run.workspace.tip()) as wt:
        result = run.checks.setup(wt, run.workspace.tip())
        assert result is not None
        return ("passed\n" if result.passed else "failed\n") + result.output


# -- setup -------------------------------------------------------------------------------------


@needs_bwrap
def test_setup_writes_only_its_worktree_and_the_cache_folder(tmp_path: Path, outside: Path) -> None:
    repo = make_repo(tmp_path / "user", {"a.txt": "a\n"})
    setup = (
        f"touch {outside}/escaped; echo kept > made.txt; "
        'echo cached > "$XDG_CACHE_HOME/stamp"; echo "pip=$PIP_CACHE_DIR npm=$npm_config_cache"'
    )
    run = Run(_config(tmp_path, repo, setup=setup))
    try:
        out = _setup(run)
        cache = run.checks.cache
    finally:
        run.close()
    assert cache == tmp_path / "data" / "cache" / run.workspace.clone.parent.name
    assert out.startswith("passed\n") and "Read-only file system" in out
    assert f"pip={cache}/pip npm={cache}/npm" in out
    assert not (outside / "escaped").exists()
    assert (cache / "stamp").read_text() == "cached\n"


@needs_bwrap
@pytest.mark.parametrize("network", [False, True], ids=["default", "setup-network"])
def test_setup_reaches_the_network_only_with_setup_network(
    tmp_path: Path, loopback: str, network: bool
) -> None:
    repo = make_repo(tmp_path / "user", {"a.txt": "a\n"})
    fetch = (
        f"python -c 'import urllib.request; print(urllib.request.urlopen(\"{loopback}\").read())'"
    )
    run = Run(_config(tmp_path, repo, setup=fetch, setup_network=network))
    try:
        out = _setup(run)
    finally:
        run.close()
    if network:
        assert out == "passed\nb'hello'\n"
    else:
        assert out.startswith("failed\n") and "hello" not in out


# -- environment, hidden folders ---------------------------------------------------------------


@pytest.mark.parametrize("sandbox", [pytest.param(True, marks=needs_bwrap), False])
def test_pass_env_reaches_agents_commands_and_checks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sandbox: bool
) -> None:
    monkeypatch.setenv("MY_TOOL_HOME", "/opt/tool")
    monkeypatch.setenv("NOT_PASSED", "private")
    repo = make_repo(tmp_path / "user", {"a.txt": "a\n"})
    show = 'echo "${MY_TOOL_HOME:-unset} ${NOT_PASSED:-unset}" > seen.txt; cat seen.txt'
    scenario = {
        "agents": [{"match": "worker/*", "steps": [calls(tc("run", command=show)), finish()]}]
    }
    with running(tmp_path, scenario, repo, pass_env=["MY_TOOL_HOME"], sandbox=sandbox) as (run, _):
        t = planned(run, "x")
        report = work(run, t)
        with run.workspace.worktree("check", run.workspace.tip()) as wt:
            check = run.checks.run(show, wt)
        outputs = tool_outputs(run, t)
    assert report.status == "landed"
    assert outputs[0] == "exit code 0\n/opt/tool unset\n"
    assert check.output == "/opt/tool unset\n"


@needs_bwrap
def test_the_data_and_server_folders_are_hidden_from_agents_and_checks(
    tmp_path: Path, outside: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # DEVSWARM_HOME outside /tmp: `devswarm server`'s folder is <it>/server; --home elsewhere.
    monkeypatch.setenv("DEVSWARM_HOME", str(outside / "devswarm"))
    server = outside / "devswarm" / "server"
    server.mkdir(parents=True)
    (server / "auth").write_text("admin:server-auth-secret\n")
    home = outside / "home"
    (home / "secrets").mkdir(parents=True)
    (home / "secrets" / "note").write_text("home-secret\n")
    repo = make_repo(tmp_path / "user", {"a.txt": "a\n"})
    peek = f"cat {server}/auth {home}/secrets/note; ls {home}; echo done"
    scenario = {
        "agents": [{"match": "worker/*", "steps": [calls(tc("run", command=peek)), finish()]}]
    }
    with running(tmp_path, scenario, repo, home=home) as (run, _):
        assert server in run.hidden and home in run.hidden
        t = planned(run, "x")
        work(run, t)
        with run.workspace.worktree("check", run.workspace.tip()) as wt:
            check = run.checks.run(peek, wt)
        [seen] = tool_outputs(run, t)[:1]
    for out in (seen, check.output):
        assert "done" in out
        assert "server-auth-secret" not in out and "home-secret" not in out
        assert "secrets" not in out.split("done")[0].replace("/secrets/note", "")


def test_the_key_leaves_the_environment_once_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    assert api_key_from_env().get_secret_value() == KEY
    assert "OPENAI_API_KEY" not in os.environ

    # The flow's start reads it the same way when the CLI handed nothing over.
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    repo = make_repo(tmp_path / "user", {"a.txt": "a\n"})
    # The start probes the endpoint with the key it read: a real (offline) server answers.
    with ModelServer(Scenario.from_data({"agents": []})) as server:
        run = start_run(_config(tmp_path, repo, run_id="key-env", base_url=server.url))
    try:
        assert run.config.api_key.get_secret_value() == KEY
        assert "OPENAI_API_KEY" not in os.environ
        assert KEY not in json.dumps(run.env())
    finally:
        run.close()


# -- redaction -----------------------------------------------------------------------------------


def _encodings(secret: str) -> list[str]:
    return [secret, secret[::-1], base64.b64encode(secret.encode()).decode()]


@pytest.mark.parametrize("sandbox", [pytest.param(True, marks=needs_bwrap), False])
def test_secrets_in_tool_output_are_redacted_from_everything_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sandbox: bool
) -> None:
    # A token the user passes to agents on purpose, and the key in a file of the repository.
    token = "ghp-passed-token-0123456789"
    monkeypatch.setenv("MY_SERVICE_TOKEN", token)
    repo = make_repo(tmp_path / "user", {"a.txt": "a\n", "env.txt": f"OPENAI_API_KEY={KEY}\n"})
    leak = (
        'echo "$MY_SERVICE_TOKEN"; echo "$MY_SERVICE_TOKEN" | rev; '
        'printf %s "$MY_SERVICE_TOKEN" | base64; cat env.txt'
    )
    steps = [
        calls(tc("run", command=leak)),
        calls(tc("read_file", path="env.txt")),
        calls(tc("write_file", path="note.txt", content=f"token {token}")),
        finish(),
    ]
    scenario = {"agents": [{"match": "worker/*", "steps": steps}]}
    with running(tmp_path, scenario, repo, pass_env=["MY_SERVICE_TOKEN"], sandbox=sandbox) as (
        run,
        log,
    ):
        t = planned(run, "x")
        report = work(run, t)
        with run.workspace.worktree("check", run.workspace.tip()) as wt:
            check = run.checks.run(leak, wt)
        run.records.import_now()
        db = run.store_path
        transcript = run.transcript(report.agent_id).read_text()
        records = run.agent_log(report.agent_id).path.read_text()
    outputs = rows(db, "SELECT output_excerpt || arguments FROM tool_calls ORDER BY step")
    assert report.status == "landed" and len(outputs) == 4
    assert "[redacted]" in outputs[0][0] and "[redacted]" in check.output
    kept = {
        "transcript": transcript,
        "records": records,
        "duckdb": json.dumps(outputs),
        # What the model is sent of the tools' results (it wrote the token itself, in
        # write_file's arguments: that is its own, and redacted only in the records).
        "model requests": json.dumps(
            [m for r in chat_requests(log) for m in r["request"]["messages"] if m["role"] == "tool"]
        ),
        "check": check.output,
    }
    for where, text in kept.items():
        for secret in (token, KEY):
            for form in _encodings(secret):
                assert form not in text, (where, form)


# -- --no-sandbox, recorded and shown ------------------------------------------------------------


def test_a_sandboxed_run_records_it(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "user", {"a.txt": "a\n"})
    run = Run(_config(tmp_path, repo, sandbox=sandbox_works()))
    try:
        run.record_run("running", 0)
    finally:
        run.close()
    [record] = [r for r in read_records(run.log.path) if r["kind"] == "run"]
    assert record["sandbox"] is sandbox_works()
    assert run.sandbox.startswith("on (" if sandbox_works() else "off (")


def test_the_live_view_shows_a_run_without_sandbox(tmp_path: Path) -> None:
    from devswarm.live import _panel

    repo = make_repo(tmp_path / "user", {"a.txt": "a\n"})
    run = Run(_config(tmp_path, repo, sandbox=False, run_id="live-off"))
    console = Console(record=True, width=200)
    try:
        console.print(_panel(0.0))
    finally:
        run.close()
    row = next(line for line in console.export_text().splitlines() if "live-off" in line)
    assert "OFF" in row


def test_no_sandbox_is_in_the_runs_row_the_summary_and_its_artifact(
    swarm_run, tmp_path: Path
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from devswarm.report.text import summary_lines

    repo = make_repo(tmp_path / "user", {"README.md": "x\n"})
    scenario = {
        "agents": [
            {"match": "planner/*", "steps": [plan_reply(task("notes", ["NOTES.md"]))]},
            {"match": "worker/*", "steps": write_and_finish("NOTES.md", "notes\n")},
            JUDGE_DONE,
        ]
    }
    summary, _ = swarm_run(scenario, repo, sandbox=False)
    assert summary["status"] == "done" and summary["sandbox"] == "off (--no-sandbox)"
    db = tmp_path / "data" / "devswarm.duckdb"
    assert rows(db, "SELECT sandbox FROM runs WHERE run_id = ?", summary["run_id"]) == [(False,)]
    assert "  sandbox        off (--no-sandbox)" in summary_lines(summary)
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["swarm-summary"]))
        )
    [data] = [str(a.data) for a in artifacts if summary["run_id"] in str(a.data)]
    assert "No sandbox" in data and "read the API key" in data


# -- Prefect's temporary server --------------------------------------------------------------------

TEMPORARY_SERVER = """
import base64, os, httpx
from devswarm.commands.common import quiet_prefect
quiet_prefect()  # what the CLI does before Prefect is imported
from prefect import flow
from prefect.server.api.server import SubprocessASGIServer

@flow
def hello() -> int:
    return 1

assert hello() == 1  # the run itself went through with the auth string
url = SubprocessASGIServer().api_url
token = base64.b64encode(os.environ["PREFECT_API_AUTH_STRING"].encode()).decode()
bare = httpx.post(f"{url}/flows/filter", json={})
given = httpx.post(f"{url}/flows/filter", json={}, headers={"Authorization": f"Basic {token}"})
print(url, bare.status_code, given.status_code)
"""


@pytest.mark.slow
@pytest.mark.parametrize(
    "inherited",
    [{}, {"PREFECT_SERVER_API_AUTH_STRING": "inherited-0123456789"}],
    ids=["fresh", "server-string-inherited"],  # from a parent process that set it up
)
def test_the_temporary_prefect_server_has_an_auth_string_of_its_own(
    tmp_path: Path, inherited: dict[str, str]
) -> None:
    import subprocess
    import sys

    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PREFECT_API_URL", "PREFECT_API_AUTH_STRING", "PREFECT_SERVER_API_AUTH_STRING")
    }
    done = subprocess.run(
        [sys.executable, "-c", TEMPORARY_SERVER],
        env={**env, "PREFECT_HOME": str(tmp_path / "prefect"), **inherited,
             "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "240",  # a loaded machine
             "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    url, bare, given = done.stdout.split()[-3:]
    assert url.startswith("http://127.0.0.1:")  # loopback only
    assert (bare, given) == ("401", "200")


# -- hot files under concurrency ---------------------------------------------------------------------


def test_hot_files_count_every_conflict_when_workers_report_and_save_at_once(
    tmp_path: Path,
) -> None:
    from collections import Counter
    from concurrent.futures import ThreadPoolExecutor

    from devswarm.run.state import RunState

    repo = make_repo(tmp_path / "user", {"a.txt": "a\n"})
    run = Run(_config(tmp_path, repo, run_id="hot"))
    files = [f"src/f{i}.py" for i in range(40)]

    def worker(n: int) -> Counter[str]:
        mine: Counter[str] = Counter()
        for i in range(300):
            batch = [files[(n * 7 + i) % len(files)], files[(n + i * 3) % len(files)]]
            run.progress.conflicted(batch)
            mine.update(batch)
            if i % 25 == 0:
                run.save_state()  # as the flow and planners do while workers report
        return mine

    try:
        with ThreadPoolExecutor(8) as pool:
            expected = sum(pool.map(worker, range(8)), Counter())
        run.save_state()
    finally:
        run.close()
    assert run.progress.hot() == dict(expected)
    assert RunState.load(run.dir / "state.json").hot_files == dict(expected)
