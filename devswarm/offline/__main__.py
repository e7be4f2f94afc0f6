"""`python -m devswarm.offline --scenario FILE`: serve a scenario until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from devswarm.errors import UserError
from devswarm.offline.server import serve_forever


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and serve; 2 with one error line for a bad scenario."""
    parser = argparse.ArgumentParser(
        prog="python -m devswarm.offline",
        description="Offline OpenAI-compatible model server with scripted replies.",
    )
    parser.add_argument("--scenario", type=Path, required=True, help="scenario JSON file")
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: any free)")
    parser.add_argument("--log", type=Path, default=None, help="append a JSONL request log here")
    args = parser.parse_args(argv)
    try:
        serve_forever(args.scenario, port=args.port, log_path=args.log)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
