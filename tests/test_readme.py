"""The README's examples work as written."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

README = (Path(__file__).parent.parent / "README.md").read_text()


def test_first_code_block_is_exactly_the_two_commands() -> None:
    first = re.search(r"```\n(.*?)```", README, re.S).group(1).strip().splitlines()
    assert len(first) == 2
    assert first[0].endswith("devswarm demo")
    assert "pytest" in first[1]


def test_settings_file_example_is_a_valid_config() -> None:
    from devswarm.config import SwarmConfig

    block = re.search(r"```toml\n(.*?)```", README, re.S).group(1)
    data = tomllib.loads(block)
    cfg = SwarmConfig.model_validate({"goal": "g", "repo": ".", **data})
    assert cfg.models.worker == "gpt-4.1-mini"
    assert cfg.price("gpt-4.1-mini").cost(1_000_000, 0, 0) == 0.4
    assert cfg.limits.max_steps == 60 and cfg.budget.max_cost_usd == 50.0
