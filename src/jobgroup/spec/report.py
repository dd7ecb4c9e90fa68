"""Collecting the problems of one spec while it is loaded, each placed at its line and column."""

from __future__ import annotations

from jobgroup.spec import yamlnodes
from jobgroup.spec.convert import Finding
from jobgroup.spec.errors import Problem, SpecError

MAX_PROBLEMS = 100  # more would only scroll the first ones away


def path_str(path: tuple[str | int, ...]) -> str:
    """``("resources", "any_of", 1, "cpus")`` -> ``"resources.any_of[1].cpus"``."""
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


class Report:
    """Every problem found in the spec named `label`, in the order found."""

    def __init__(self, label: str):
        self.label = label
        self.problems: list[Problem] = []

    def at(self, doc: yamlnodes.Document | None, where: str, f: Finding) -> None:
        line, col = doc.pos(f.path, key=f.on_key) if doc is not None else (None, None)
        self.problems.append(Problem(self.label, line, col, where, path_str(f.path), f.message,
                                     "warning" if f.severity == "warning" else "error"))

    def issue(self, where: str, issue: yamlnodes.Issue) -> None:
        line, col = issue.pos or (None, None)
        self.problems.append(Problem(self.label, line, col, where, path_str(issue.path),
                                     issue.message))

    def error(self, doc: yamlnodes.Document | None, where: str, message: str,
              path: tuple[str | int, ...] = (), on_key: bool = False) -> None:
        self.at(doc, where, Finding(path, message, on_key=on_key))

    def warning(self, doc: yamlnodes.Document | None, where: str, message: str,
                path: tuple[str | int, ...] = (), on_key: bool = False) -> None:
        self.at(doc, where, Finding(path, message, on_key=on_key, severity="warning"))

    def raise_if_errors(self) -> list[Problem]:
        """The warnings, in file order, when there is no error; else raises SpecError."""
        ordered = sorted(self.problems, key=lambda p: (p.line or 0, p.col or 0))
        if len(ordered) > MAX_PROBLEMS:
            more = len(ordered) - MAX_PROBLEMS
            ordered = ordered[:MAX_PROBLEMS] + [Problem(
                self.label, None, None, "", "", f"... and {more} more problems not shown",
                "error" if any(p.severity == "error" for p in ordered[MAX_PROBLEMS:])
                else "warning")]
        if any(p.severity == "error" for p in ordered):
            raise SpecError(ordered)
        return ordered
