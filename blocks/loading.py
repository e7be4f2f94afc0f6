"""Saved blocks → plain settings layers (devswarm.settings merges them with files and flags)."""

from __future__ import annotations

from typing import Any

from pydantic import SecretStr

from blocks.provider import ModelProvider
from blocks.repository import Repository
from blocks.warehouse import Warehouse
from devswarm.errors import UserError


def load(block_type: Any, name: str) -> Any:
    """A saved block document, or one line saying how to create it."""
    try:
        return block_type.load(name)
    except ValueError as exc:  # Prefect: "Unable to find block document named ..."
        raise UserError(
            f"no {block_type._block_type_name} block named {name!r}: create it with devswarm init"
        ) from exc


def settings_from_blocks(
    repository: str | None, provider: str | None, warehouse: str | None
) -> tuple[dict[str, Any], SecretStr | None]:
    """The settings layer of the named blocks, and the provider block's key (None if unset)."""
    settings: dict[str, Any] = {}
    key = None
    if repository:
        r = load(Repository, repository)
        settings.update(repo=r.path, branch=r.branch, check=r.check, setup=r.setup)
    if provider:
        p = load(ModelProvider, provider)
        settings.update(
            base_url=p.base_url,
            models=p.models().model_dump(),
            prices={m: price.model_dump() for m, price in p.prices.items()},
        )
        key = p.api_key if p.api_key.get_secret_value() else None
    if warehouse:
        w = load(Warehouse, warehouse)
        settings.update(home=w.home, db=w.db)
    return {k: v for k, v in settings.items() if v is not None}, key
