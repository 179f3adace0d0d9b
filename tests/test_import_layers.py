"""Imports point one way between the export modules, counting imports inside functions (read from the source)."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "hf_attn"


def _imports(module: str) -> set[str]:
    """hf_attn modules `module` (a top-level file of the package) imports anywhere in its source."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
            found.add(node.module.split(".")[0])
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("hf_attn."):
            found.add(node.module.split(".")[1])
    return found


# module -> the export modules it must not import (they sit above it)
LAYERS = {
    "exported": {"hub", "export_check", "onnx_export", "push", "embedding"},
    "export_check": {"hub", "onnx_export", "push"},
    "onnx_export": {"hub", "export_check", "push"},
    "push": {"hub", "export_check", "onnx_export"},
}


@pytest.mark.parametrize("module", sorted(LAYERS))
def test_export_modules_import_downwards_only(module):
    assert not (_imports(module) & LAYERS[module]), f"{module} imports {_imports(module) & LAYERS[module]}"


def test_the_checker_sees_imports_inside_functions():
    assert {"exported", "export_check", "onnx_export"} <= _imports("hub")
    assert "exported" in _imports("onnx_export") and "exported" in _imports("export_check")
