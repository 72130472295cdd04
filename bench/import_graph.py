"""Structure figures of the code, from the code itself (stdlib ``ast`` only, nothing is imported).

``python bench/import_graph.py`` prints: the project modules, import cycles among them (strongly connected
components of the module import graph with more than one module), imports inside functions, and modules
over 500 lines. Imports under ``if TYPE_CHECKING:`` are left out of the graph: they never run.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("pipeline", "agents", "tables", "web", "devstack")
LONG_MODULE = 500


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules(root: Path) -> dict[str, Path]:
    modules: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")) if (root / package).is_dir() else ():
            modules[module_name(path, root)] = path
    return modules


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST, in_function: bool = False) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Every import that runs, with whether it sits inside a function."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                yield from _imports(ast.Module(body=[child], type_ignores=[]), in_function)
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node, in_function
        yield from _imports(node, in_function or isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef))


def _targets(node: ast.Import | ast.ImportFrom, module: str, is_package: bool, modules: dict[str, Path]) -> set[str]:
    """The project modules one import statement loads (the deepest known module of each imported name)."""
    names: list[str] = []
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:
            package = module.split(".") if is_package else module.split(".")[:-1]
            package = package[: len(package) - (node.level - 1)]
            base = ".".join([*package, base] if base else package)
        names = [f"{base}.{alias.name}" for alias in node.names] + [base]
    found: set[str] = set()
    for name in names:
        parts = name.split(".")
        for end in range(len(parts), 0, -1):
            candidate = ".".join(parts[:end])
            if candidate in modules:
                found.add(candidate)
                break
    return found


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            advanced = False
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                    advanced = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component: list[str] = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                components.append(sorted(component))
    return components


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=ROOT)
    parser.add_argument("-v", "--verbose", action="store_true", help="list the cycles, local imports, long modules")
    args = parser.parse_args(argv)
    modules = project_modules(args.root)
    graph: dict[str, set[str]] = {name: set() for name in modules}
    top_level: dict[str, set[str]] = {name: set() for name in modules}
    local_imports: list[str] = []
    long_modules: list[tuple[int, str]] = []
    for name, path in modules.items():
        source = path.read_text(encoding="utf-8")
        lines = source.count("\n")
        if lines > LONG_MODULE:
            long_modules.append((lines, name))
        tree = ast.parse(source, str(path))
        for node, in_function in _imports(tree):
            targets = _targets(node, name, path.name == "__init__.py", modules) - {name}
            # A package's __init__ is loaded with any of its submodules: an edge to the package is enough.
            graph[name] |= targets
            if in_function:
                local_imports.append(f"{name}:{node.lineno}")
            else:
                top_level[name] |= targets
    cycles = [component for component in strongly_connected(graph) if len(component) > 1]
    load_cycles = [component for component in strongly_connected(top_level) if len(component) > 1]
    print(f"modules: {len(modules)}")
    print(f"import cycles (SCCs > 1 module, every import): {len(cycles)}")
    print(f"import cycles (module-level imports only): {len(load_cycles)}")
    print(f"imports inside functions: {len(local_imports)}")
    print(f"modules over {LONG_MODULE} lines: {len(long_modules)}")
    if args.verbose:
        for component in cycles:
            print("cycle:", " <-> ".join(component))
        for where in local_imports:
            print("local import:", where)
        for lines, name in sorted(long_modules, reverse=True):
            print(f"long module: {name} ({lines} lines)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
