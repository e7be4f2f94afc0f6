"""The environment of an agent's command: what it may see of ours, and the settings we add."""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterable, Mapping

# Variable names that hint at a credential, matched anywhere in the name (case-insensitive).
# AUTH but not AUTHOR: GIT_AUTHOR_NAME is an identity, not a credential.
SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|PASSWD|AUTH(?!OR)|CREDENTIAL", re.IGNORECASE)
# Whole families of configuration an agent's command has no business seeing.
SECRET_NAME_PREFIXES = ("OPENAI_", "PREFECT_", "ANTHROPIC_", "AWS_", "DEVSWARM_")
# Variables that point git at another repository: inherited from a hook or a test harness,
# they would make an agent's `git` act on the wrong repository.
GIT_LOCATION_VARS = (
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_COMMON_DIR",
    "GIT_NAMESPACE",
)
# Configuration smuggled to git through the environment: dropped, so ours below is the only one.
GIT_CONFIG_VARS = ("GIT_CONFIG_PARAMETERS", "GIT_CONFIG_COUNT")
GIT_CONFIG_PREFIXES = ("GIT_CONFIG_KEY_", "GIT_CONFIG_VALUE_")
# Git config for every command: no git transport to a local path. Without bubblewrap, the
# private clone's `origin` is the user's repository, and `git push origin ...` would otherwise
# write the user's branches (with bubblewrap the user's repository is read-only anyway).
AGENT_GIT_CONFIG = {"protocol.file.allow": "never"}


def scrubbed_env(
    base: Mapping[str, str] | None = None, *, secrets: Iterable[str] = ()
) -> dict[str, str]:
    """The environment for an agent's command: `base` (default os.environ) minus anything secret.

    Drops variables whose name looks like a credential or belongs to devswarm/model/cloud
    configuration, variables that redirect git to another repository or carry git config, and
    any variable whose value contains one of `secrets`. Sets AGENT_GIT_CONFIG for git (no push
    or fetch to a local path, such as the user's repository). Puts the directory of the running interpreter first on
    PATH so `python` is the one devswarm runs on.
    """
    source = os.environ if base is None else base
    needles = [s for s in secrets if s]
    env: dict[str, str] = {}
    for name, value in source.items():
        upper = name.upper()
        if SECRET_NAME.search(name):
            continue
        if upper.startswith(SECRET_NAME_PREFIXES) or upper in GIT_LOCATION_VARS:
            continue
        if upper in GIT_CONFIG_VARS or upper.startswith(GIT_CONFIG_PREFIXES):
            continue
        if any(n in value for n in needles):
            continue
        env[name] = value
    bindir = os.path.dirname(sys.executable)
    rest = [p for p in env.get("PATH", os.defpath).split(os.pathsep) if p and p != bindir]
    env["PATH"] = os.pathsep.join([bindir, *rest])
    env["GIT_CONFIG_COUNT"] = str(len(AGENT_GIT_CONFIG))
    for i, (key, value) in enumerate(AGENT_GIT_CONFIG.items()):
        env[f"GIT_CONFIG_KEY_{i}"], env[f"GIT_CONFIG_VALUE_{i}"] = key, value
    # No command may wait for a password: there is nobody to type it.
    env["GIT_TERMINAL_PROMPT"] = "0"
    # __pycache__ folders would appear as untracked files in the worktree and could be landed.
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    # stdout and stderr share one file; unbuffered Python keeps a traceback after the prints
    # that came before it instead of ahead of them.
    env["PYTHONUNBUFFERED"] = "1"
    return env
