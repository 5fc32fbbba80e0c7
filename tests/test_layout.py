"""The package's shape is a promise (docs/architecture.md): layers that import downward only, no import
cycles, one facade, one assembly of the training step, small modules. These tests fail the day one breaks."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "gradwise"

# Each top-level part of gradwise and its layer: a module may import from its own layer or any lower one.
LAYERS = {
    "core": 0, "config": 1, "data": 2, "models": 2, "hf": 3, "objectives": 4, "optim": 4, "tasks": 5,
    "training": 6, "inference": 6, "tools": 7, "plan": 7, "search": 7, "autofit": 7, "export": 7, "report": 7, "api": 8,
    "cli": 9, "__init__": 10, "__main__": 10,
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[str, int]]:
    """gradwise modules imported by ``path`` (inside functions too; not under ``if TYPE_CHECKING``), with lines."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
               for n in ast.walk(node)}
    here = _module_name(path)
    base = here if path.name == "__init__.py" else here.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                parts = base.split(".")
                module = ".".join(parts[: len(parts) - node.level + 1] + ([module] if module else []))
            out += [(f"{module}.{a.name}", node.lineno) for a in node.names] or [(module, node.lineno)]
    return [(name, line) for name, line in out if name == "gradwise" or name.startswith("gradwise.")]


def _graph() -> dict[str, dict[str, int]]:
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}

    def resolve(name: str) -> str | None:
        while name and name not in files:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, dict[str, int]] = {}
    for module, path in files.items():
        edges = graph.setdefault(module, {})
        for name, line in _imports(path):
            target = resolve(name)
            if target and target != module and not module.startswith(target + "."):  # not its own package
                edges.setdefault(target, line)
    return graph


def _layer(module: str) -> int:
    parts = module.split(".")
    if len(parts) == 1:  # gradwise/__init__.py
        return LAYERS["__init__"]
    return LAYERS[parts[1]]


def test_every_part_of_the_package_has_a_layer() -> None:
    parts = {p.name if p.is_dir() else p.stem for p in PACKAGE.iterdir()
             if (p.is_dir() and (p / "__init__.py").is_file()) or p.suffix == ".py"}
    assert parts <= set(LAYERS), f"give these a layer in tests/test_layout.py and docs/architecture.md: {parts - set(LAYERS)}"


def test_no_import_cycles() -> None:
    graph = _graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


def test_imports_point_down_the_layers() -> None:
    upward = [f"{m} (layer {_layer(m)}) imports {t} (layer {_layer(t)}) at line {line}"
              for m, edges in _graph().items() for t, line in edges.items() if _layer(t) > _layer(m)]
    assert not upward, "\n".join(upward)


def test_only_the_command_line_and_the_package_import_the_facade() -> None:
    users = sorted(m for m, edges in _graph().items() if "gradwise.api" in edges)
    assert set(users) <= {"gradwise", "gradwise.cli", "gradwise.cli.commands", "gradwise.cli.args",
                          "gradwise.cli.data", "gradwise.cli.export", "gradwise.cli.fit", "gradwise.cli.plan",
                          "gradwise.cli.report", "gradwise.cli.step", "gradwise.cli.tune", "gradwise.cli.run",
                          "gradwise.cli.autofit"}, users


def test_the_training_step_is_assembled_in_one_place() -> None:
    builders = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "OptimizationStep":
                builders.append(str(path.relative_to(PACKAGE)))
    assert builders == ["training/build.py"], builders


def test_modules_stay_small() -> None:
    long = {str(p.relative_to(PACKAGE)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > 500}
    assert not long, f"split these modules (over 500 lines): {long}"


def test_the_layout_test_sees_a_cycle_and_an_upward_import(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The checks above can fail: a fake package with a cycle and an upward import is caught."""
    fake = tmp_path / "gradwise"
    for part in ("core", "training"):
        (fake / part).mkdir(parents=True)
        (fake / part / "__init__.py").write_text("")
    (fake / "__init__.py").write_text("")
    (fake / "core" / "a.py").write_text("def f():\n    from gradwise.training.b import g\n")
    (fake / "training" / "b.py").write_text("from gradwise.core.a import f\n")
    monkeypatch.setattr(f"{__name__}.PACKAGE", fake)
    graph = _graph()
    assert graph["gradwise.core.a"] == {"gradwise.training.b": 2}
    assert graph["gradwise.training.b"] == {"gradwise.core.a": 1}
    with pytest.raises(AssertionError, match=r"import cycles: \[\['gradwise.core.a'"):
        test_no_import_cycles()
    with pytest.raises(AssertionError, match=r"gradwise.core.a \(layer 0\) imports gradwise.training.b \(layer 6\)"):
        test_imports_point_down_the_layers()
