"""The committed generated code is what the protos generate today."""

from __future__ import annotations

import filecmp
import importlib.util
from pathlib import Path

import pytest

from plum.rpc import generate

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("grpc_tools") is None
    or importlib.util.find_spec("betterproto2_compiler") is None,
    reason="needs the dev extras (grpcio-tools, betterproto2-compiler)",
)


def _files(root: Path) -> set[str]:
    return {
        str(path.relative_to(root))
        for path in root.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }


def test_generated_code_is_up_to_date(tmp_path: Path) -> None:
    out = tmp_path / "_proto"
    generate.generate(out)

    committed = _files(generate.OUT)
    fresh = _files(out)
    assert fresh == committed, "run protos/generate.sh: the file set differs"
    stale = [
        name for name in sorted(fresh)
        if not filecmp.cmp(out / name, generate.OUT / name, shallow=False)
    ]
    assert not stale, f"run protos/generate.sh: stale generated files {stale}"
