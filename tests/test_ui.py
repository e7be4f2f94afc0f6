"""The Prefect UI in a real browser: a user logs in to `devswarm server` with its auth string and
follows a real run (the offline demo: two planners, four workers, a conflict, the judge) through
the swarm run, its log, a work run and its log, the artifacts, the live progress and the summary's
link to the HTML report, in both UIs Prefect 3.9 ships (one server for both).

What is asserted is what the rendered pages say; screenshots go to the test's tmp folder.
Found on Prefect 3.9.1, for whoever extends this test:
- "/" opens v2 (PREFECT_SERVER_UI_V2_ENABLED defaults to true); v1 keeps its own paths (UI
  below); both keep the login in localStorage ("prefect-password").
- Run graphs are canvases (no page text). v1 drops every character outside printable ASCII
  (its bitmap font is ASCII only): "plan · cycle 1 · root" showed as "plan  cycle 1  root",
  which is why devswarm's run names are ASCII ("plan: cycle 1, root"; devswarm/ids.py).
- A run's Logs tab lists level, message (newlines kept), time and logger name; without logs
  v2 says "This run did not produce any logs.", v1 "This run didn't generate logs".
- A progress artifact's page says "Progress: 100%". A markdown link opens in the same tab in
  v2 and in a new tab (target=_blank) in v1, so the test follows the report link by its href.
- v1 ignores a tab in the URL it is opened with (?tab=Artifacts shows Logs), and a tab clicked
  while a busy page still renders may not switch: tabs are clicked until their content shows.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.browser import Browser, Page, chromium
from tests.test_server import _free_port, cli, fresh_server_folder

pytestmark = [
    pytest.mark.ui,
    pytest.mark.skipif(
        chromium() is None, reason="no chromium on PATH (apt-get install chromium; .ci/run does)"
    ),
]

# The demo's flow runs under the swarm run (the sub-planner runs under the root planner).
CHILDREN = [
    "plan: cycle 1, root",
    "work: c1.root.slugify",
    "work: c1.root.word-count",
    "work: c1.root.extras.caesar",
    "work: c1.root.extras.stats",
    "judge: cycle 1",
]
ARTIFACTS = [
    "plan-root",
    "plan-root-extras",
    "work-slugify",
    "work-word-count",
    "work-caesar",
    "work-stats",
    "judge-verdict",
    "swarm-summary",
    "swarm-progress",
    "swarm-board",
]
# What the logs say: the swarm run's cycle lines, a work run's steps, check and landing.
SWARM_LOG = ["cycle 1: 4 tasks planned", "c1.root.word-count: landed", "cycle 1: judge says done"]
WORK_LOG = [
    "worker on c1.root.word-count: Add textkit.word_count",
    "step 1: read_file path=",
    "step 4: run command='python -m unittest tests.test_count' -> exit code 0",
    "task check `python -m unittest tests.test_count`: passes",
    "landed c1.root.word-count: ",
    "new tip ",
    "ended landed as ",
]


@dataclass(frozen=True)
class UI:
    """Where one Prefect UI keeps its pages, and how it words what the test reads."""

    name: str
    entry: str  # a page that sends a visitor who is not logged in to the login form
    login: str
    runs: str
    flow_run: str  # prefix of a flow run's page; its id follows
    subflows_tab: str
    artifacts: str
    artifact: str  # prefix of one artifact's page
    subflow_count: str
    artifact_count: str


V2 = UI(
    name="v2",
    entry="/",  # Prefect 3.9 sends "/" to the v2 UI unless the browser chose v1
    login="/v2/login",
    runs="/v2/runs",
    flow_run="/v2/runs/flow-run/",
    subflows_tab="?tab=SubflowRuns",
    artifacts="/v2/artifacts",
    artifact="/v2/artifacts/artifact/",
    subflow_count="6 Subflow runs",
    artifact_count="10 artifacts",
)
V1 = UI(
    name="v1",
    entry="/runs",
    login="/login",
    runs="/runs",
    flow_run="/runs/flow-run/",
    subflows_tab="?tab=Subflow+Runs",
    artifacts="/artifacts",
    artifact="/artifacts/artifact/",
    subflow_count="6 Flow runs",
    artifact_count="10 Artifacts",
)


@dataclass(frozen=True)
class ServedRun:
    url: str  # the server's root, e.g. http://127.0.0.1:4200
    auth: str  # what the user types into the login form
    run_id: str


@pytest.fixture(scope="module")
def served_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedRun]:
    """`devswarm server start`, then the offline demo run against it as a user would start it
    (the server in DEVSWARM_HOME's folder, where the run finds it to register its report)."""
    with fresh_server_folder() as root:
        port = _free_port()
        home = {"DEVSWARM_HOME": str(root.parent)}
        started = cli("server", "start", "--port", str(port), env=home)
        assert started.returncode == 0, started.stdout + started.stderr
        auth = (root / "auth").read_text().strip()
        client = {
            **home,
            "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
            "PREFECT_API_AUTH_STRING": auth,
        }
        demo_dir = tmp_path_factory.mktemp("demo") / "demo"  # the demo makes its own folder
        demo = cli("demo", "--dir", str(demo_dir), env=client, timeout=240)
        assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
        run_id = re.search(r"^run (\S+): done", demo.stdout, re.M)
        assert run_id, demo.stdout[-3000:]
        yield ServedRun(f"http://127.0.0.1:{port}", auth, run_id.group(1))


@pytest.mark.parametrize("ui", [V2, V1], ids=lambda ui: ui.name)
def test_ui_shows_the_runs_story_its_artifacts_progress_and_report(
    served_run: ServedRun, ui: UI, tmp_path: Path
) -> None:
    run = served_run
    with Browser.launch(tmp_path / "screenshots") as page:
        log_in(page, run, ui)

        page.open(run.url + ui.runs)
        page.wait_for_text(f"swarm: {run.run_id}", *CHILDREN)
        page.screenshot(f"{ui.name}-runs")
        swarm = href(page, f"swarm: {run.run_id}")
        assert swarm.startswith(ui.flow_run), swarm

        # The swarm run: completed, its direct children listed by name, its log.
        page.open(run.url + swarm)
        text = page.click_until("Subflow Runs", ui.subflow_count, *CHILDREN)
        assert ui.subflows_tab in page.url, page.url
        assert "Completed" in text
        page.screenshot(f"{ui.name}-swarm-run")
        page.click_until("Logs", *SWARM_LOG)
        page.screenshot(f"{ui.name}-swarm-log")

        # A work run: its log tells its steps, its check and its landing; its worker report.
        page.open(run.url + swarm)
        page.click_until("Subflow Runs", "work: c1.root.word-count")
        page.click(text="work: c1.root.word-count")
        page.wait_for_text("work: c1.root.word-count", "Logs", "Artifacts")
        assert page.url.startswith(run.url + ui.flow_run), page.url
        page.click_until("Logs", *WORK_LOG)
        page.screenshot(f"{ui.name}-work-log")
        page.click_until("Artifacts", "work-word-count", "Worker report for c1.root.word-count")
        page.click(text="work-word-count")
        page.wait_for_text("task: c1.root.word-count", "status: landed", "landed commit:")
        assert page.url.startswith(run.url + ui.artifact), page.url
        page.screenshot(f"{ui.name}-work-report")

        # Every artifact of the run, each with its description.
        page.open(run.url + ui.artifacts)
        page.wait_for_text(ui.artifact_count, *ARTIFACTS, f"Summary of run {run.run_id}: done")
        page.screenshot(f"{ui.name}-artifacts")

        # The live progress reached 100 %.
        page.open(run.url + swarm)
        page.click_until("Artifacts", "swarm-progress", "swarm-board", "swarm-summary")
        page.click(text="swarm-progress")
        page.wait_for_text("Progress: 100%")
        page.screenshot(f"{ui.name}-progress")

        # The summary, and its link to the HTML report, served on loopback by devswarm server.
        page.open(run.url + swarm)
        page.click_until("Artifacts", "swarm-summary")
        page.click(text="swarm-summary")
        page.wait_for_text(f"Swarm run {run.run_id}", "status: done", "tasks_landed: 4")
        page.screenshot(f"{ui.name}-summary")
        report = href(page, "HTML report")
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/reports/[A-Za-z0-9_-]{43}", report), report
        page.open(report)  # v1 opens the link in a new tab: follow its href in this one
        page.wait_for_text(f"devswarm run {run.run_id}", "status", "done", "tasks landed", "4 of 4")
        page.screenshot(f"{ui.name}-report")
    shots = sorted(p.stem for p in (tmp_path / "screenshots").glob("*.png"))
    assert shots == sorted(
        f"{ui.name}-{name}"
        for name in ("login", "runs", "swarm-run", "swarm-log", "work-log", "work-report",
                     "artifacts", "progress", "summary", "report")
    ), shots  # fmt: skip


def log_in(page: Page, run: ServedRun, ui: UI) -> None:
    """Log in through the UI's own form, typing the server's auth string."""
    page.open(run.url + ui.entry)
    page.wait_for_text("Login")
    assert page.url.startswith(run.url + ui.login), page.url
    page.screenshot(f"{ui.name}-login")
    page.type_into("input[type=password]", run.auth)
    page.click(text="Login")
    page.wait_for_text("Dashboard", "Deployments")


def href(page: Page, text: str) -> str:
    """The href of the link whose visible text is `text`."""
    found = [link["href"] for link in page.links() if link["text"] == text]
    assert found, f"no link {text!r} on {page.url}"
    return found[0]
