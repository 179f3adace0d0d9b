"""Imports point one way: between the export modules, and across the whole package (no cycle), counting imports
inside functions (read from the source)."""

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


# ---------------------------------------------------------------------------------------------------------------
# the whole package: no import cycle between hf_attn modules, counting imports inside functions
# ---------------------------------------------------------------------------------------------------------------


def _module_files() -> dict[str, Path]:
    """Dotted name -> file of every hf_attn module (a package by its ``__init__.py``)."""
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _remote_code_only(node: ast.AST) -> bool:
    """``if not __name__.startswith("hf_attn."):`` -- the block a modeling file runs only as remote code (a module
    of transformers_modules, not of hf_attn), so it is no import of the hf_attn module."""
    return isinstance(node, ast.If) and ast.unparse(node.test) == "not __name__.startswith('hf_attn.')"


def module_imports(name: str, path: Path, modules) -> set[str]:
    """The hf_attn modules ``name`` imports anywhere in its source (top level and inside functions), resolved:
    ``from .a import b`` counts as ``a.b`` where that is a module, else as ``a``. A package imported only as the
    parent of a module does not count (Python runs its ``__init__`` first, which imports no child that imports it
    back, else the cycle would show up here too)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()

    def visit(node):
        if _remote_code_only(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            found.update(f"{target}.{a.name}" if f"{target}.{a.name}" in modules else target for a in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    return {m for m in found if m in modules and m != name}


def import_cycles() -> list[list[str]]:
    """The strongly connected groups of two or more hf_attn modules in the import graph (Tarjan)."""
    modules = _module_files()
    graph = {name: module_imports(name, path, modules) for name, path in modules.items()}
    index, low, stack, on_stack, groups = {}, {}, [], set(), []

    def connect(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while not group or group[-1] != v:
                group.append(stack.pop())
                on_stack.discard(group[-1])
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return groups


def test_no_import_cycle_between_hf_attn_modules():
    assert import_cycles() == []


def test_the_cycle_checker_finds_cycles_and_imports_inside_functions(tmp_path):
    modules = _module_files()
    assert "hf_attn.embedding" in module_imports("hf_attn", PACKAGE / "__init__.py", modules)  # inside __getattr__
    assert "hf_attn.hub" in module_imports("hf_attn.training.embed.loop", PACKAGE / "training/embed/loop.py", modules)
    layers = PACKAGE / "modeling" / "layers.py"
    assert "import hf_attn" in layers.read_text()  # only as remote code: not an edge of hf_attn.modeling.layers
    assert "hf_attn" not in module_imports("hf_attn.modeling.layers", layers, modules)
    fake = tmp_path / "teacher.py"
    fake.write_text("def f():\n    from .distill import x\n")
    assert module_imports("hf_attn.training.embed.teacher", fake, modules) == {"hf_attn.training.embed.distill"}


def test_the_options_object_is_read_by_the_option_modules_and_entry_functions_only():
    """Under hf_attn/training, a function takes `args` (the options dataclass) only in an option module (args.py) or
    as a recipe's entry function; the pieces of a run take the values they use."""
    entry = {"train_embedder", "_train_embedder", "run_size_sweep", "train_lm", "_train_lm", "run_comparison",
             "__torch_dispatch__"}  # (the last is torch's protocol: its `args` are an operator's arguments)
    taking = []
    for path in sorted((PACKAGE / "training").rglob("*.py")):
        if path.name == "args.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name not in entry:
                if "args" in [a.arg for a in node.args.posonlyargs + node.args.args + node.args.kwonlyargs]:
                    taking.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name}")
    assert taking == []
