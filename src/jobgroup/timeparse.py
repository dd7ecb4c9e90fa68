"""Times as people type them on a command line, and as `--timestamps` prints them. Stdlib
only and light (the `queue` and `logs` commands import it; the spec package is not needed).

- an age: `90` (seconds), `30s`, `10m`, `6h`, `2d`, `1w` (`1.5h` too);
- a point in time: an age ago, or ISO 8601 (`2026-05-09T14:30`, `2026-05-09 14:30:05`,
  `2026-05-09`, with `Z` or `+02:00`; without an offset it is local time).
"""

from __future__ import annotations

import re
import time

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_AGE = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([smhdw]?)\s*", re.IGNORECASE)
AGE_FORMAT = "NUMBER[s|m|h|d|w], e.g. 90, 30s, 10m, 6h, 2d"


def parse_age(text: str) -> float:
    """Seconds in an age such as `10m`; ValueError saying what was expected."""
    m = _AGE.fullmatch(text)
    if not m:
        raise ValueError(f"{text!r} is not a duration ({AGE_FORMAT})")
    return float(m.group(1)) * _UNITS[(m.group(2) or "s").lower()]


def parse_since(text: str, now: float | None = None) -> float:
    """Seconds since the epoch of `text`: an age ago (`10m`), or an ISO 8601 time (local time
    without an offset). ValueError saying what was expected."""
    try:
        return (time.time() if now is None else now) - parse_age(text)
    except ValueError:
        pass
    from datetime import datetime

    value = text.strip()
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{text!r} is neither a duration ({AGE_FORMAT}) nor an ISO 8601 time "
                         "(e.g. 2026-05-09T14:30 or 2026-05-09 14:30:05+02:00)") from None
    return moment.timestamp()  # naive: local time, as `date` shows it


def iso(ts: float) -> str:
    """`2026-05-09T12:30:05.123Z`: UTC, milliseconds, fixed width (24 characters), as
    `kubectl logs --timestamps` and `docker logs -t` print theirs (they print nanoseconds)."""
    ms = int(round(ts * 1000))
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}Z"
