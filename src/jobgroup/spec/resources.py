"""Parsed forms of `resources` values, as SkyPilot reads them.

The models keep the user's form (``cpus: 4+``, ``accelerators: A100:2``) so specs round-trip;
backends ask these functions for numbers. Every parser raises ValueError with a message in the
user's terms for a malformed value, and returns None for an absent one.
"""

from __future__ import annotations

import math
import re

import msgspec

# Bytes per unit, SkyPilot's table (binary multiples; a bare number is GB).
MEMORY_UNITS = {
    "b": 1, "k": 2**10, "kb": 2**10, "ki": 2**10, "m": 2**20, "mb": 2**20, "mi": 2**20,
    "g": 2**30, "gb": 2**30, "gi": 2**30, "t": 2**40, "tb": 2**40, "ti": 2**40, "p": 2**50,
    "pb": 2**50, "pi": 2**50,
}
_QUANTITY = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-zA-Z]*)\s*(\+?)\s*")
_ACCEL = re.compile(r"\s*([^\s:,]+)\s*(?::\s*(\S+)\s*)?")
CPUS_FORMAT = "a positive number, optionally with '+' for 'at least' (e.g. 4, 4+, 0.5)"
MEMORY_FORMAT = ("a positive size in GB, optionally with a unit (KB, MB, GB, TB, PB, or Ki, Mi, "
                 "Gi, Ti, Pi) and '+' "
                 "for 'at least' (e.g. 32, 32+, 32GB, 512MB+)")
ACCEL_FORMAT = "NAME or NAME:COUNT (e.g. A100, A100:2, {A100: 2}, or a list of alternatives)"
PORTS_FORMAT = "a port or a range, 1-65535 (e.g. 8080, '8000-8010', or a list of them)"


class Quantity(msgspec.Struct, frozen=True):
    """An amount: exactly `value`, or at least `value` when `at_least` (written ``4+``)."""

    value: float
    at_least: bool = False

    def __str__(self) -> str:
        v = int(self.value) if self.value.is_integer() else self.value
        return f"{v}{'+' if self.at_least else ''}"


def _number(value: object, what: str, fmt: str, units: dict[str, int] | None) -> Quantity | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"invalid {what} {value!r}: expected {fmt}")
    at_least, scale = False, 1.0
    if isinstance(value, str):
        m = _QUANTITY.fullmatch(value)
        unit = m.group(2).lower() if m else ""
        if not m or (unit and (units is None or unit not in units)):
            raise ValueError(f"invalid {what} {value!r}: expected {fmt}")
        number, at_least = float(m.group(1)), m.group(3) == "+"
        if unit:
            scale = units[unit] / 2**30  # type: ignore[index]
    else:
        number = float(value)
    if math.isnan(number) or math.isinf(number) or number <= 0:
        raise ValueError(f"invalid {what} {value!r}: expected {fmt}")
    return Quantity(number * scale, at_least)


def parse_cpus(value: object) -> Quantity | None:
    """vCPUs per node: ``4``, ``0.5``, ``"4+"`` (at least 4). None when absent."""
    return _number(value, "cpus", CPUS_FORMAT, None)


def parse_memory(value: object) -> Quantity | None:
    """Memory per node in GB (binary: 1 GB = 2**30 bytes, SkyPilot's units): ``32``, ``"32+"``,
    ``"32GB"``, ``"512MB+"``, ``"1TB"``. None when absent."""
    return _number(value, "memory", MEMORY_FORMAT, MEMORY_UNITS)


def parse_disk_size(value: object) -> Quantity | None:
    """Disk size per node in GB (``256``, ``"256GB"``, ``"1TB"``); '+' is not allowed."""
    q = _number(value, "disk_size", "a positive size in GB (e.g. 256 or '1TB')", MEMORY_UNITS)
    if q is not None and q.at_least:
        raise ValueError(f"invalid disk_size {value!r}: '+' is not allowed here")
    return q


