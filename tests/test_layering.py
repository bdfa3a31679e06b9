"""The import layers of jaxcl: no import circle, and every module imports only from its
layer or a lower one.

Every ``import`` statement of every module counts, wherever it is: at the top, inside a
function, under ``if TYPE_CHECKING:``. ``from package import name`` imports the
submodule ``package.name`` when there is one, else ``package`` itself.
"""

import ast
from pathlib import Path

import pytest

import jaxcl

ROOT = Path(jaxcl.__file__).resolve().parent

# A module imports only from its layer or lower ones (0 is the lowest). Subpackages
# (``optim``, ``sparse``, ``models``, ``learners``, ``engine``) take their layer from their
# top-level name; ``jaxcl`` itself (the package, only its version) is layer 0.
LAYERS = {
    0: ("jaxcl", "_checks", "_registry", "types", "io", "compile_cache", "processes"),
    1: ("activations", "schedules", "losses", "data", "optim", "sparse", "models"),
    2: ("scenarios", "regularizers"),
    3: ("learners",),
    4: ("engine",),
    5: ("checkpoint", "evaluation", "execution", "metrics"),
    6: ("report",),
    7: ("experiment", "cli"),
}
LAYER = {name: layer for layer, names in LAYERS.items() for name in names}
OPTIONAL = {"_registry", "experiment"}  # in the table before the modules that add them

# (importer, imported) pairs that break the layering today and are not fixed yet.
ALLOWED_UPWARD: set[tuple[str, str]] = set()


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _resolve(importer: str, node: ast.ImportFrom) -> str:
    """The absolute module a ``from ... import`` names (relative imports resolved)."""
    if not node.level:
        return node.module
    package = importer if MODULES[importer].name == "__init__.py" else importer.rpartition(".")[0]
    base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
    return f"{base}.{node.module}" if node.module else base


def imports(module: str) -> set[str]:
    """The jaxcl modules that ``module`` imports anywhere in its source."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(module, node)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in MODULES else base)
    return {name for name in found if name == "jaxcl" or name.startswith("jaxcl.")}


GRAPH = {module: imports(module) for module in MODULES}


def layer_of(module: str) -> int:
    top = "jaxcl" if module == "jaxcl" else module.split(".")[1]
    if top not in LAYER:
        raise AssertionError(f"{module} is in no layer: add {top!r} to LAYERS")
    return LAYER[top]


def test_every_module_is_found_and_imports_only_known_modules():
    assert {"jaxcl", "jaxcl.types", "jaxcl.learners", "jaxcl.optim._sam"} <= set(MODULES)
    unknown = {(m, i) for m, targets in GRAPH.items() for i in targets if i not in MODULES}
    assert not unknown


def test_every_module_has_a_layer_and_every_layer_name_exists():
    for module in MODULES:
        layer_of(module)
    tops = {"jaxcl" if m == "jaxcl" else m.split(".")[1] for m in MODULES}
    assert set(LAYER) - tops <= OPTIONAL


def _upward_imports() -> set[tuple[str, str]]:
    return {
        (module, target)
        for module, targets in GRAPH.items()
        for target in targets
        if layer_of(target) > layer_of(module)
    }


def test_modules_import_only_from_their_layer_or_lower():
    upward = _upward_imports()
    assert upward <= ALLOWED_UPWARD, sorted(upward - ALLOWED_UPWARD)
    assert not ALLOWED_UPWARD - upward, "an allowance that is no longer needed"


def _cycle() -> list[str] | None:
    """One import circle among the modules, or None (depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        path.append(module)
        for target in sorted(GRAPH[module]):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state and (found := visit(target)):
                return found
        path.pop()
        state[module] = 2
        return None

    for module in sorted(GRAPH):
        if module not in state and (found := visit(module)):
            return found
    return None


def test_no_import_circle():
    assert _cycle() is None, " -> ".join(_cycle())


@pytest.mark.parametrize(
    "graph,circle",
    [
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, ["a", "b", "c", "a"]),
        ({"a": {"b"}, "b": set(), "c": {"b"}}, None),
    ],
)
def test_the_circle_search_finds_circles(monkeypatch, graph, circle):
    monkeypatch.setattr(f"{__name__}.GRAPH", graph)
    assert _cycle() == circle


def test_imports_inside_functions_and_type_checking_blocks_count(tmp_path, monkeypatch):
    source = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from jaxcl.engine import Run\n"
        "def f():\n"
        "    from jaxcl import report\n"
        "    import jaxcl.cli\n"
        "from . import _checks\n"
    )
    path = tmp_path / "probe.py"
    path.write_text(source)
    monkeypatch.setitem(MODULES, "jaxcl.probe", path)
    assert imports("jaxcl.probe") == {"jaxcl.engine", "jaxcl.report", "jaxcl.cli", "jaxcl._checks"}
