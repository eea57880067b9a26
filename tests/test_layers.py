"""The shape of the house: tasks hold to their interface, layers import downwards, leaves stay leaves."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from edgenlp import tasks
from edgenlp.tasks.protocol import Task, mismatches

PACKAGE = Path(__file__).resolve().parents[1] / "edgenlp"


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _package_of(module: str) -> str:
    return module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]


def _imports(module: str) -> list[tuple[str, str]]:
    """(imported module, name) for every `from X import name` of edgenlp, lazy ones included,
    type-checking-only ones left out (they are not executed)."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    type_only = {
        id(n)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING"
        for n in ast.walk(node)
    }
    found = []
    for node in ast.walk(tree):
        if id(node) in type_only or not isinstance(node, ast.ImportFrom):
            continue
        if node.level:
            base = module.split(".") if MODULES[module].name == "__init__.py" else module.split(".")[:-1]
            base = base[: len(base) - node.level + 1]
            target = ".".join(base + ([node.module] if node.module else []))
        else:
            target = node.module or ""
        if target.startswith("edgenlp"):
            found += [(target, alias.name) for alias in node.names]
    return found


def _edges() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {m: set() for m in MODULES}
    for module in MODULES:
        for target, name in _imports(module):
            edges[module].add(f"{target}.{name}" if f"{target}.{name}" in MODULES else target)
    return edges


@pytest.mark.parametrize("name", tasks.TASK_NAMES)
def test_every_task_conforms_to_the_interface(name):
    task = tasks.get(name)
    assert isinstance(task, Task)
    assert mismatches(task) == []
    assert task.NAME == name


def test_the_interface_check_names_what_a_task_lacks_or_takes_differently():
    classification = tasks.get("text-classification")
    broken = SimpleNamespace(**{k: getattr(classification, k) for k in classification.__all__})
    del broken.bundle_summary
    broken.ratios = lambda variant, reference, settings, extra: {}
    problems = mismatches(broken)
    assert "bundle_summary() is missing" in problems
    assert any(p.startswith("ratios() needs extra") for p in problems)


def test_no_task_module_is_over_300_lines():
    long = {
        str(p.relative_to(PACKAGE)): n
        for p in (PACKAGE / "tasks").rglob("*.py")
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > 300
    }
    assert long == {}


def test_no_import_circle():
    """Tarjan's strongly connected components over module imports (lazy ones too): none has two modules."""
    edges, index, low, stack, on_stack, circles = _edges(), {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in MODULES:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 5000))
    for module in MODULES:
        if module not in index:
            visit(module)
    assert circles == []


def test_no_module_imports_another_packages_private_names():
    crossing = [
        (m, f"{target}.{name}")
        for m in MODULES
        for target, name in _imports(m)
        if name.startswith("_")
        and f"{target}.{name}" not in MODULES
        and target in MODULES
        and _package_of(target) != _package_of(m)
    ]
    assert crossing == []


def test_the_core_reaches_a_task_only_through_the_registry():
    task_packages = {f"edgenlp.tasks.{p.name}" for p in (PACKAGE / "tasks").iterdir() if (p / "__init__.py").exists()}
    reaching_in = [
        (m, target)
        for m in MODULES
        if not any(m == t or m.startswith(t + ".") for t in task_packages)
        for target, _ in _imports(m)
        if any(target == t or target.startswith(t + ".") for t in task_packages)
    ]
    assert reaching_in == []


def test_a_recipe_loads_without_the_searches_the_harness_or_torch():
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, edgenlp.recipe; print(' '.join(sorted(sys.modules)))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    heavy = (
        "edgenlp.search.budget",
        "edgenlp.search.tuning",
        "edgenlp.bench.harness",
        "torch",
        "optuna",
        "onnxruntime",
        "transformers",
    )
    assert [m for m in loaded if m.startswith(heavy)] == []
