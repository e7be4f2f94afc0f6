"""The server folder: where it lives, what it holds, and reading and writing its files.

Layout of the server folder (`server_dir()`):

    auth            basic-auth string "admin:<random>", 0600 (clients: PREFECT_API_AUTH_STRING)
    server.json     state of the running server (pids, URLs, socket folder), 0600
    prefect.log     the Prefect server's output
    reports/        run reports registered for the report server: <token>.json → report path,
                    0700 (a token is the only key to a report's URL)
    reports.log     the report server's output (never a URL: URLs hold tokens)
    prefect/        PREFECT_HOME of the server process
    pgdata/         the PostgreSQL cluster (0700, owned by the database's system user)
    pgrun/          the database's unix socket, 0700: only its owner (and root) can connect,
                    which matters because PostgreSQL trusts local connections and Prefect's
                    block documents (API keys included) are only as safe as that database
    pg/             as root only: a copy of the PostgreSQL binaries the system user can reach

PostgreSQL refuses to run as root, so as root it runs as a system user that must be able to
traverse every parent folder of the server folder: we add o+x (never o+r) where it is missing
and refuse a folder under root's home.
"""

from __future__ import annotations

import os
import pwd
import stat
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel

from devswarm.config import default_home
from devswarm.errors import UserError

# Where the server lives when root runs devswarm without DEVSWARM_HOME: root's default data
# folder is under /root, which the PostgreSQL system user could only reach if we opened it up.
ROOT_DEFAULT_DIR = Path("/var/lib/devswarm/server")


class ServerState(BaseModel):
    """What `start` leaves in server.json for `status`, `stop` and `devswarm run`."""

    pid: int  # the Prefect server process (leader of its own session)
    url: str  # http://127.0.0.1:PORT — the UI
    api_url: str  # PREFECT_API_URL for clients
    port: int
    database: str = "postgresql"
    socket_dir: str
    started_at: str
    start_seconds: float = 0.0
    report_server_pid: int | None = None  # serves run reports on loopback (report_http.py)
    report_server_port: int | None = None

    @property
    def reports_url(self) -> str | None:
        """Where the report server serves registered reports: this URL + a token."""
        if self.report_server_port is None:
            return None
        return f"http://127.0.0.1:{self.report_server_port}/reports/"


@dataclass(frozen=True)
class ServerPaths:
    """Every file and folder of one server folder."""

    root: Path

    @property
    def auth(self) -> Path:
        return self.root / "auth"

    @property
    def state(self) -> Path:
        return self.root / "server.json"

    @property
    def log(self) -> Path:
        return self.root / "prefect.log"

    @property
    def prefect_home(self) -> Path:
        return self.root / "prefect"

    @property
    def pgdata(self) -> Path:
        return self.root / "pgdata"

    @property
    def pgrun(self) -> Path:
        return self.root / "pgrun"

    @property
    def pglog(self) -> Path:
        return self.pgdata / "postgres.log"

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    @property
    def report_log(self) -> Path:
        return self.root / "reports.log"

    @property
    def lock(self) -> Path:
        return self.root / ".lock"


def server_dir(home: Path | None = None) -> Path:
    """The server folder: <home>/server, <$DEVSWARM_HOME>/server, or as root /var/lib/devswarm/server."""
    if home is not None:
        return Path(home).expanduser().resolve() / "server"
    if os.environ.get("DEVSWARM_HOME") or os.geteuid() != 0:
        return default_home() / "server"
    return ROOT_DEFAULT_DIR


def server_paths(root: Path | None) -> ServerPaths:
    """The paths of `root`, or of the default server folder."""
    return ServerPaths((root or server_dir()).expanduser().resolve())


def check_location(root: Path) -> None:
    """Refuse a folder whose socket path is too long, and as root one under root's home
    (PostgreSQL's system user would need it opened to others)."""
    if len(str(ServerPaths(root).pgrun / ".s.PGSQL.5432")) > 107:  # sun_path: 108 bytes
        raise UserError(
            f"server folder {root} is too long a path for a unix socket; pick a shorter one"
        )
    if os.geteuid() != 0:
        return
    home = Path(pwd.getpwuid(0).pw_dir).resolve()
    if home != Path("/") and root.resolve().is_relative_to(home):
        raise UserError(
            f"server folder {root} is under root's home {home}, which PostgreSQL's system user "
            f"would need to traverse; use --dir or DEVSWARM_HOME elsewhere (default {ROOT_DEFAULT_DIR})"
        )


def prepare_root(root: Path) -> list[Path]:
    """Create the folder (private) and, as root, let the database's system user traverse to it.

    Returns the parent folders we made traversable.
    """
    root.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        root.chmod(0o700)
        return []
    root.chmod(0o711)  # traversable, not listable: the system user needs pgdata/, pgrun/, pg/
    opened = []
    for parent in root.parents:
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            parent.chmod(mode | stat.S_IXOTH)  # traverse only; never read
            opened.append(parent)
    return opened


def read_state(root: Path) -> ServerState | None:
    """The state file's content, if there is one (the server may have died since)."""
    path = ServerPaths(root).state
    try:
        return ServerState.model_validate_json(path.read_text())
    except (OSError, ValueError):
        return None


def read_auth(root: Path | None = None) -> str | None:
    """The server's basic-auth string ("admin:<secret>"), if the folder has one."""
    try:
        return ServerPaths(root or server_dir()).auth.read_text().strip() or None
    except OSError:
        return None


def write_private(path: Path, text: str) -> None:
    """Write `path` readable by its owner only, atomically (readers never see half a file)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def server_env() -> dict[str, str]:
    """Our environment without model keys or a client's Prefect target (the server has its own)."""
    drop = {"OPENAI_API_KEY", "PREFECT_API_URL", "PREFECT_API_KEY", "PREFECT_API_AUTH_STRING"}
    return {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("PG")}


def log_tail(path: Path, lines: int = 1) -> str:
    """The last non-blank lines of a log, joined on one line (for a one-line error)."""
    try:
        text = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return " | ".join(text[-lines:])[:300]
