"""Every public module of jaxcl declares its API in ``__all__``.

A public module is one whose path has no part starting with ``_`` (its package's
``__init__`` re-exports the private submodules' names). Its ``__all__`` names only what
the module has, and every function and class it defines without a leading underscore,
so ``from jaxcl.x import *`` and the documentation see the whole API and nothing else.
"""

import ast
import importlib
import pkgutil
from pathlib import Path

import pytest

import jaxcl

CHECKOUT = Path(jaxcl.__file__).resolve().parents[1]


def _defined_public(module: str) -> set[str]:
    """The functions and classes ``module``'s source defines at top level, no underscore."""
    source = Path(importlib.import_module(module).__file__).read_text(encoding="utf-8")
    return {
        node.name
        for node in ast.parse(source).body
        if isinstance(node, ast.FunctionDef | ast.ClassDef) and not node.name.startswith("_")
    }


# jaxcl's modules and packages whose names have no private part (the package itself aside).
PUBLIC = sorted(
    m.name for m in pkgutil.walk_packages(jaxcl.__path__, "jaxcl.") if "._" not in m.name
)


def test_the_public_modules_are_found():
    assert {"jaxcl.cli", "jaxcl.execution", "jaxcl.optim", "jaxcl.engine"} <= set(PUBLIC)
    assert not [m for m in PUBLIC if "._" in m]


@pytest.mark.parametrize("name", PUBLIC)
def test_all_lists_exactly_what_the_module_has_and_every_public_definition(name):
    module = importlib.import_module(name)
    assert hasattr(module, "__all__"), f"{name} has no __all__"
    exported = list(module.__all__)
    assert len(exported) == len(set(exported)), f"{name}.__all__ repeats a name"
    assert [n for n in exported if not hasattr(module, n)] == []
    assert sorted(_defined_public(name) - set(exported)) == []


def test_scripts_do_not_reuse_the_librarys_constant_names():
    """``experiments/`` and ``benchmarks/`` name their constants apart from the library's
    (e.g. a script's own ``OPTIMIZERS`` would read as jaxcl.optim's registry)."""
    library = {n for name in PUBLIC for n in importlib.import_module(name).__all__ if n.isupper()}
    assert {"OPTIMIZERS", "ACTIVATIONS", "SCENARIOS"} <= library
    scripts = sorted(p for d in ("experiments", "benchmarks") for p in (CHECKOUT / d).glob("*.py"))
    reused = {
        (path.name, target.id)
        for path in scripts
        for node in ast.parse(path.read_text(encoding="utf-8")).body
        if isinstance(node, ast.Assign | ast.AnnAssign)
        for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
        if isinstance(target, ast.Name) and target.id in library
    }
    assert reused == set()
