"""The package's shape, checked on its syntax trees: no import cycle between exporter's modules
(imports inside functions count; ``if TYPE_CHECKING:`` blocks do not run, so they do not), no
module reaching into another module's or object's private (underscore) state, and every meter
in the registry importable with a spec that matches its name.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "exporter"
GENERATED = {"exporter.identity.podresources_pb.api_pb2", "exporter.identity.podresources_pb.api_pb2_grpc"}
# underscore names that are public API of the standard library
STDLIB_PUBLIC = {"_replace", "_asdict", "_fields", "_make", "_exit", "_getframe"}


def modules() -> dict[str, Path]:
    out = {}
    for f in sorted(PKG.rglob("*.py")):
        parts = list(f.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        name = ".".join(parts)
        if name not in GENERATED:
            out[name] = f
    return out


MODULES = modules()


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or \
        (isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def _runtime_nodes(tree: ast.AST):
    """Every node except those under ``if TYPE_CHECKING:``."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                stack.extend(child.orelse)
                continue
            stack.append(child)


def _package_of(name: str) -> str:
    return name if MODULES[name].name == "__init__.py" else name.rpartition(".")[0]


def _absolute(module: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = _package_of(module).split(".")
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(module: str) -> set[str]:
    """The exporter modules ``module`` imports at run time (by name; parents not implied)."""
    tree = ast.parse(MODULES[module].read_text())
    out: set[str] = set()
    for node in _runtime_nodes(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name in MODULES}
        elif isinstance(node, ast.ImportFrom):
            target = _absolute(module, node)
            for a in node.names:
                sub = f"{target}.{a.name}"
                if sub in MODULES:
                    out.add(sub)
                elif target in MODULES:
                    out.add(target)
    out.discard(module)
    return out


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_in_exporter():
    graph = {m: imports_of(m) for m in MODULES}
    assert graph["exporter.cli"] >= {"exporter.config"}  # the scan sees imports at all
    assert "exporter.daemon" in graph["exporter.check"]  # and imports inside functions
    assert cycles(graph) == []


def test_check_and_cli_do_not_import_each_other():
    assert "exporter.cli" not in imports_of("exporter.check")
    assert "exporter.cli" not in imports_of("exporter.daemon")


def private_reads(module: str) -> list[str]:
    """Reads of another module's or object's underscore attributes in ``module``:
    ``from x import _name`` of an exporter module, and ``expr._name`` where ``expr`` is not
    ``self``/``cls`` (dunders and the stdlib's public underscore names are allowed)."""
    tree = ast.parse(MODULES[module].read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            target = _absolute(module, node)
            if target.split(".")[0] == "exporter":
                found += [f"line {node.lineno}: from {target} import {a.name}" for a in node.names
                          if a.name.startswith("_") and not a.name.startswith("__")]
        elif isinstance(node, ast.Attribute):
            a = node.attr
            if not a.startswith("_") or a.startswith("__") or a in STDLIB_PUBLIC:
                continue
            v = node.value
            if isinstance(v, ast.Name) and v.id in ("self", "cls"):
                continue
            if isinstance(v, ast.Call) and isinstance(v.func, ast.Name) and v.func.id == "super":
                continue
            found.append(f"line {node.lineno}: {ast.unparse(node)}")
    return found


def test_the_private_read_finder_finds_one(tmp_path, monkeypatch):
    f = tmp_path / "m.py"
    f.write_text("from .x import _hidden\nclass A:\n    def f(self):\n        return self.rapl._last, self._ok\n")
    monkeypatch.setitem(MODULES, "exporter.fake_m", f)
    got = private_reads("exporter.fake_m")
    assert got == ["line 1: from exporter.x import _hidden", "line 4: self.rapl._last"]


def test_no_module_reads_another_modules_private_state():
    bad = {m: r for m in MODULES if (r := private_reads(m))}
    assert bad == {}


@pytest.mark.parametrize("kind", ["gpu", "cpu"])
def test_every_registered_meter_has_a_spec_of_its_name(kind):
    from exporter.sensors import registry

    table = registry.GPU_BACKENDS if kind == "gpu" else registry.CPU_METERS
    assert table
    for name, module in table.items():
        spec = importlib.import_module(module).METER
        assert (spec.name, spec.kind) == (name, kind)
        assert callable(spec.open) and callable(spec.probe) and spec.summary


def test_config_choices_come_from_the_registry():
    from exporter import config
    from exporter.sensors import registry

    assert set(registry.GPU_BACKENDS) <= set(config.GPU_BACKEND_NAMES)
    assert set(registry.CPU_METERS) <= set(config.CPU_METER_NAMES)
