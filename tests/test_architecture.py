"""The house's shape: data flows one way through src/tconv and kernels/, with no import circle.

Function-level (lazy) imports count: a route importing the dispatcher back inside a function is
still a circle in the design, even if Python resolves it at run time.
"""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {"tconv": ROOT / "src" / "tconv", "tconv.kernels": ROOT / "kernels"}


def _modules() -> dict[str, Path]:
    """Every module of the package by its dotted name; a package is its ``__init__``."""
    modules = {}
    for package, folder in PACKAGES.items():
        for path in sorted(folder.rglob("*.py")):
            parts = [package, *path.relative_to(folder).with_suffix("").parts]
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def _imports(name: str, path: Path, modules) -> set[str]:
    """The tconv modules that ``name`` imports, anywhere in its body."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
            continue
        if not isinstance(node, ast.ImportFrom):
            continue
        if node.level:
            base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1])
            base = f"{base}.{node.module}" if node.module else base
        elif (node.module or "").startswith("tconv"):
            base = node.module
        else:
            continue
        # ``from base import name``: name is a submodule, or something defined in base.
        found.update(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                     for alias in node.names)
    return {module for module in found if module in modules and module != name}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    cycles, done = [], set()

    def visit(node, path):
        for dependency in sorted(graph[node]):
            if dependency in path:
                cycles.append(path[path.index(dependency):] + [dependency])
            elif dependency not in done:
                visit(dependency, path + [dependency])
        done.add(node)

    for node in sorted(graph):
        visit(node, [node])
    return cycles


def test_no_import_circle_in_tconv():
    modules = _modules()
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    assert sum(map(len, graph.values())) > 30, "the import graph was not read"
    assert any(name.count(".") > 1 and name in dependencies
               for dependencies in graph.values() for name in dependencies), "subpackages unread"
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_circle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
