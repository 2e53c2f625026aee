"""Checks the package's shape: no import cycle, no hand-written file over 600 lines.

    python tools/check_shape.py            # prints what is wrong; exit status 1 if anything

An import counts wherever it stands (module level or inside a function):
a function-level import that closes a cycle only hides it. Imports under
``if TYPE_CHECKING:`` do not run and do not count. Importing
``a.b.c`` runs ``a/__init__.py`` and ``a/b/__init__.py`` first, so a module
also depends on the packages above what it imports.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "haive_langgraph"
MAX_LINES = 600
# Files written by a tool (their generator is checked instead).
GENERATED: frozenset[str] = frozenset()


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The package modules ``path`` imports (and the packages they run)."""
    name = module_name(path)
    is_pkg = path.name == "__init__.py"
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()

    def add(target: str) -> None:
        parts = target.split(".")
        for i in range(1, len(parts) + 1):
            mod = ".".join(parts[:i])
            if mod in modules and mod != name:
                found.add(mod)

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _type_checking(child):
                for sub in child.orelse:
                    visit(sub)
                continue
            if isinstance(child, ast.Import):
                for alias in child.names:
                    add(alias.name)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = name.split(".")
                    base = base if is_pkg else base[:-1]
                    base = base[: len(base) - child.level + 1]
                    target = ".".join(base + ([child.module] if child.module else []))
                else:
                    target = child.module or ""
                add(target)
                for alias in child.names:
                    add(f"{target}.{alias.name}")
            visit(child)

    visit(tree)
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    sys.setrecursionlimit(10_000)

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                strong(w)
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
            strong(v)
    return out


def _package_edge(src: str, dst: str) -> bool:
    """An edge from a package's ``__init__`` down into its own modules (re-exports)."""
    return dst.startswith(src + ".")


def problems() -> list[str]:
    files = sorted((ROOT / PACKAGE).rglob("*.py"))
    modules = {module_name(p) for p in files}
    graph = {module_name(p): imports_of(p, modules) for p in files}
    found = []
    for p in files:
        rel = str(p.relative_to(ROOT))
        n = len(p.read_text().splitlines())
        if n > MAX_LINES and rel not in GENERATED:
            found.append(f"{rel}: {n} lines (more than {MAX_LINES})")
    # A package's __init__ importing its own submodules is how re-exports work;
    # a cycle through it is real only when a submodule imports the package
    # back (or a sibling that does).
    for comp in cycles(graph):
        members = set(comp)
        edges = [
            f"{a} -> {b}"
            for a in comp
            for b in sorted(graph[a] & members)
            if not _package_edge(a, b)
        ]
        sub = {a: {b for b in graph[a] & members if not _package_edge(a, b)} for a in comp}
        if cycles(sub):
            found.append("import cycle: " + "; ".join(edges))
    return found


def main() -> int:
    found = problems()
    for line in found:
        print(line)
    return 1 if found else 0


if __name__ == "__main__":
    raise SystemExit(main())
