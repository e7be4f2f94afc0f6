"""The tool descriptions and schemas the model sees are part of every cached request prefix:
any change to them, even a space, re-bills the whole prefix. These hashes pin them byte for byte."""

from __future__ import annotations

import hashlib
import json

import pytest

from devswarm.tools.toolbox import Toolbox

# sha256 of json.dumps(Toolbox(root, read_only=...).specs()), taken before #13 carved the toolbox
PINNED = {
    False: "6c985344c6951ff33878360cfefd61b1e6db0b717c3cd4f42f694b890f38886b",
    True: "17b5873336a5469121684df2fe89adb1e3c4fc19c709d35bafc304f0101e61e6",
}


@pytest.mark.parametrize("read_only", [False, True], ids=["worker", "read-only"])
def test_tool_specs_are_byte_identical_to_the_pinned_ones(tmp_path, read_only):
    specs = Toolbox(tmp_path, read_only=read_only).specs()
    digest = hashlib.sha256(json.dumps(specs).encode()).hexdigest()
    assert digest == PINNED[read_only], json.dumps(specs, indent=1)
