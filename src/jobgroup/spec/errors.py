"""Problems found in a spec, and the error that carries them.

A `Problem` is one thing wrong (or worth a warning) in a spec, with its location. `SpecError`
carries every error found in one pass: loading never stops at the first one.

Text form of a problem (one line):

    FILE:LINE:COL: WHERE KEY.PATH: MESSAGE

- FILE is the path as given (``<string>`` for YAML text, ``<JobGroup>`` for a spec built in code);
- LINE and COL are 1-based; a problem about the file as a whole (it does not exist, it is a
  directory, ...) has no position and reads ``FILE: MESSAGE``;
- WHERE names the document: ``header``, ``task 'trainer'``, or ``task #2`` (the 2nd task document)
  when the task has no usable name; it is empty for problems outside any document (YAML syntax);
- KEY.PATH is the key path inside the document (``resources.accelerators``, ``envs.LR``,
  ``resources.any_of[1].cpus``); empty for the document as a whole;
- warnings read ``... : warning: MESSAGE``.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from jobgroup.errors import JobGroupError

Severity = Literal["error", "warning"]


class Problem(msgspec.Struct, frozen=True):
    """One problem in a spec. `line`/`col` are 1-based, or None when not tied to a position."""

    file: str
    line: int | None
    col: int | None
    where: str
    path: str
    message: str
    severity: Severity = "error"

    def __str__(self) -> str:
        loc = self.file if self.line is None else f"{self.file}:{self.line}:{self.col or 1}"
        subject = " ".join(s for s in (self.where, self.path) if s)
        text = f"warning: {self.message}" if self.severity == "warning" else self.message
        return f"{loc}: {subject}: {text}" if subject else f"{loc}: {text}"

    def to_dict(self) -> dict[str, object]:
        """JSON-friendly form (used by `jobgroup validate --json`)."""
        return {
            "file": self.file, "line": self.line, "col": self.col, "where": self.where,
            "path": self.path, "message": self.message, "severity": self.severity,
        }


class SpecError(JobGroupError):
    """A spec is invalid. `problems` holds every problem found, in file order: at least one error,
    plus any warnings (at most 100, then one "... and N more" entry). `str()` lists them, one per
    line. Exit code 2."""

    exit_code = 2

    def __init__(self, problems: list[Problem]):
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))