def _count(name: str, raw: object, original: object) -> float:
    if raw is None:
        return 1.0
    try:
        count = float(raw) if not isinstance(raw, bool) else math.nan
    except (TypeError, ValueError):
        count = math.nan
    if math.isnan(count) or math.isinf(count) or count <= 0:
        raise ValueError(f"invalid accelerator count {raw!r} for {name} in {original!r}: "
                         "expected a positive number")
    return count


def _one(spec: str, original: object) -> dict[str, float]:
    m = _ACCEL.fullmatch(spec)
    if not m:
        raise ValueError(f"invalid accelerators {original!r}: expected {ACCEL_FORMAT}")
    return {m.group(1): _count(m.group(1), m.group(2), original)}


def parse_accelerators(value: object) -> list[dict[str, float]] | None:
    """Accelerator alternatives per node, each ``{type: count}``, in the user's order.

    ``"A100"`` -> ``[{"A100": 1}]``; ``"A100:2"`` or ``{A100: 2}`` -> ``[{"A100": 2}]``;
    ``[A100:1, V100:2]`` (ordered preference) or ``{A100: 1, V100: 2}`` / ``{A100:1, V100:2}``
    (any of) -> ``[{"A100": 1}, {"V100": 2}]``. Fractions (``A100:0.5``) are allowed. None when
    absent; ValueError for an empty or malformed value.
    """
    if value is None:
        return None
    if isinstance(value, str):
        return [_one(value, value)]
    if isinstance(value, dict):
        out = []
        for name, count in value.items():
            if not isinstance(name, str):
                raise ValueError(f"invalid accelerators {value!r}: expected {ACCEL_FORMAT}")
            if count is None:  # {A100:1, V100:1} is a mapping of "A100:1" to null
                out.append(_one(name, value))
            elif ":" in name or not _ACCEL.fullmatch(name):
                raise ValueError(f"invalid accelerator name {name!r} in {value!r}: "
                                 f"expected {ACCEL_FORMAT}")
            else:
                out.append({name.strip(): _count(name, count, value)})
        if not out:
            raise ValueError(f"accelerators is empty: expected {ACCEL_FORMAT}")
        return out
    if isinstance(value, list):
        if not value:
            raise ValueError(f"accelerators is an empty list: expected {ACCEL_FORMAT}")
        out = []
        for item in value:
            if not isinstance(item, str):
                raise ValueError(f"invalid accelerators item {item!r}: expected {ACCEL_FORMAT}")
            out.append(_one(item, value))
        return out
    raise ValueError(f"invalid accelerators {value!r}: expected {ACCEL_FORMAT}")


def _port(raw: object, original: object) -> int:
    if isinstance(raw, str) and raw.strip().isdigit():
        raw = int(raw.strip())
    if isinstance(raw, bool) or not isinstance(raw, int) or not 1 <= raw <= 65535:
        raise ValueError(f"invalid port {original!r}: expected {PORTS_FORMAT}")
    return raw


def ports(value: object) -> list[int]:
    """Every port in `value` (an int, ``"8080"``, a range ``"8000-8002"``, or a list of those),
    in the user's order, without duplicates. ``[]`` when absent; ValueError when malformed."""
    if value is None:
        return []
    items = value if isinstance(value, list) else [value]
    out: dict[int, None] = {}
    for item in items:
        if isinstance(item, str) and "-" in item:
            lo_s, _, hi_s = item.partition("-")
            lo, hi = _port(lo_s, item), _port(hi_s, item)
            if lo > hi:
                raise ValueError(f"invalid port range {item!r}: the first port is above the last")
            if hi - lo >= 65535:  # pragma: no cover - bounded by the port checks
                raise ValueError(f"invalid port range {item!r}")
            out.update(dict.fromkeys(range(lo, hi + 1)))
        else:
            out[_port(item, item)] = None
    return list(out)
