"""What every task of the RL group shares: where the others are, JSON over HTTP, a tiny server.

Tasks find each other the way SkyPilot job groups do: node `rank` of task `task` is the host
`{task}-{rank}.{group}` (group = $SKYPILOT_JOBGROUP_NAME). There is no readiness feature, so a
client retries while a peer is still starting, for a bounded time.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit

# The ports each service listens on (the YAML declares the same under `resources.ports`).
PORTS = {"data-server": 8000, "rollout-server": 8001, "reward-server": 8002, "replay-buffer": 8003}

GROUP = os.environ.get("SKYPILOT_JOBGROUP_NAME", "rl-post-training")
RANK = int(os.environ.get("SKYPILOT_NODE_RANK", "0"))
NUM_NODES = int(os.environ.get("SKYPILOT_NUM_NODES", "1"))
JOB_ID = os.environ.get("SKYPILOT_MANAGED_JOB_ID", "0")
# Weights, results and the plot of this run live in the shared volume, one folder per job.
RUN_DIR = os.path.join(os.environ.get("CHECKPOINT_DIR", "/checkpoints"), f"run-{JOB_ID}")


def log(msg: str) -> None:
    print(msg, flush=True)


def url(task: str, path: str, rank: int = 0) -> str:
    """http://{task}-{rank}.{group}:{port}{path}"""
    return f"http://{task}-{rank}.{GROUP}:{PORTS[task]}{path}"


def call(target: str, payload: Any = None, *, wait: float = 0.0, timeout: float = 10.0) -> Any:
    """GET (payload None) or POST JSON to `target`; the decoded JSON answer.

    With `wait` > 0, a peer that is not reachable yet (refused, unresolved, timed out) is retried
    every 0.2 s for up to `wait` seconds; then the last error is raised."""
    data = None if payload is None else json.dumps(payload).encode()
    deadline = time.monotonic() + wait
    while True:
        req = urllib.request.Request(target, data=data,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError:
            raise  # the peer answered: an error of ours, retrying will not help
        except OSError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.2)


Route = Callable[[dict[str, list[str]], Any], Any]


class _Stop(Exception):
    pass


def serve(name: str, routes: dict[tuple[str, str], Route],
          on_stop: Callable[[], None] | None = None) -> None:
    """Serve `routes` ({(method, path): fn(query, json_body) -> json-able}) on this task's port.

    Binds this node's own address (SKYPILOT_NODE_IPS line RANK): on a machine where nodes share
    the network (jobgroup's `user` isolation) two nodes may then use the same port. SIGTERM (how
    jobgroup and SkyPilot stop an auxiliary task) closes the server and calls `on_stop`."""

    class Handler(BaseHTTPRequestHandler):
        def _handle(self, method: str) -> None:
            parts = urlsplit(self.path)
            fn = routes.get((method, parts.path))
            if fn is None:
                return self._send(404, {"error": f"no route {method} {parts.path}"})
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length)) if length else None
            try:
                return self._send(200, fn(parse_qs(parts.query), body))
            except (KeyError, ValueError, TypeError) as e:
                return self._send(400, {"error": f"{type(e).__name__}: {e}"})

        def _send(self, code: int, obj: Any) -> None:
            out = json.dumps(obj).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        def do_GET(self) -> None:
            self._handle("GET")

        def do_POST(self) -> None:
            self._handle("POST")

        def log_message(self, fmt: str, *args: Any) -> None:
            pass  # one line per request would drown the interesting ones

    ips = os.environ.get("SKYPILOT_NODE_IPS", "").split()
    host = ips[RANK] if len(ips) > RANK else "0.0.0.0"
    server = ThreadingHTTPServer((host, PORTS[name]), Handler)
    server.daemon_threads = True

    def stop(signum: int, frame: Any) -> None:
        raise _Stop

    signal.signal(signal.SIGTERM, stop)
    log(f"{name} {RANK}: serving on {host}:{PORTS[name]} as {name}-{RANK}.{GROUP}")
    try:
        server.serve_forever(poll_interval=0.2)
    except _Stop:
        log(f"{name} {RANK}: stopped by SIGTERM")
        if on_stop:
            on_stop()
    finally:
        server.server_close()
    sys.exit(0)
