"""`jobgroup launch` through the running controller: the CLI sends the file's path and its
options over a unix stream socket; the controller — warm, with the spec code already imported —
validates, records the job and starts it in the same turn of its loop, and answers with the job
or the problems. The CLI then imports neither YAML nor msgspec nor SQLite: launch -> every node
started drops from ~200 ms to ~100 ms (bench/RESULTS.md). The contract is the same as
`jobgroup.api.launch` (which the controller calls): bad input is an error with exit code 2, a
valid group is PENDING when the answer arrives.

Wire format: one JSON object per line each way.
  request  {"op": "launch", "path": ABS_PATH, "name", "env", "infra", "grace", "gpus_any",
            "cpu_only", "base_env"}
  answer   {"ok": true, "job": {...Job...}, "warnings": [...], "isolation": "namespaces"}
           {"ok": false, "error": "...", "exit_code": 2}
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

from jobgroup.controller.sockname import rpc_name

MAX_REQUEST = 4 << 20  # a request carries a path and an environment, never a spec


def call(home: Path, request: dict, timeout: float = 30.0) -> dict | None:
    """Send one request; the answer, or None when no controller serves RPC here."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(rpc_name(home))
        s.sendall(json.dumps(request).encode() + b"\n")
        chunks = []
        while True:
            data = s.recv(65536)
            if not data:
                break
            chunks.append(data)
            if data.endswith(b"\n"):
                break
    except (ConnectionRefusedError, FileNotFoundError):
        return None
    except OSError:
        return None
    finally:
        s.close()
    try:
        return json.loads(b"".join(chunks))
    except ValueError:
        return None
