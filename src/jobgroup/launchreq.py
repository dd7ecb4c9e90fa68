"""The typed launch request: what `jobgroup launch` (either road), the dashboard and the Python
API hand to `api.launch`, and what travels over the controller's socket unchanged.

`LaunchRequest` is built from `launchflags.SENT` (one field per flag sent), plus `path` (the
spec file, absolute; empty when the spec is given otherwise), `base_env` (the environment
nodes start from; None: the named part of the launcher's, see `envvars.inherited`) and `cwd`
(the launcher's current directory, against which relative paths resolve; empty: this
process's). A request
that does not match it — an unknown field, a wrong type — is refused with a message, never half
applied.
"""

from __future__ import annotations

from typing import Any

import msgspec

from jobgroup.errors import UsageError
from jobgroup.launchflags import SENT, Flag

_TYPES: dict[str, Any] = {
    "text": str | None, "number": float, "count": int | None, "switch": bool,
    "env": dict[str, str], "choice": str | None, "infra": str | None,
}


def _field(f: Flag) -> tuple[str, Any, Any]:
    default = msgspec.field(default_factory=dict) if f.kind == "env" else f.default
    return (f.field, _TYPES[f.kind], default)


LaunchRequest = msgspec.defstruct(
    "LaunchRequest",
    [("path", str, ""), *(_field(f) for f in SENT), ("base_env", dict[str, str] | None, None),
     ("cwd", str, "")],
    kw_only=True, forbid_unknown_fields=True, module=__name__,
)
LaunchRequest.__doc__ = __doc__


def from_wire(data: object) -> Any:
    """A LaunchRequest from what a client sent (a JSON object); UsageError naming what is
    wrong otherwise."""
    if isinstance(data, dict):
        data = {k: v for k, v in data.items() if k != "op"}
    try:
        return msgspec.convert(data, LaunchRequest)
    except msgspec.ValidationError as e:
        raise UsageError(f"a malformed launch request: {e}") from None


def make(**fields: object) -> Any:
    """A LaunchRequest from keyword fields (UsageError for unknown names or wrong types)."""
    return from_wire(fields)
