"""The layers import only downwards (docs/architecture.md): every `import` in the package,
function-local ones included, read with `ast`. A backward arrow is a failure naming both ends."""

from __future__ import annotations

import ast
from pathlib import Path

import jobgroup

ROOT = Path(jobgroup.__file__).parent

# area -> areas it must never import (an area is the first name below `jobgroup`)
FORBIDDEN = {
    "state": {"controller", "api", "submit", "logfiles", "backends", "cli", "dashboard"},
    "spec": {"controller", "api", "submit", "logfiles", "backends", "state", "cli", "dashboard"},
    "logfiles": {"controller", "api", "submit", "backends", "cli", "dashboard"},
    "backends": {"controller", "api", "submit", "cli", "dashboard"},
    "resources": {"controller", "api", "submit", "cli", "dashboard"},
    "controller": {"api", "cli", "dashboard"},
    "submit": {"api", "controller", "cli", "dashboard"},
    "api": {"cli", "dashboard"},
    "dashboard": {"cli"},
}
# area -> modules below it that it must never import either: backends are handed what they
# need by the controller (`JobContext`, `Backend.jobs`) and never open the store themselves
FORBIDDEN_MODULES = {
    "backends": {"jobgroup.state.store", "jobgroup.state.transitions"},
}


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module \
                and node.module.startswith("jobgroup"):
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("jobgroup"))
    return out


def _area(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_no_backward_arrows():
    wrong = []
    for path in sorted(ROOT.rglob("*.py")):
        m = _module(path)
        if m == "jobgroup.__main__":
            continue  # the console entry point runs the CLI
        for target in sorted(_imports(path)):
            if _area(target) in FORBIDDEN.get(_area(m), set()) or any(
                    target == f or target.startswith(f + ".")
                    for f in FORBIDDEN_MODULES.get(_area(m), ())):
                wrong.append(f"{m} imports {target}")
    assert not wrong, "\n".join(wrong)


def _graph() -> dict[str, set[str]]:
    """module -> the jobgroup modules it imports (function-local and TYPE_CHECKING ones
    included: a circle there is still a circle to read)."""
    modules = {_module(p): p for p in ROOT.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for m, path in modules.items():
        out = set()
        for target in _imports(path):
            while target and target not in modules:  # `from a.b import name` -> a.b
                target = target.rpartition(".")[0]
            if target and target != m:
                out.add(target)
        graph[m] = out
    return graph


def _circles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(comp)

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_no_import_circles_in_the_cli_and_the_kubernetes_client():
    """Issue 21: cli/fastlaunch <-> cli/jobs and kubernetes client <-> config imported each
    other. No module of the CLI, nor those two, is part of any import circle."""
    watched = ("jobgroup.cli.", "jobgroup.backends.kubernetes.client",
               "jobgroup.backends.kubernetes.config")
    bad = [sorted(c) for c in _circles(_graph()) if any(m.startswith(watched) for m in c)]
    assert not bad, bad
