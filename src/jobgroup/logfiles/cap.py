"""The per-node log size cap: `JOBGROUP_LOG_MAX` in the launching environment, e.g. `100M`.

Off by default. `launch` reads it once and records the number of bytes with the job (its
options' `log_max`), so a restarted controller applies the same cap and a later change of the
variable affects only later launches. The local backend hands it to each node's shim (`-L`),
which rotates NAME.log to NAME.log.1 at the cap (see shim.c; readers: `follow.py`).
"""

from __future__ import annotations

import re
from typing import Mapping

from jobgroup.errors import UsageError

ENV = "JOBGROUP_LOG_MAX"
MIN = 64 << 10  # the shim copies in 64 KiB blocks; one block must fit a new file
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse(text: str) -> int:
    """Bytes from `123`, `64K`, `100M`, `1G`, `1.5G` (binary units, case and a trailing `B` or
    `iB` ignored); 0 for `0`, `off`, `none` or an empty value (no cap). A clear UsageError
    for anything else, or a cap under 64K."""
    value = text.strip()
    if value.lower() in ("", "0", "off", "none", "no"):
        return 0
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([kKmMgGtT]?)(?:i?[bB])?", value)
    if not m:
        raise UsageError(f"{ENV}={text!r}: expected a size such as 100M, 1G or 65536 (bytes), "
                         "or 0 for no cap")
    size = int(float(m.group(1)) * _UNITS[m.group(2).upper()])
    if size == 0:
        return 0
    if size < MIN:
        raise UsageError(f"{ENV}={text!r}: a log cap must be at least 64K")
    return size


def from_env(environ: Mapping[str, str]) -> int:
    """The cap the launching environment asks for (0: none)."""
    return parse(environ.get(ENV, ""))
