"""Durations and ages as people read them (shared by the CLI and the dashboard)."""

from __future__ import annotations

import time


def human_duration(seconds: float | None) -> str:
    """`-`, `4.2s`, `37s`, `3m 05s`, `2h 10m`, `1d 03h` (fixed-width parts: columns align)."""
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 60:
        return f"{seconds:.1f}s" if seconds < 10 else f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{s // 86400}d {s % 86400 // 3600:02d}h"


def human_ago(ts: float) -> str:
    """`12s ago`, `3m ago`, ..."""
    return human_duration(max(0.0, time.time() - ts)).split(" ")[0] + " ago"


def human_bytes(n: int | float) -> str:
    """Sizes of memory in binary units, as limits are given: `812 B`, `3.4 KiB`, `512.0 MiB`,
    `1.50 GiB`."""
    value = float(n)
    for unit in ("B", "KiB", "MiB"):
        if abs(value) < 1024:
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.2f} GiB"
