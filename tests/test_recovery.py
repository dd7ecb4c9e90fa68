"""Beyond the seed: readiness probes, depends_on, restarts, preemption, whole-group restart and
the events timeline, with real processes."""

from __future__ import annotations

import json
import os
import signal
import time

from conftest import processes_of, wait_for

from jobgroup.state.store import Store

SERVER = """
import os, socket, time
from http.server import BaseHTTPRequestHandler, HTTPServer
time.sleep(float(os.environ.get("DELAY", "0")))
class H(BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"{socket.gethostname()} attempt={os.environ['JOBGROUP_ATTEMPT']}".encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body)))
        self.end_headers(); self.wfile.write(body)
    def log_message(self, *a):
        pass
addr = os.environ["SKYPILOT_NODE_IPS"].splitlines()[int(os.environ["SKYPILOT_NODE_RANK"])]
print("listening", flush=True)
HTTPServer((addr, int(os.environ.get("PORT", "8000"))), H).serve_forever()
"""


def server(jenv) -> str:
    """The path of a tiny HTTP server answering '<hostname> attempt=<n>'."""
    path = jenv.tmp / "server.py"
    path.write_text(SERVER)
    return str(path)


def events(jenv, job: int) -> list[dict]:
    return json.loads(jenv.jg("events", str(job), "--json", check=True).stdout)


def test_client_starts_only_after_the_server_is_ready(jenv):
    job = jenv.launch_d(f"""
        name: ready
        execution: parallel
        primary_tasks: [client]
        ---
        name: server
        envs: {{DELAY: 1.5}}
        readiness_probe:
          http: {{port: 8000, path: /}}
          interval: 0.1s
        run: python3 {server(jenv)}
        ---
        name: client
        depends_on: [server]
        run: |
          # no retry loop: the server must already answer
          python3 -c "import os, urllib.request; print('got', urllib.request.urlopen('http://server-0.' + os.environ['SKYPILOT_JOBGROUP_NAME'] + ':8000/', timeout=5).read().decode())"
        """)
    final = jenv.wait(job)
    assert final["status"] == "SUCCEEDED", (final, jenv.log(job, "client"))
    assert "got server-0 attempt=1" in jenv.log(job, "client")
    evs = events(jenv, job)
    ready = next(e["at"] for e in evs if e["kind"] == "ready" and e["task"] == "server")
    client_run = next(e["at"] for e in evs if e["kind"] == "run-started" and e["task"] == "client")
    server_run = next(e["at"] for e in evs if e["kind"] == "run-started" and e["task"] == "server")
    assert server_run + 1.4 < ready <= client_run


def test_probe_that_never_passes_fails_the_group_within_its_timeout(jenv):
    t0 = time.monotonic()
    job = jenv.launch_d("""
        name: never
        execution: parallel
        ---
        name: server
        readiness_probe:
          tcp: {port: 9}
          interval: 0.2s
          timeout: 0.2s
          failure_threshold: 5
        run: sleep 1000
        ---
        name: client
        depends_on: {server: ready}
        run: echo never-runs
        """)
    final = jenv.wait(job)
    assert time.monotonic() - t0 < 15
    assert final["status"] == "FAILED"
    assert final["reason"].startswith("task 'server' never became ready: TCP ")
    assert "failed 5 times" in final["reason"]
    assert jenv.log(job, "client") == ""
    assert not processes_of(jenv.home)


def test_crashing_server_restarts_twice_then_fails_and_peers_reach_it_again(jenv):
    job = jenv.launch_d(f"""
        name: crashy
        execution: parallel
        ---
        name: reward-server
        resources:
          job_recovery: {{max_restarts_on_errors: 2}}
        run: |
          (sleep 1.2; kill $$) &
          exec python3 {server(jenv)}
        ---
        name: trainer
        run: |
          python3 - <<'PY'
          import os, time, urllib.request
          url = "http://reward-server-0." + os.environ["SKYPILOT_JOBGROUP_NAME"] + ":8000/"
          seen = set()
          while True:
              try:
                  answer = urllib.request.urlopen(url, timeout=1).read().decode()
                  if answer not in seen:
                      print("reached", answer, flush=True)
                      seen.add(answer)
              except Exception:  # OSError, or http.client's errors when the server dies mid-answer
                  pass
              time.sleep(0.05)
          PY
        """)
    final = jenv.wait(job, timeout=90)
    assert final["status"] == "FAILED"
    assert "task 'reward-server' run was killed by signal 15" in final["reason"]
    reward = next(t for t in final["tasks"] if t["name"] == "reward-server")
    assert reward["restarts"] == 2
    trainer_log = jenv.log(job, "trainer")
    for attempt in (1, 2, 3):  # the same name reached the restarted server each time
        assert f"reached reward-server-0 attempt={attempt}" in trainer_log
    logs = jenv.jg("logs", str(job), "reward-server", "--no-follow", check=True).stdout
    assert "(reward-server, rank=0, attempt=3) listening" in logs
    assert "(reward-server, rank=0) listening" in logs
    table = jenv.jg("queue", "--all", check=True).stdout
    head = table.splitlines()[0]
    row = next(line for line in table.splitlines() if "reward-server" in line)
    assert row[head.index("RESTARTS"):].split()[0] == "2"  # RESTARTS column
    kinds = [e["kind"] for e in events(jenv, job)]
    assert kinds.count("restart") == 2
    assert not processes_of(jenv.home)


