"""Writes docs/api.md: every public name of the package, with its signature and summary.

    python tools/api_docs.py           # rewrite docs/api.md
    python tools/api_docs.py --check   # exit 1 if docs/api.md is stale or a name is undocumented

A public name is one listed in the ``__all__`` of a public module (no part of
its dotted path starts with ``_``). Its summary is the first paragraph of its
docstring; a constant or type alias is documented by the string literal that
follows its assignment in the module that defines it. The test suite runs
``--check`` (tests/test_api_docs.py), so a name cannot be exported without a
docstring, and docs/api.md cannot fall behind the code.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import inspect
import itertools
import pkgutil
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "haive_langgraph"
OUT = ROOT / "docs" / "api.md"

HEADER = """# API reference

Every public name of haive-langgraph, by module: what users import. Everything
else (modules and names starting with `_`) is internal and may change without
notice. This page is generated from the docstrings by `python tools/api_docs.py`
and checked by the test suite; the guides in `docs/` show how the pieces fit.
"""


def public_modules() -> list[ModuleType]:
    root = importlib.import_module(PACKAGE)
    found = [root]
    for info in pkgutil.walk_packages(root.__path__, PACKAGE + "."):
        if any(part.startswith("_") for part in info.name.split(".")):
            continue
        found.append(importlib.import_module(info.name))
    return [m for m in found if getattr(m, "__all__", None)]


def _summary(doc: str | None) -> str:
    if not doc:
        return ""
    text = inspect.cleandoc(doc)
    return " ".join(text.split("\n\n", 1)[0].split())


def _attribute_doc(module_name: str, name: str) -> str | None:
    """The string literal after ``name = ...`` (or ``name: T = ...``) in a module's source."""
    try:
        source = inspect.getsource(sys.modules[module_name])
    except (KeyError, OSError, TypeError):
        return None
    body = ast.parse(source).body
    for node, after in itertools.pairwise(body):
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AnnAssign):
            targets = [node.target]
        named = any(isinstance(t, ast.Name) and t.id == name for t in targets)
        if named and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant):
            value = after.value.value
            return value if isinstance(value, str) else None
    return None


def _defining_module(module: ModuleType, name: str, obj: Any) -> str:
    owner = getattr(obj, "__module__", None)
    if isinstance(owner, str) and (inspect.isclass(obj) or inspect.isfunction(obj)):
        return owner
    # Constants and aliases: follow the import in the exporting module.
    try:
        tree = ast.parse(inspect.getsource(module))
    except (OSError, TypeError):
        return module.__name__
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                if (alias.asname or alias.name) == name:
                    mod = node.module
                    if node.level:
                        base = module.__name__.split(".")
                        if not hasattr(module, "__path__"):
                            base = base[:-1]
                        mod = ".".join([*base[: len(base) - node.level + 1], mod])
                    # A package re-exporting its submodule's name: follow it there.
                    inner = sys.modules.get(mod)
                    return mod if inner is None else _defining_module(inner, name, obj)
    return module.__name__


def _kind_and_signature(obj: Any) -> tuple[str, str]:
    if inspect.isclass(obj):
        kind = "exception" if issubclass(obj, BaseException) else "class"
        return kind, ""
    if inspect.isfunction(obj) or inspect.isbuiltin(obj):
        try:
            return "function", str(inspect.signature(obj))
        except (TypeError, ValueError):
            return "function", "(...)"
    return "value", ""


def entries(module: ModuleType) -> tuple[list[str], list[str]]:
    """Markdown lines for a module, and the names that have no documentation."""
    lines = [f"## `{module.__name__}`", ""]
    summary = _summary(module.__doc__)
    if summary:
        lines += [summary, ""]
    missing = []
    for name in sorted(module.__all__):
        obj = getattr(module, name)
        kind, sig = _kind_and_signature(obj)
        if kind == "value":
            doc = _attribute_doc(_defining_module(module, name, obj), name)
        else:
            doc = obj.__doc__ if "__doc__" in vars(obj) or inspect.isfunction(obj) else None
        text = _summary(doc)
        if not text:
            missing.append(f"{module.__name__}.{name}")
        lines.append(f"- **`{name}{sig}`** ({kind}): {text}")
    lines.append("")
    return lines, missing


def render() -> tuple[str, list[str]]:
    out = [HEADER]
    missing: list[str] = []
    for module in public_modules():
        lines, miss = entries(module)
        out += lines
        missing += miss
    return "\n".join(out).rstrip() + "\n", missing


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    text, missing = render()
    for name in missing:
        print(f"undocumented public name: {name}")
    if args.check:
        current = OUT.read_text() if OUT.exists() else ""
        if current != text:
            print(f"{OUT.relative_to(ROOT)} is stale: run python tools/api_docs.py")
            return 1
        return 1 if missing else 0
    OUT.write_text(text)
    print(f"wrote {OUT.relative_to(ROOT)}")
    return 1 if missing else 0


if __name__ == "__main__":
    raise SystemExit(main())
