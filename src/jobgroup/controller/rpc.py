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
import os
import socket

from jobgroup.controller.sockname import rpc_name

MAX_REQUEST = 4 << 20  # a request carries a path and an environment, never a spec


def call(home: str | os.PathLike[str], request: dict, timeout: float = 30.0) -> dict | None:
    """Send one request and return the answer. None only when no controller serves RPC here
    (nothing was sent: the caller may start one, or do the work itself). Once the request is
    sent, the controller may have acted on it, so a missing or broken answer is an error answer
    (exit code 1), never None: falling back then could launch the same group twice.

    Light on purpose (json, socket, os): `jobgroup launch`'s short road imports it."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(rpc_name(home))
    except OSError:
        s.close()
        return None
    try:
        s.sendall(json.dumps(request).encode() + b"\n")
        chunks = []
        while True:
            data = s.recv(65536)
            if not data:
                break
            chunks.append(data)
            if data.endswith(b"\n"):
                break
        answer = json.loads(b"".join(chunks))
        if not isinstance(answer, dict):
            raise ValueError("not a JSON object")
        return answer
    except (OSError, ValueError) as e:
        return {"ok": False, "exit_code": 1,
                "error": f"the controller did not answer ({e}); check `jobgroup queue` before "
                         "trying again"}
    finally:
        s.close()
