"""Terminal output: colours only on a terminal (and never with NO_COLOR), aligned tables."""

from __future__ import annotations

import os
import sys
from typing import IO, TYPE_CHECKING, Sequence

from jobgroup.state.status import Status

if TYPE_CHECKING:
    from jobgroup import api

_CODES = {
    "red": "31", "green": "32", "yellow": "33", "blue": "34", "magenta": "35", "cyan": "36",
    "bold": "1", "dim": "2",
}
# Colours handed out to tasks in log prefixes, in order.
TASK_COLOURS = ("cyan", "magenta", "yellow", "blue", "green", "red")


def use_colour(stream: IO[str] | None = None) -> bool:
    """True when `stream` (stdout by default) is a terminal and NO_COLOR is unset."""
    stream = stream or sys.stdout
    if os.environ.get("NO_COLOR"):
        return False
    return bool(getattr(stream, "isatty", lambda: False)())


def paint(text: str, colour: str | None, enabled: bool) -> str:
    """`text` wrapped in the ANSI code for `colour` when `enabled`."""
    if not enabled or not colour:
        return text
    return f"\x1b[{_CODES[colour]}m{text}\x1b[0m"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Rows aligned under headers, two spaces between columns, no trailing spaces."""
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    lines = []
    for row in [list(headers), *rows]:
        cells = [str(c).ljust(widths[i]) for i, c in enumerate(row)]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


_STATUS_COLOUR = {
    Status.SUCCEEDED: "green", Status.RUNNING: "cyan", Status.STARTING: "cyan",
    Status.PENDING: "yellow", Status.CANCELLING: "yellow", Status.CANCELLED: "yellow",
}


def status_text(status: Status, colour: bool) -> str:
    """A status, coloured by what it means (green done well, red failed, ...)."""
    c = _STATUS_COLOUR.get(status, "red" if status.failed else None)
    return paint(status.value, c, colour)


def end_line(job: api.Job, colour: bool = False) -> str:
    """`Job 3 (name) FAILED: task 'a' run exited with code 3`."""
    reason = f": {job.reason}" if job.reason else ""
    return f"Job {job.id} ({job.name}) {status_text(job.status, colour)}{reason}"
