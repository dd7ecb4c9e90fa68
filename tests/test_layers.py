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
