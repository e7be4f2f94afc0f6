"""The sandbox's cost per command: run_command with the sandbox on and off, same commands.

For `true` and `python -c pass`, N commands each way (interleaved, so load on the machine hits
both alike), with each bubblewrap found here (the system's, the bundled one). Prints the
median and mean wall time per command and one `ratio: ...` line (sandbox on ÷ off, `true`,
the first bubblewrap). "Off" is the explicit opt-out: the command still runs under the
subreaper that kills what it leaves behind. "Bare" is `bash -c` alone, for scale.

    python bench/sandbox.py [-n 200]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from devswarm.sandbox import bwrap  # noqa: E402
from devswarm.sandbox.command import run_command  # noqa: E402
from devswarm.sandbox.env import command_env  # noqa: E402
from devswarm.sandbox.probe import probe  # noqa: E402

COMMANDS = ("true", "python -c pass")


def _time(command: str, cwd: Path, *, sandbox: bool) -> float:
    started = time.perf_counter()
    result = run_command(command, cwd, sandbox=sandbox)
    if result.exit_code != 0:
        raise SystemExit(f"{command!r} failed (sandbox={sandbox}): {result.output}")
    return (time.perf_counter() - started) * 1000


def _bare(command: str, cwd: Path) -> float:
    """A plain `bash -c` with no sandbox and no subreaper: the floor."""
    started = time.perf_counter()
    subprocess.run(["bash", "-c", command], cwd=cwd, env=command_env(), check=True)
    return (time.perf_counter() - started) * 1000


def _kinds() -> list[str]:
    found = []
    for kind, path in (("system", bwrap.system_bwrap()), ("bundled", bwrap.bundled_bwrap())):
        if path and probe(bwrap.Bwrap(path, kind)).works:
            found.append(kind)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=200, help="commands per kind and mode")
    n = parser.parse_args().n
    kinds = _kinds()
    if not kinds:
        raise SystemExit("no working bubblewrap here: nothing to compare")
    keep = bwrap.system_bwrap, bwrap.bundled_bwrap
    ratio = None
    with tempfile.TemporaryDirectory(prefix="devswarm-bench-sandbox-") as tmp:
        cwd = Path(tmp)
        for kind in kinds:
            # Make this kind the one found: hide the other.
            bwrap.system_bwrap = keep[0] if kind == "system" else (lambda: None)
            bwrap.bundled_bwrap = keep[1] if kind == "bundled" else (lambda: None)
            for command in COMMANDS:
                on: list[float] = []
                off: list[float] = []
                bare: list[float] = []
                for _ in range(n):
                    on.append(_time(command, cwd, sandbox=True))
                    off.append(_time(command, cwd, sandbox=False))
                    bare.append(_bare(command, cwd))
                med_on, med_off = statistics.median(on), statistics.median(off)
                print(
                    f"{kind:8} {command!r:18} on: median {med_on:6.1f} ms, mean "
                    f"{statistics.fmean(on):6.1f} | off: median {med_off:6.1f} ms, mean "
                    f"{statistics.fmean(off):6.1f} | bare bash: median "
                    f"{statistics.median(bare):6.1f} ms | on ÷ off ×{med_on / med_off:.2f}"
                )
                if ratio is None:
                    ratio = med_on / med_off
    bwrap.system_bwrap, bwrap.bundled_bwrap = keep
    print(f"ratio: {ratio:.2f} (sandbox on ÷ off, median per `true` command, {kinds[0]} bwrap)")


if __name__ == "__main__":
    main()
