"""The package's layers import downward only (docs/ARCHITECTURE.md "## Layers").

Every ``import`` of every module under ``hotspot_erc/`` and ``kernels/`` (installed as
``hotspot_erc.kernels``) is read with ``ast``, function-level ones included, mapped onto its
layer, and compared with the layer order. A back-edge fails the test unless it is listed in
``ALLOWED_BACK_EDGES`` with its reason; function-level imports of the package's own
modules are listed in ``FUNCTION_LEVEL_IMPORTS`` (each with why it must stay inside a function).
"""
from __future__ import annotations

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]

# Top to bottom; a module may import from its own layer's package and from layers below it.
# Layers on one row are siblings: they may not import each other.
LAYERS = [
    ("cli",),                # `hotspot-erc` command
    ("info", "testing", "inspect"),  # tools over the whole stack: backend report, launch counter, run report
    ("train",),              # trainer, metrics, checkpoints, reports
    ("nn",),                 # modules and HotspotERC (CrossModalGraph prepares graphs for the ops)
    ("hotspots",),           # scorers, window extraction
    ("text",),               # conversation CSVs and text features -> native corpora
    ("data",),               # corpus format, readers, batching, conversation-graph edges
    ("ops",),                # registered ops: checks, backend choice, autograd
    ("reference",),          # the executable spec: imports only other references
    ("segments",),           # Segments and deterministic segment ops: imports nothing of ours
    ("kernels",),            # Triton kernels: relative imports only
    ("",),                   # the package root: __version__ and loading _C at start-up
    ("_ext",),
    ("_C",),
]
RANK = {name: i for i, row in enumerate(LAYERS) for name in row}
# Layers whose imports are narrower than "anything below": layer -> the layers it may import.
ONLY = {"reference": {"reference"}, "kernels": {"kernels"}, "segments": set()}

# (importing file, imported layer): why the back-edge is there.
ALLOWED_BACK_EDGES = {
    ("hotspot_erc/text/convert.py", "cli"):
        "`python -m hotspot_erc.text.convert` reports errors through the CLI's error_exit at start-up, "
        "so messages and exit codes follow the CLI's one policy",
}

# Files allowed function-level imports of the package's own modules, and why.
FUNCTION_LEVEL_IMPORTS = {
    "hotspot_erc/_ext.py": "loading the compiled _C may fail; the failure is recorded, not raised at import",
    "hotspot_erc/cli.py": "CLI start-up: `--help` and argument errors must not import torch-heavy layers",
    "hotspot_erc/info.py": "start-up, like the CLI: the report imports the package root late",
    "hotspot_erc/ops/graph_attention.py": "Triton reads TRITON_INTERPRET when a kernel is defined: kernels load lazily",
    "hotspot_erc/ops/grouped_linear.py": "Triton reads TRITON_INTERPRET when a kernel is defined: kernels load lazily",
    "hotspot_erc/ops/hotspot_gate.py": "Triton reads TRITON_INTERPRET when a kernel is defined: kernels load lazily",
    "hotspot_erc/ops/segment_matmul.py": "Triton reads TRITON_INTERPRET when a kernel is defined: kernels load lazily",
    "hotspot_erc/ops/varlen_attention.py": "Triton reads TRITON_INTERPRET when a kernel is defined: kernels load lazily",
    "hotspot_erc/text/__init__.py": "lazy attributes keep `import hotspot_erc.text` free of transformers",
    "hotspot_erc/text/convert.py": "start-up of `python -m hotspot_erc.text.convert` (the CLI's error policy)",
    "hotspot_erc/text/lexicon.py": "the encoder module pulls in transformers on use only",
}


def _modules():
    files = sorted((ROOT / "hotspot_erc").rglob("*.py")) + sorted((ROOT / "kernels").rglob("*.py"))
    for path in files:
        rel = path.relative_to(ROOT)
        parts = list(rel.with_suffix("").parts)
        if parts[0] == "kernels":
            parts = ["hotspot_erc"] + parts
        is_pkg = parts[-1] == "__init__"
        if is_pkg:
            parts = parts[:-1]
        yield rel.as_posix(), ".".join(parts), is_pkg, ast.parse(path.read_text(), str(rel))


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _imports(name: str, is_pkg: bool, tree: ast.AST):
    """(line, imported module, inside a function) for every import of the package's modules."""
    package = name if is_pkg else name.rpartition(".")[0]
    in_function = set()
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            in_function.update(id(n) for n in ast.walk(fn) if n is not fn)
    for node in ast.walk(tree):
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            # `from hotspot_erc import nn` / `from . import x` import submodules by name
            if module == "hotspot_erc" or not node.module:
                targets = [f"{module}.{a.name}" if a.name != "*" else module for a in node.names]
            else:
                targets = [module]
        for t in targets:
            if t == "hotspot_erc" or t.startswith("hotspot_erc."):
                yield node.lineno, t, id(node) in in_function


def _root_attribute(target: str) -> bool:
    # `from hotspot_erc import __version__` names an attribute of the root, not a layer.
    return target.startswith("hotspot_erc.__")


def test_every_module_is_in_a_layer():
    unknown = sorted({_layer(name) for _, name, _, _ in _modules()} - set(RANK))
    assert not unknown, f"add these packages to LAYERS (and to docs/ARCHITECTURE.md '## Layers'): {unknown}"


def test_imports_point_downwards():
    bad, seen = [], set()
    for path, name, is_pkg, tree in _modules():
        src = _layer(name)
        for line, target, _ in _imports(name, is_pkg, tree):
            dst = "" if _root_attribute(target) else _layer(target)
            if dst == src or dst not in RANK:
                continue
            allowed = dst in ONLY[src] if src in ONLY else RANK[dst] > RANK[src]
            if allowed:
                continue
            seen.add((path, dst))
            if (path, dst) not in ALLOWED_BACK_EDGES:
                bad.append(f"{path}:{line} ({src or 'root'}) imports {target} ({dst or 'root'})")
    assert not bad, "imports against the layer order (docs/ARCHITECTURE.md '## Layers'):\n" + "\n".join(bad)


def test_function_level_imports_are_documented():
    bad = []
    for path, name, is_pkg, tree in _modules():
        for line, target, inside in _imports(name, is_pkg, tree):
            if inside and path not in FUNCTION_LEVEL_IMPORTS:
                bad.append(f"{path}:{line} imports {target} inside a function")
    assert not bad, ("import the package's own modules at module level (or list the file, with the reason, "
                     "in FUNCTION_LEVEL_IMPORTS):\n" + "\n".join(bad))


def test_the_checker_sees_back_edges():
    """The parser resolves relative and function-level imports (a checker that sees nothing passes)."""
    tree = ast.parse("def f():\n    from ..cli import main\nfrom . import ops\nimport hotspot_erc.train\n")
    got = sorted((t, inside) for _, t, inside in _imports("hotspot_erc.data.graph", False, tree))
    assert got == [("hotspot_erc.cli", True), ("hotspot_erc.data.ops", False), ("hotspot_erc.train", False)]


def test_exception_lists_hold_only_live_entries():
    """An exception whose import is gone must leave the lists, or they stop saying what is true."""
    back_edges, function_level = set(), set()
    for path, name, is_pkg, tree in _modules():
        for _, target, inside in _imports(name, is_pkg, tree):
            if not _root_attribute(target):
                back_edges.add((path, _layer(target)))
            if inside:
                function_level.add(path)
    stale = sorted(set(ALLOWED_BACK_EDGES) - back_edges) + sorted(set(FUNCTION_LEVEL_IMPORTS) - function_level)
    assert not stale, f"remove these entries from tests/test_imports.py: {stale}"
