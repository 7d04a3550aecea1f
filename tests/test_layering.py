"""The architecture as a test: DESIGN.md's layers, enforced on the import graph of actorq/.

Every ``import`` anywhere in a module counts (function-level ones too), except those under
``if TYPE_CHECKING:``, which never run (a runtime module may name a higher layer's class in an
annotation).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

import actorq

PACKAGE = Path(actorq.__file__).parent

VALUES, POLICIES, CORE, PERSISTENCE, RUNTIME, PUBLIC = range(6)
LAYER_NAMES = ["values", "pure policies", "pure core", "persistence", "trio runtime", "public"]

# module -> layer (DESIGN.md, "A layout that shows the architecture")
LAYERS = {
    "_errors": VALUES,
    "_model": VALUES,
    "_heap": POLICIES,
    "_throttle": POLICIES,
    "_debounce": POLICIES,
    "_backoff": POLICIES,
    "_core": CORE,
    "_codec": PERSISTENCE,
    "_journal": PERSISTENCE,
    "_clock": RUNTIME,
    "_supervisor": RUNTIME,
    "_actor": RUNTIME,
    "_writer": RUNTIME,
    "_api": PUBLIC,
    "__init__": PUBLIC,
    "testing": PUBLIC,
}

# layer -> the layers of actorq it may import
MAY_IMPORT_LAYERS = {
    VALUES: {VALUES},
    POLICIES: {VALUES, POLICIES},
    CORE: {VALUES, POLICIES, CORE},
    PERSISTENCE: {VALUES, PERSISTENCE},
    RUNTIME: {VALUES, POLICIES, CORE, PERSISTENCE, RUNTIME},
    PUBLIC: set(range(6)),
}
# modules that may import no other actorq module at all
LEAVES = {"_errors"}

# layer -> third-party distributions it may import (the standard library is always allowed)
MAY_IMPORT_EXTERNAL = {
    VALUES: {"attrs"},
    POLICIES: {"attrs"},
    CORE: {"attrs"},
    PERSISTENCE: {"attrs", "cattrs", "lmdb", "msgpack"},
    RUNTIME: {"attrs", "cattrs", "lmdb", "msgpack", "trio", "outcome", "sniffio"},
    PUBLIC: None,  # anything
}

PURE = {m for m, layer in LAYERS.items() if layer in (VALUES, POLICIES, CORE)}
NEVER_IN_PURE = {"trio", "lmdb", "cattrs", "msgpack", "outcome", "sniffio", "anyio", "asyncio"}
STDLIB = set(sys.stdlib_module_names)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _own_module(dotted: str) -> str:
    """``actorq._model.X`` / ``_model`` -> ``_model``; the package itself -> ``__init__``."""
    first = dotted.split(".")[0]
    if first and (PACKAGE / f"{first}.py").exists():
        return first
    return "__init__"


def imports_of(source: str) -> tuple[set[str], set[str]]:
    """(actorq modules, top-level external packages) that ``source`` imports at run time."""
    tree = ast.parse(source)
    own: set[str] = set()
    external: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "actorq" or alias.name.startswith("actorq."):
                    own.add(_own_module(alias.name.partition(".")[2]))
                else:
                    external.add(alias.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level > 1:
                raise AssertionError(f"actorq is a flat package: unexpected {ast.unparse(node)}")
            if node.level == 1 or module == "actorq" or module.startswith("actorq."):
                inner = module if node.level == 1 else module.partition(".")[2]
                if inner:
                    own.add(_own_module(inner))
                else:  # from . import _x, name
                    own.update(_own_module(alias.name) for alias in node.names)
            else:
                external.add(module.split(".")[0])
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return own, external


def _modules() -> dict[str, tuple[set[str], set[str]]]:
    return {
        path.stem: imports_of(path.read_text(encoding="utf-8"))
        for path in sorted(PACKAGE.glob("*.py"))
    }


MODULES = _modules()


# ---------------------------------------------------------------------------------------------
# The walker itself


def test_the_walker_sees_every_kind_of_import():
    source = """
