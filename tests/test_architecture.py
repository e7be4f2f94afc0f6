"""The house's shape: arrows point down, no import cycles, no room too big, docs true to code."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from tests.layers import violations

ROOT = Path(__file__).resolve().parents[1]


def test_imports_point_down_and_never_loop() -> None:
    assert violations(ROOT) == []


def _copy(tmp_path: Path) -> Path:
    for package in ("devswarm", "flows", "tasks", "blocks"):
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("demo"))
    return tmp_path


def test_an_upward_import_inside_a_function_is_caught(tmp_path: Path) -> None:
    root = _copy(tmp_path)
    ids = root / "devswarm" / "ids.py"
    ids.write_text(ids.read_text() + "\n\ndef _planted():\n    from flows.swarm import swarm\n")
    found = violations(root)
    assert any("core module devswarm.ids imports flows module flows.swarm" in v for v in found)


def test_prefect_in_the_core_is_caught(tmp_path: Path) -> None:
    root = _copy(tmp_path)
    ids = root / "devswarm" / "schemas.py"
    ids.write_text(ids.read_text() + "\n\ndef _planted():\n    import prefect.runtime\n")
    assert any("the core imports prefect.runtime" in v for v in violations(root))


def test_a_cycle_is_caught(tmp_path: Path) -> None:
    root = _copy(tmp_path)
    errors = root / "devswarm" / "errors.py"
    errors.write_text(errors.read_text() + "\n\ndef _planted():\n    from devswarm import ids\n")
    ids = root / "devswarm" / "ids.py"
    ids.write_text(
        ids.read_text() + "\n\ndef _planted():\n    from devswarm.errors import UserError\n"
    )
    assert any(
        v.startswith("import cycle: devswarm.errors -> devswarm.ids") for v in violations(root)
    )


def test_no_module_over_400_lines_and_flow_modules_stay_thin() -> None:
    too_big = {
        str(p.relative_to(ROOT)): n
        for package in ("devswarm", "flows", "tasks", "blocks")
        for p in (ROOT / package).rglob("*.py")
        if "demo" not in p.parts and (n := len(p.read_text().splitlines())) > 400
    }
    assert too_big == {}
    fat_flows = {
        p.name: n
        for p in (ROOT / "flows").glob("*.py")
        if p.name != "__init__.py" and (n := len(p.read_text().splitlines())) > 80
    }
    assert fat_flows == {}


def test_every_module_the_architecture_page_names_exists() -> None:
    page = (ROOT / "docs" / "architecture.md").read_text()
    named = set(re.findall(r"`((?:devswarm|flows|tasks|blocks)/[\w/]+\.(?:py|sql))`", page))
    assert len(named) > 20, "docs/architecture.md should name the modules it describes"
    missing = sorted(n for n in named if not (ROOT / n).exists())
    assert missing == []
