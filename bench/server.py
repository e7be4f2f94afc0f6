"""Bench: `devswarm server` start times and N concurrent no-op worker-like subflows on it.

    python bench/server.py                 # fresh server in a temp folder: cold start, warm start,
                                           # 50 subflows, stop
    python bench/server.py --subflows 200
    PREFECT_API_URL=... PREFECT_API_AUTH_STRING=... python bench/server.py --subflows-only

Prints one line per measurement and exits non-zero if any subflow did not complete.
The subflows start from threads like the swarm's workers (tasks/subflows.py), each its own flow run
linked to the parent, so every start is a write to the server's database.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_subflows(n: int) -> tuple[int, float]:
    """Run n concurrent no-op subflows under one parent flow; (completed, seconds)."""
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId

    from tasks.subflows import map_concurrently

    @flow(name="work", flow_run_name="work · noop-{i}", persist_result=False)
    def noop(i: int) -> int:
        return i

    @flow(name="swarm", flow_run_name="swarm · bench-{n}", persist_result=False)
    def parent(n: int) -> int:
        done = 0
        for _i, fut in map_concurrently(noop, range(n), n):
            fut.result()
            done += 1
        return done

    began = time.monotonic()
    state = parent(n, return_state=True)
    seconds = time.monotonic() - began
    if not state.is_completed():
        return 0, seconds
    with get_client(sync_client=True) as client:
        children = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                parent_flow_run_id=FlowRunFilterParentFlowRunId(
                    any_=[state.state_details.flow_run_id]
                )
            ),
            limit=n + 10,
        )
    return sum(1 for c in children if c.state and c.state.is_completed()), seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subflows", type=int, default=50)
    parser.add_argument(
        "--subflows-only", action="store_true", help="use the server in PREFECT_API_URL"
    )
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    if args.subflows_only:
        done, seconds = run_subflows(args.subflows)
        print(f"{done}/{args.subflows} concurrent no-op subflows completed in {seconds:.1f} s")
        return 0 if done == args.subflows else 1

    import subprocess

    from devswarm import server

    # Under /tmp, never under root's home (see devswarm/server/folder.py).
    root = Path(tempfile.mkdtemp(prefix="devswarm-bench-", dir="/tmp")) / "server"
    port = free_port()
    try:
        state, _ = server.start(root, port=port)
        print(f"cold start (initdb, migrations): {state.start_seconds:.1f} s")
        server.stop(root)
        state, _ = server.start(root, port=port)
        print(f"warm start: {state.start_seconds:.1f} s")
        env = {
            **os.environ,
            "PREFECT_API_URL": state.api_url,
            "PREFECT_API_AUTH_STRING": server.read_auth(root) or "",
        }
        # A separate process, so this one's Prefect settings never point at two servers.
        return subprocess.call(
            [sys.executable, __file__, "--subflows-only", "--subflows", str(args.subflows)], env=env
        )
    finally:
        server.stop(root)
        shutil.rmtree(root.parent, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
