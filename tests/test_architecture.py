"""The arrows between the package's parts, as docs/ARCHITECTURE.md draws them.

Every ``import`` in atlaswidgets/ is read with ``ast`` (function-level imports too, since lazy
imports are still dependencies), mapped to the part it comes from and goes to, and checked against
the allowed arrows. A private name (``_x``) may be imported only inside its own part: what two parts
share is public API of the lower one.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "atlaswidgets"

# part -> the parts it may import from. "top" is atlaswidgets/__init__.py (the flat public API and
# __version__), which every part may read and which imports the others lazily, by name.
ALLOWED = {
    "cache": set(),
    "attribution": {"cache"},
    "explain": {"cache"},
    "session": set(),  # the notebook session: kernel shutdown, imports nothing of the kit
    "render": {"cache"},
    "zoo": {"cache"},
    "layout": {"cache", "attribution"},
    "experiments": {"cache", "attribution", "explain", "layout", "render", "zoo"},
    "widgets": {"cache", "attribution", "explain", "layout", "render"},
}


def _part(module: str) -> str:
    pieces = module.split(".")
    return "top" if len(pieces) == 1 else pieces[1]


def _modules():
    """(module name, its package, its parsed tree) of every module in the package."""
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        module = ".".join(parts).removesuffix(".__init__")
        package = module if parts[-1] == "__init__" else module.rsplit(".", 1)[0]
        yield module, package, ast.parse(path.read_text(), str(path))


def _target(node: ast.ImportFrom, package: str) -> str:
    """The absolute module a ``from ... import`` reads from."""
    if not node.level:
        return node.module or ""
    base = package.split(".")[: len(package.split(".")) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def _imports():
    """(importing module, imported module, names) of every atlaswidgets import in the package."""
    for module, package, tree in _modules():
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                target = _target(node, package)
                if target.split(".")[0] == "atlaswidgets":
                    yield module, target, [a.name for a in node.names]
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] == "atlaswidgets":
                        yield module, alias.name, []


def test_the_parts_are_the_ones_the_doc_names():
    found = {_part(m) for m, _, _ in _imports()} - {"top"}
    unknown = found - set(ALLOWED)
    assert not unknown, (f"New parts {sorted(unknown)}: add them to ALLOWED here and to "
                         "docs/ARCHITECTURE.md, with the arrows they may use.")


def test_imports_follow_the_allowed_arrows():
    wrong = []
    for module, target, _ in _imports():
        src, dst = _part(module), _part(target)
        if src == dst or dst == "top" or src == "top":
            continue
        if dst not in ALLOWED[src]:
            wrong.append(f"{module} imports {target} ({src} -> {dst})")
    assert not wrong, "Imports against docs/ARCHITECTURE.md:\n" + "\n".join(sorted(set(wrong)))


def test_no_private_name_crosses_a_part():
    wrong = []
    for module, target, names in _imports():
        if _part(module) == _part(target):
            continue
        for name in names:
            if name.startswith("_") and not name.startswith("__"):
                wrong.append(f"{module} imports {name} from {target}")
        if target.rsplit(".", 1)[-1].startswith("_") and not target.endswith("__init__"):
            wrong.append(f"{module} imports the private module {target}")
    assert not wrong, ("Private names used across parts (make them public in the lower part):\n"
                       + "\n".join(sorted(set(wrong))))


def test_no_import_cycle_between_modules():
    """Module-level imports only: a cycle there breaks ``import`` itself, whatever the order."""
    graph: dict[str, set[str]] = {}
    for module, package, tree in _modules():
        edges = graph.setdefault(module, set())
        for node in tree.body:  # top-level statements only
            if not isinstance(node, ast.ImportFrom):
                continue
            target = _target(node, package)
            if target.split(".")[0] != "atlaswidgets":
                continue
            for a in node.names:  # "from . import store" imports the module store
                sub = f"{target}.{a.name}"
                edges.add(sub if (PACKAGE.parent / Path(*sub.split("."))).with_suffix(".py").exists()
                          else target)
    graph = {m: {t for t in ts if t in graph and t != m} for m, ts in graph.items()}
    cycles = []
    state: dict[str, int] = {}

    def visit(node, stack):
        state[node] = 1
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for node in graph:
        if node not in state:
            visit(node, [node])
    assert not cycles, "Import cycles:\n" + "\n".join(cycles)


@pytest.mark.parametrize("bad", ["from ..widgets.atlas import AtlasWidget", "from ..layout import _x",
                                 "from .planted_too import x"])
def test_the_checks_catch_a_wrong_import(tmp_path, monkeypatch, bad):
    """The test above would pass on an empty package: show that it fails on a planted import."""
    import shutil
    import sys

    copy = tmp_path / "atlaswidgets"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("*.safetensors", "*.json", "__pycache__"))
    (copy / "cache" / "planted.py").write_text(bad + "\n")
    (copy / "cache" / "planted_too.py").write_text("from .planted import y\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", copy)
    check = (test_imports_follow_the_allowed_arrows if "widgets" in bad else
             test_no_import_cycle_between_modules if "planted_too" in bad else test_no_private_name_crosses_a_part)
    with pytest.raises(AssertionError, match="planted"):
        check()