from __future__ import annotations
import os, lmdb.cffi
from typing import TYPE_CHECKING
import trio as t
from ._model import JobRecord
from . import _heap, _core
from actorq._codec import encode_event
import actorq._clock
from cattrs.preconf.msgpack import make_converter
if TYPE_CHECKING:
    from ._api import Runtime
    import hidden_only_for_types
else:
    import msgpack
def f():
    from ._writer import Writer
    import attrs
"""
    own, external = imports_of(source)
    assert own == {"_model", "_heap", "_core", "_codec", "_clock", "_writer"}
    assert external == {"__future__", "os", "lmdb", "typing", "trio", "cattrs", "msgpack",
                        "attrs"}


def test_the_walker_finds_the_known_dependencies():
    # guards against a walker that sees nothing and so passes everything
    assert "lmdb" in MODULES["_journal"][1]
    assert "_codec" in MODULES["_journal"][0]
    assert "trio" in MODULES["_writer"][1]
    assert "attrs" in MODULES["_model"][1]


# ---------------------------------------------------------------------------------------------
# The rules


def test_every_module_has_a_layer():
    unknown = sorted(set(MODULES) - set(LAYERS))
    assert not unknown, f"add these modules to the layer table of {__file__}: {unknown}"


def test_the_core_modules_exist():
    for name in ("_errors", "_model", "_heap", "_backoff", "_core", "_codec", "_journal",
                 "_writer", "_api", "__init__"):
        assert name in MODULES


@pytest.mark.parametrize("module", sorted(MODULES))
def test_lower_layers_never_import_higher_ones(module):
    own, _external = MODULES[module]
    layer = LAYERS.get(module)
    if layer is None:
        pytest.fail(f"{module} has no layer")
    allowed = MAY_IMPORT_LAYERS[layer]
    bad = sorted(
        f"{dep} ({LAYER_NAMES[LAYERS[dep]] if dep in LAYERS else 'no layer'})"
        for dep in own - {module}
        if dep not in LAYERS or LAYERS[dep] not in allowed
    )
    assert not bad, f"{module} ({LAYER_NAMES[layer]}) must not import {bad}"


@pytest.mark.parametrize("module", sorted(LEAVES & set(MODULES)))
def test_leaf_modules_import_nothing_of_actorq(module):
    assert MODULES[module][0] == set()


@pytest.mark.parametrize("module", sorted(MODULES))
def test_third_party_imports_match_the_layer(module):
    _own, external = MODULES[module]
    allowed = MAY_IMPORT_EXTERNAL[LAYERS.get(module, VALUES)]
    if allowed is None:
        return
    bad = sorted(name for name in external - STDLIB if name not in allowed)
    assert not bad, f"{module} may import only the stdlib and {sorted(allowed)}, not {bad}"


@pytest.mark.parametrize("module", ["_errors", "_model"])
def test_values_import_only_the_stdlib_and_attrs(module):
    _own, external = MODULES[module]
    assert external - STDLIB <= {"attrs"}, external - STDLIB


@pytest.mark.parametrize("module", sorted(PURE & set(MODULES)))
def test_pure_modules_never_import_io_or_serialisation(module):
    _own, external = MODULES[module]
    assert not external & NEVER_IN_PURE, (
        f"{module} is pure: it must not import {sorted(external & NEVER_IN_PURE)}")
    assert external - STDLIB <= {"attrs"}


@pytest.mark.parametrize("module", ["_codec", "_journal"])
def test_persistence_never_imports_trio(module):
    own, external = MODULES[module]
    assert "trio" not in external
    assert not {m for m in own if LAYERS.get(m, PUBLIC) >= RUNTIME}


def test_only_the_codec_imports_cattrs():
    users = {module for module, (_own, external) in MODULES.items() if "cattrs" in external}
    assert users == {"_codec"}

