"""The house's shape: data flows one way through src/tconv and kernels/, with no import circle.

Function-level (lazy) imports count: a route importing the dispatcher back inside a function is
still a circle in the design, even if Python resolves it at run time.
"""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {"": ROOT / "src" / "tconv", "kernels.": ROOT / "kernels"}


def _modules() -> dict[str, Path]:
    return {prefix + path.stem: path for prefix, folder in PACKAGES.items()
            for path in sorted(folder.glob("*.py"))}


def _imports(name: str, path: Path, modules) -> set[str]:
    """The tconv modules that ``name`` imports, anywhere in its body."""
    prefix = "kernels." if name.startswith("kernels.") else ""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            targets = [node.module] if node.module else [alias.name for alias in node.names]
            found.update(prefix + target for target in targets)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("tconv"):
            target = node.module[len("tconv"):].lstrip(".")
            found.update([target] if target else [alias.name for alias in node.names])
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
    assert sum(map(len, graph.values())) > 20, "the import graph was not read"
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_circle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
