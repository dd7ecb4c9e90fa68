"""End to end, a job group of the shape of SkyPilot's upstream job-group examples
(`llm/rl-post-training-jobgroup/rlhf-math-jobgroup-cpu.yaml`; issue 14's "Done when"), in files of
our own: launched as its docs say, from the repository's root with a path into a sub-folder, and
`file_mounts` sources relative to that root; every task asks for `infra: kubernetes` and for more
CPUs and memory than this machine has (`--infra local --best-effort`); a null `envs` entry
filled by `--env`; `pip install` in setup; a task named with `_`; services found by
`{task}-0.${SKYPILOT_JOBGROUP_NAME}`; a primary client, auxiliaries ended after the
termination delay. Real processes, namespaces and overlays (as root)."""

from __future__ import annotations

import os
import sys
import textwrap

import pytest
from test_isolation import Host
from test_node_host import _fresh_wheel

root = pytest.mark.root
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: the nodes get their own "
                                "network namespaces and roots (level `namespaces`)")

SERVER = textwrap.dedent('''\
    """A tiny JSON service: /health and one endpoint of its own (stdlib only)."""
    import json, sys
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    kind, port = sys.argv[1], int(sys.argv[2])
    stored = []

    class H(BaseHTTPRequestHandler):
        def _send(self, obj):
            body = json.dumps(obj).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            if self.path == "/health":
                return self._send({"status": "healthy", "kind": kind})
            if self.path.startswith("/prompts"):
                return self._send({"prompts": ["What is 2+2?", "What is 3*3?"]})
            if self.path == "/stats":
                return self._send({"size": len(stored)})
            self.send_error(404)

        def do_POST(self):
            data = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if self.path == "/reward":
                return self._send({"reward": float(data["ground_truth"] in data["response"])})
            if self.path == "/add":
                stored.extend(data["experiences"])
                return self._send({"added": len(data["experiences"])})
            self.send_error(404)

        def log_message(self, *args):
            pass

    print(f"{kind} serving on {port}", flush=True)
    ThreadingHTTPServer(("0.0.0.0", port), H).serve_forever()
    ''')

CLIENT = textwrap.dedent('''\
    import json, os, sys, time, urllib.request

    group = os.environ["SKYPILOT_JOBGROUP_NAME"]
    def url(task, port, path):
        return f"http://{task}-0.{group}:{port}{path}"

    def call(u, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(u, data=data, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=5) as r:
            return json.loads(r.read())

    for task, port in (("data-server", 8000), ("reward_server", 8002), ("replay-buffer", 8003)):
        for attempt in range(200):
            try:
                assert call(url(task, port, "/health"))["status"] == "healthy"
                print(f"{task} is healthy", flush=True)
                break
            except OSError:
                time.sleep(0.1)
        else:
            sys.exit(f"{task} never answered")
    prompts = call(url("data-server", 8000, "/prompts?batch_size=2"))["prompts"]
    reward = call(url("reward_server", 8002, "/reward"),
                  {"prompt": prompts[0], "response": "The answer is 4", "ground_truth": "4"})
    added = call(url("replay-buffer", 8003, "/add"),
                 {"experiences": [{"prompt": prompts[0], "reward": reward["reward"]}]})
    stats = call(url("replay-buffer", 8003, "/stats"))
    print(f"PROMPTS {len(prompts)} REWARD {reward['reward']} ADDED {added['added']} "
          f"SIZE {stats['size']}", flush=True)
    ''')


def _group(py: str, wheel: str, package: str) -> str:
    def server(name: str, port: int) -> str:
        return f"""\
            ---
            name: {name}
            resources:
              cpus: 16
              memory: 64+
              infra: kubernetes
            file_mounts:
              /code: llm/rl-jobgroup/code
            setup: |
              {py} -m pip install --no-index --no-deps -q {wheel}
            run: |
              echo "JobGroup: ${{SKYPILOT_JOBGROUP_NAME}} token ${{#HF_TOKEN}}"
              {py} -c "import importlib.metadata as m; print('HAVE', m.version('{package}'))"
              cd /code
              exec {py} server.py {name} {port}
            """
    return textwrap.dedent(f"""\
        # The shape of SkyPilot's upstream CPU job-group example, in our own words.
        ---
        name: rl-shape
        execution: parallel
        primary_tasks: [test-client]
        termination_delay: 2s
        """) + "".join(textwrap.dedent(server(n, p)) for n, p in (
            ("data-server", 8000), ("reward_server", 8002), ("replay-buffer", 8003))) + \
        textwrap.dedent(f"""\
            ---
            name: test-client
            resources:
              cpus: 16
              memory: 64+
              infra: kubernetes
            envs:
              HF_TOKEN:
            file_mounts:
              /code: llm/rl-jobgroup/code
            run: |
              {py} /code/client.py
            """)


@root
@needs_root
def test_a_group_of_the_upstream_examples_shape_runs_from_the_repository_root(jenv):
    wheel = _fresh_wheel()
    if wheel is None:
        pytest.skip("no pure-Python wheel on this machine's disk that the venv lacks")
    package = wheel.name.split("-")[0]
    host = Host(jenv.home)
    repo = jenv.tmp / "repo"
    code = repo / "llm" / "rl-jobgroup" / "code"
    code.mkdir(parents=True)
    (code / "server.py").write_text(SERVER)
    (code / "client.py").write_text(CLIENT)
    spec = repo / "llm" / "rl-jobgroup" / "rl-jobgroup-cpu.yaml"
    spec.write_text(_group(sys.executable, str(wheel), package))
    args = ("launch", "llm/rl-jobgroup/rl-jobgroup-cpu.yaml", "--infra", "local")
    # Without the opt-in the group can never fit here (a dry run says so and names it); with
    # it, the dry run plans it as it will run.
    p = jenv.jg(*args, "--dryrun", "--env", "HF_TOKEN=hf_x", cwd=repo)
    assert p.returncode == 0 and "FAILED_NO_RESOURCE" in p.stderr and "--best-effort" in p.stderr
    p = jenv.jg(*args, "--dryrun", "--best-effort", cwd=repo)  # the null entry is unfilled
    assert p.returncode == 2 and "HF_TOKEN" in p.stderr
    p = jenv.jg(*args, "--best-effort", "--env", "HF_TOKEN=hf_secret_token", "-d", cwd=repo,
                check=True)
    assert "--best-effort" in p.stderr and "4 task(s), 4 node(s)" in p.stdout
    job = int(p.stdout.split()[1])
    final = jenv.wait(job, timeout=180)
    logs = {t: jenv.log(job, t) for t in ("data-server", "reward_server", "replay-buffer",
                                          "test-client")}
    assert final["status"] == "SUCCEEDED", (final, logs)
    assert "PROMPTS 2 REWARD 1.0 ADDED 1 SIZE 1" in logs["test-client"], logs
    for name in ("data-server", "reward_server", "replay-buffer"):
        assert f"HAVE " in logs[name] and f"{name} serving on" in logs[name], logs[name]
        assert "JobGroup: rl-shape token 15" in logs[name], logs[name]
    statuses = {t["name"]: t["status"] for t in jenv.job(job)["tasks"]}
    assert statuses == {"data-server": "CANCELLED", "reward_server": "CANCELLED",
                        "replay-buffer": "CANCELLED", "test-client": "SUCCEEDED"}, statuses
    host.assert_clean()
