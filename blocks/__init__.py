"""Prefect blocks that configure devswarm, and their loading into settings layers."""

from blocks.loading import load, settings_from_blocks
from blocks.provider import ModelProvider
from blocks.repository import Repository
from blocks.warehouse import Warehouse

__all__ = ["ModelProvider", "Repository", "Warehouse", "load", "settings_from_blocks"]
