"""Prefect blocks that configure devswarm."""

from blocks.provider import ModelProvider
from blocks.repository import Repository
from blocks.warehouse import Warehouse

__all__ = ["ModelProvider", "Repository", "Warehouse"]
