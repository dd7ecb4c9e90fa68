"""Durations (`termination_delay`) as SkyPilot writes them: ``30s``, ``5m``, ``1h``, ``1d``,
``2w`` (case-insensitive; ``1.5h`` works too), or a plain number of seconds (``30``, ``"30"``)."""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from jobgroup.spec.models import JobGroup

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_DURATION = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([smhdw]?)\s*", re.IGNORECASE)
FORMAT = "NUMBER[s|m|h|d|w], e.g. 30s, 5m, 1h, 1d, 2w, or plain seconds"


def parse_duration(value: object) -> float:
    """Seconds in `value`: a non-negative number, or a string NUMBER[s|m|h|d|w].

    Raises ValueError saying what was expected (booleans, negatives, NaN and infinity included).
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"invalid duration {value!r}: expected {FORMAT}")
    if isinstance(value, str):
        m = _DURATION.fullmatch(value)
        if not m:
            raise ValueError(f"invalid duration {value!r}: expected {FORMAT}")
        seconds = float(m.group(1)) * _UNITS[(m.group(2) or "s").lower()]
    else:
        seconds = float(value)
    if math.isnan(seconds) or math.isinf(seconds) or seconds < 0:
        raise ValueError(f"invalid duration {value!r}: expected a finite, non-negative {FORMAT}")
    return seconds


def delay_for(group: JobGroup, task_name: str) -> float:
    """Seconds to wait, once every primary task has finished, before stopping auxiliary task
    `task_name`: its entry in a `termination_delay` map, else the map's `default`, else the
    scalar `termination_delay`, else 0. (Whether a failed primary skips the delay is the
    controller's policy, not this function's.) Assumes a loaded or `check`ed group."""
    delay = group.termination_delay
    if delay is None:
        return 0.0
    if isinstance(delay, dict):
        if task_name in delay:
            return parse_duration(delay[task_name])
        return parse_duration(delay["default"]) if "default" in delay else 0.0
    return parse_duration(delay)
