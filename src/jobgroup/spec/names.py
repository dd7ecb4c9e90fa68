"""Group and task names.

Accepted (like SkyPilot): non-empty strings of letters (any script), digits, ``-`` and ``_``.
Names become hostnames (``{task}-{rank}.{group}``), so a name that is not a DNS label (RFC 1123:
lower-case ASCII letters, digits and ``-``, not starting or ending with ``-``, at most 63
characters) is accepted with a warning: peers may fail to resolve it on some backends.
"""

from __future__ import annotations

import re

MAX_LABEL = 63
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


def name_problem(name: object) -> str | None:
    """Why `name` cannot be a group or task name (an error), or None when it can."""
    if not isinstance(name, str):
        return f"a name must be a string, not {type(name).__name__} ({name!r}); quote it"
    if not name:
        return "a name must not be empty"
    bad = sorted({c for c in name if not (c.isalnum() or c in "-_")})
    if bad:
        shown = ", ".join(repr(c) for c in bad[:5])
        return f"invalid name {name!r}: use only letters, digits, '-' and '_' (found {shown})"
    return None


def dns_label_problem(name: str) -> str | None:
    """Why `name` is not a valid DNS label (lower-case a-z, 0-9, '-'; no leading or trailing
    '-'; at most 63 characters), or None when it is one."""
    if not name:
        return "it is empty"
    if len(name) > MAX_LABEL:
        return f"it is longer than {MAX_LABEL} characters ({len(name)})"
    if _DNS_LABEL.fullmatch(name):
        return None
    if any(c.isupper() for c in name):
        return "it has upper-case letters"
    if "_" in name:
        return "it contains '_'"
    if not name.isascii():
        return "it has non-ASCII characters"
    if name.startswith("-") or name.endswith("-"):
        return "it starts or ends with '-'"
    return "it has characters other than a-z, 0-9 and '-'"  # pragma: no cover


def hostname_suggestion(name: str) -> str:
    """A DNS-label version of `name` (lower case, invalid runs -> '-'), never empty."""
    out = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:MAX_LABEL].strip("-")
    return out or "job"
