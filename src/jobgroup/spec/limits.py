"""Limits of the systems a spec ends up in, checked when it is loaded, so that `validate` refuses
what `launch` could not do (a clear error with file:line instead of a failed job).

- Linux takes each argument and environment string of a new program up to MAX_ARG_STRLEN
  (32 pages: 128 KiB, the terminating NUL included): a node's `run`/`setup` is started as
  ``bash -c SCRIPT`` and each `envs`/`secrets` entry becomes one ``NAME=value`` string. A script
  keeps `SCRIPT_RESERVE` bytes free for what a backend puts before it.
- All of them together must fit ARG_MAX (a quarter of the stack limit: 2 MiB by default), with
  the node's other variables (inherited, SKYPILOT_*, ...): a task's own share is capped at
  `TASK_ENV_TOTAL`.
- No NUL byte can be in such a string.
- A hostname (``{task}-{rank}``) and each label of ``{task}-{rank}.{group}`` is at most 63
  bytes (RFC 1035; the kernel's hostname takes 64).
- Counts are bounded so that no backend or store is asked for absurd numbers (`num_nodes` of a
  whole group, restart counts).
"""

from __future__ import annotations

MAX_ARG_STRLEN = 32 * 4096
SCRIPT_RESERVE = 4096
MAX_SCRIPT = MAX_ARG_STRLEN - 1 - SCRIPT_RESERVE
MAX_ENV_ENTRY = MAX_ARG_STRLEN - 1  # len("NAME=value") in bytes
TASK_ENV_TOTAL = 1024 * 1024
MAX_LABEL = 63
MAX_GROUP_NODES = 10_000
MAX_RESTARTS = 1_000_000


def size(text: str) -> int:
    """Bytes of `text` once encoded as the kernel gets it (UTF-8)."""
    return len(text.encode("utf-8", "surrogatepass"))


def kib(n: int) -> str:
    return f"{n / 1024:.1f} KiB" if n % 1024 else f"{n // 1024} KiB"
