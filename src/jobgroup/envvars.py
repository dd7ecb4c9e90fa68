"""`--env K=V` parsing (a module of its own: the CLI's launch path imports nothing heavier)."""

from __future__ import annotations

from typing import Iterable

from jobgroup.errors import UsageError


def parse_env(pairs: Iterable[str]) -> dict[str, str]:
    """`K=V` strings -> dict; a clear UsageError for anything else."""
    out: dict[str, str] = {}
    for p in pairs:
        key, sep, value = p.partition("=")
        if not sep or not key or not key.replace("_", "a").isalnum() or key[0].isdigit():
            raise UsageError(f"--env {p!r}: expected KEY=VALUE with a valid variable name")
        out[key] = value
    return out
