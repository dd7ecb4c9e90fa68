"""`jobgroup launch` through the running controller: the CLI sends the file's path and its
options over a unix stream socket; the controller — warm, with the spec code already imported —
validates, records the job and starts it in the same turn of its loop, and answers with the job
or the problems. The CLI then imports neither YAML nor msgspec nor SQLite: launch -> every node
started drops from ~200 ms to ~100 ms (bench/RESULTS.md). The contract is the same as
`jobgroup.api.launch` (the controller runs its first half, `submit.record`): bad input is an
error with exit code 2, a valid group is PENDING when the answer arrives.

Who talks to whom: the socket is a file in the private state directory (`sockname`), and before
sending anything the client checks that the process it reached runs as its own user
(SO_PEERCRED), so neither the request (paths, `--env` values, the variables nodes inherit) nor
the answer can come from or go to another local user.

Wire format: one JSON object per line each way.
  request  {"op": "launch", **LaunchRequest}  (`launchreq`: path, base_env and one field per
           flag of `launchflags.SENT`; checked by the controller, unknown fields refused)
           {"op": "status"}  (the controller's pid, and what it cannot write, if anything)
  answer   {"ok": true, "job": {"id", "name", "status", "tasks": [{"index", "name",
           "num_nodes"}]}, "warnings": [...], "isolation": "namespaces", "isolation_note"}
           {"ok": false, "error": "...", "exit_code": 2}
"""

from __future__ import annotations

import json
import os
import socket

from jobgroup.controller.sockname import RPC, address, peer_uid

MAX_REQUEST = 4 << 20  # a request carries a path and an environment, never a spec


def call(home: str | os.PathLike[str], request: dict, timeout: float = 30.0) -> dict | None:
    """Send one request and return the answer. None only when no controller serves RPC here
    (nothing was sent: the caller may start one, or do the work itself). Once the request is
    sent, the controller may have acted on it, so a missing or broken answer is an error answer
    (exit code 1), never None: falling back then could launch the same group twice. A server
    that is not this user's gets nothing: an error answer (exit code 1).

    Light on purpose (json, socket, os): `jobgroup launch`'s short road imports it."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        with address(home, RPC) as addr:
            s.connect(addr)
    except OSError:
        s.close()
        return None
    uid = peer_uid(s)
    if uid != os.geteuid():
        s.close()
        return {"ok": False, "exit_code": 1,
                "error": f"refusing to send the launch to the socket in {os.fspath(home)}: it is "
                         f"served by uid {uid}, not by you (uid {os.geteuid()})"}
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