def test_only_listed_exit_codes_are_recovered(jenv):
    marker = jenv.tmp / "ran-once"
    job = jenv.launch_d(f"""
        name: codes
        resources:
          job_recovery: {{recover_on_exit_codes: [33]}}
        run: |
          if [ ! -e {marker} ]; then touch {marker}; exit 33; fi
          exit 34
        """)
    final = jenv.wait(job)
    assert final["status"] == "FAILED"
    assert final["reason"] == "task 'codes' run exited with code 34"
    assert final["tasks"][0]["restarts"] == 1  # 33 was recovered, 34 was not


def test_kill_9_of_a_node_is_a_preemption_recovered_for_free(jenv):
    job = jenv.launch_d("""
        name: preempt
        resources:
          job_recovery: {strategy: FAILOVER}
        run: |
          echo "attempt $JOBGROUP_ATTEMPT pid $$"
          if [ "$JOBGROUP_ATTEMPT" = 1 ]; then sleep 1000; fi
          echo done
        """)
    wait_for(lambda: "attempt 1 pid" in jenv.log(job, "preempt"))
    pid = int(jenv.log(job, "preempt").split("pid ")[1].split()[0])
    os.kill(pid, signal.SIGKILL)  # from outside, like the OOM killer
    final = jenv.wait(job)
    assert final["status"] == "SUCCEEDED"
    task = final["tasks"][0]
    assert task["restarts"] == 1
    store = Store(jenv.home)
    try:
        assert store.tasks(job)[0].error_restarts == 0  # the error budget was not spent
    finally:
        store.close()
    msgs = [e["message"] for e in events(jenv, job)]
    assert any("(preempted); recovering" in m for m in msgs)


def test_whole_group_restart(jenv):
    marker = jenv.tmp / "failed-once"
    job = jenv.launch_d(f"""
        name: regroup
        execution: parallel
        max_group_restarts: 1
        ---
        name: rank-a
        run: |
          echo "a attempt $JOBGROUP_ATTEMPT"
          if [ ! -e {marker} ]; then touch {marker}; sleep 0.3; exit 1; fi
        ---
        name: rank-b
        num_nodes: 2
        run: echo "b attempt $JOBGROUP_ATTEMPT"; sleep 0.5
        """)
    final = jenv.wait(job)
    assert final["status"] == "SUCCEEDED", final
    assert "a attempt 2" in jenv.log(job, "rank-a") + jenv.jg(
        "logs", str(job), "rank-a", "--no-follow").stdout
    b = jenv.jg("logs", str(job), "rank-b", "--no-follow", check=True).stdout
    assert "(rank-b, rank=1, attempt=2) b attempt 2" in b
    kinds = [e["kind"] for e in events(jenv, job)]
    assert "job RUNNING -> RECOVERING" in kinds


def test_events_timeline_in_order_with_reasons(jenv):
    job = jenv.launch_d("""
        name: timeline
        execution: parallel
        primary_tasks: [main]
        ---
        name: main
        setup: echo setting-up
        run: sleep 0.2
        ---
        name: aux
        run: sleep 1000
        """)
    jenv.wait(job)
    evs = events(jenv, job)
    kinds = [e["kind"] for e in evs]
    assert kinds[0] == "submitted"
    for k in ("job PENDING -> STARTING", "setup-started", "setup-ended", "run-started",
              "run-ended", "outcome", "stop", "job RUNNING -> SUCCEEDED"):
        assert k in kinds, k
    assert kinds.index("setup-ended") < kinds.index("run-started")
    stop = next(e for e in evs if e["kind"] == "stop")
    assert stop["task"] == "aux" and "primary tasks finished" in stop["message"]
    assert [e["at"] for e in evs] == sorted(e["at"] for e in evs)
    text = jenv.jg("events", str(job), check=True).stdout.splitlines()
    assert text[0].split() == ["TIME", "SINCE", "WHO", "EVENT", "DETAIL"]
    assert any("aux-0" in line and "stop" in line for line in text)
