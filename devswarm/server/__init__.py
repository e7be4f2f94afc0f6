"""devswarm's own Prefect server: PostgreSQL-backed, on 127.0.0.1, with basic auth.

The room's door: callers use these names; the modules behind it are
`folder` (the server folder and its files), `postgres` (the embedded database),
`prefect` (Prefect's server process, health, what a backend holds) and
`report_http` (run reports served on loopback), `reports` (their registrations) and
`lifecycle` (start, stop, status).
"""

from devswarm.server.folder import (
    ROOT_DEFAULT_DIR,
    ServerPaths,
    ServerState,
    check_location,
    read_auth,
    read_state,
    server_dir,
)
from devswarm.server.lifecycle import DEFAULT_PORT, start, status, stop
from devswarm.server.postgres import PG_SYSTEM_USER
from devswarm.server.prefect import SQLITE_WORKER_CAP, database_backend, healthy, worker_cap
from devswarm.server.report_http import report_server_up, report_url

__all__ = [
    "DEFAULT_PORT",
    "PG_SYSTEM_USER",
    "ROOT_DEFAULT_DIR",
    "SQLITE_WORKER_CAP",
    "ServerPaths",
    "ServerState",
    "check_location",
    "database_backend",
    "healthy",
    "read_auth",
    "read_state",
    "report_server_up",
    "report_url",
    "server_dir",
    "start",
    "status",
    "stop",
    "worker_cap",
]
