"""Every local node its own host (issue 4), end to end with real namespaces and real processes:
own network namespace and address, hostname, names that resolve, volumes, read-only
file_mounts, and cleanup of all of it however the group ends. The `user` and `none` levels are
forced with JOBGROUP_ISOLATION, which the controller inherits from the CLI that starts it.

Other sessions may run groups on this machine at the same time: leftovers are compared only for
this test's state directory (its network names all start with the state directory's tag).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import textwrap
import time
from pathlib import Path

import pytest
from conftest import _zombie, processes_of, wait_for

from jobgroup.backends.local import egress, network, rootfs

root = pytest.mark.root
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: the `namespaces` "
                                "level (network namespaces, bridge, veths) is root-only")

# A tiny HTTP server that answers every GET with the hostname of the node it runs in.
SERVER = textwrap.dedent('''\
    python3 -c '
    import http.server, socket, sys
    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = socket.gethostname().encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        def log_message(self, *a):
            pass
    http.server.ThreadingHTTPServer((sys.argv[1], int(sys.argv[2])), H).serve_forever()
    ' ''')


def _block(text: str, n: int = 10) -> str:
    """`text` for a placeholder written at column `n` of an indented YAML string: every line
    after the first is indented by `n` too."""
    first, *rest = text.rstrip("\n").split("\n")
    return "\n".join([first, *(" " * n + line if line else "" for line in rest)])


# --- what exists on the machine -----------------------------------------------------------------

def _netns_mounts() -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4] for line in f]


class Host:
    """Snapshot of what a group may leave on the machine, restricted to one state directory
    where other sessions could interfere (network names carry the state directory's tag)."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.tag = network.home_tag(home)
        self.etc_hosts = Path("/etc/hosts").read_bytes()
        self.root = set(os.listdir("/"))
        self.mounts = self._mounts()

    def _mounts(self) -> set[str]:
        # Mount points of the host's mount namespace: nodes' views live in their own mount
        # namespaces, so none of them may appear here; /run/netns/* of other sessions'
        # groups come and go and are not ours to judge.
        out = set()
        for mp in _netns_mounts():
            if mp.startswith("/run/netns/") and not mp.startswith(f"/run/netns/jg-{self.tag}"):
                continue
            out.add(mp)
        return out

    def leftovers(self) -> dict[str, object]:
        """What of ours is still there (empty values: nothing)."""
        net = network.existing(self.tag)
        hosts_files = sorted(str(p) for p in (self.home / "jobs").glob("*/hosts"))
        return {
            "bridges": net["bridges"], "veths": net["veths"], "netns": net["netns"],
            "processes": processes_of(self.home),
            "hosts_files": hosts_files,
            "new_mounts": sorted(self._mounts() - self.mounts),
            "new_in_root": sorted(set(os.listdir("/")) - self.root),
            "etc_hosts_changed": Path("/etc/hosts").read_bytes() != self.etc_hosts,
            # issue 15: NAT tables, node roots (overlays, /dev/shm) still mounted anywhere
            "nft_tables": egress.tables(self.tag),
            "node_roots_mounted": sorted(rootfs.node_namespaces(self.home)),
        }

    def assert_clean(self, timeout: float = 20) -> None:
        """Everything of this state directory is gone (waits a little: teardown is async)."""
        try:
            wait_for(lambda: not any(self.leftovers().values()), timeout=timeout, interval=0.1)
        except AssertionError:
            pass
        left = {k: v for k, v in self.leftovers().items() if v}
        assert not left, f"left behind: {left}"

    def ours_exist(self) -> bool:
        net = network.existing(self.tag)
        return bool(net["bridges"] or net["netns"])


@pytest.fixture
def host(jenv):
    h = Host(jenv.home)
    yield h
    # The jenv fixture cancels and checks processes afterwards; here: network, mounts, files.
    if (jenv.home / "state.db").exists():
        jenv.jg("cancel", "--all", timeout=30)
    h.assert_clean()


def _topology(jenv, job: int) -> dict[str, str]:
    """fqdn -> address of every node of the job."""
    topo = json.loads((jenv.home / "jobs" / str(job) / "topology.json").read_text())
    return {n["fqdn"]: n["address"] for t in topo["tasks"] for n in t["nodes"]}


# --- the seed's shapes ----------------------------------------------------------------------------

@root
@needs_root
def test_rl_group_services_by_name_same_port_on_two_nodes(jenv, host):
    trainer = textwrap.dedent(f'''\
        if [ "$SKYPILOT_NODE_RANK" = 0 ]; then
        python3 - <<'EOF'
        import os, sys, time, urllib.request
        g = os.environ["SKYPILOT_JOBGROUP_NAME"]
        urls = {{
            "data": f"http://data-server-0.{{g}}:28100/",
            "rollout0": f"http://rollout-server-0.{{g}}:28101/",
            "rollout1": f"http://rollout-server-1.{{g}}:28101/",
            "rollout1-short": "http://rollout-server-1:28101/",
            "reward": f"http://reward-server-0.{{g}}:28102/",
            "replay": f"http://replay-buffer-0.{{g}}:28103/",
        }}
        for key, url in urls.items():
            deadline = time.monotonic() + 40
            while True:  # no readiness feature yet: retry until the server listens
                try:
                    answer = urllib.request.urlopen(url, timeout=2).read().decode()
                    break
                except OSError as e:
                    if time.monotonic() > deadline:
                        sys.exit(f"{{key}}: {{url}} never answered: {{e}}")
                    time.sleep(0.1)
            print(f"ANSWER {{key}} {{answer}}", flush=True)
        EOF
        fi
        echo trainer-ready
        for i in $(seq 300); do [ -e go ] && break; sleep 0.1; done
        echo trained
        ''')
    job = jenv.launch_d(f"""
        name: rl
        execution: parallel
        primary_tasks: [ppo-trainer]
        termination_delay: 0s
        ---
        name: data-server
        run: |
          {_block(SERVER)}0.0.0.0 28100
        ---
        name: rollout-server
        num_nodes: 2
        run: |
          {_block(SERVER)}0.0.0.0 28101
        ---
        name: reward-server
        run: |
          {_block(SERVER)}0.0.0.0 28102
        ---
        name: replay-buffer
        run: |
          {_block(SERVER)}0.0.0.0 28103
        ---
        name: ppo-trainer
        num_nodes: 2
        run: |
          {_block(trainer)}
        """)
    wait_for(lambda: "trainer-ready" in jenv.log(job, "ppo-trainer", 0)
             or jenv.job(job)["status"] not in ("PENDING", "STARTING", "RUNNING"), timeout=90)
    log = jenv.log(job, "ppo-trainer", 0)
    answers = dict(line.split()[1:3] for line in log.splitlines() if line.startswith("ANSWER "))
    assert answers == {
        "data": "data-server-0", "rollout0": "rollout-server-0", "rollout1": "rollout-server-1",
        "rollout1-short": "rollout-server-1", "reward": "reward-server-0",
        "replay": "replay-buffer-0",
    }, log
    # While the servers listen on 0.0.0.0 inside their nodes, the host's ports stay free.
    for port in (28100, 28101, 28102, 28103):
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("0.0.0.0", port))
    assert host.ours_exist()
    for r in (0, 1):  # in each trainer's own working directory (shared with the host)
        (jenv.home / "jobs" / str(job) / "work" / f"ppo-trainer-{r}" / "go").write_text("")
    final = jenv.wait(job, timeout=60)
    assert final["status"] == "SUCCEEDED", final
    tasks = {t["name"]: t["status"] for t in final["tasks"]}
    assert tasks == {"ppo-trainer": "SUCCEEDED", "data-server": "CANCELLED",
                     "rollout-server": "CANCELLED", "reward-server": "CANCELLED",
                     "replay-buffer": "CANCELLED"}
    assert final["isolation"] == "namespaces"
    assert "trained" in jenv.log(job, "ppo-trainer", 1)
    host.assert_clean()


@root
@needs_root
def test_train_eval_share_a_volume_that_outlives_the_job(jenv, host):
    assert not os.path.exists("/checkpoints")
    job = jenv.launch_d("""
        name: train-eval
        execution: parallel
        ---
        name: trainer
        volumes: {/checkpoints: ckpts}
        run: |
          for i in 1 2 3; do
            echo "weights-$i" > /checkpoints/.step-$i && mv /checkpoints/.step-$i /checkpoints/step-$i
            sleep 0.2
          done
          touch /checkpoints/DONE
        ---
        name: evaluator
        volumes: {/checkpoints: ckpts}
        run: |
          for i in $(seq 300); do [ -e /checkpoints/DONE ] && break; sleep 0.1; done
          for f in /checkpoints/step-*; do echo "eval $(basename $f): $(cat $f)"; done
        """)
    final = jenv.wait(job)
    assert final["status"] == "SUCCEEDED", final
    assert jenv.log(job, "evaluator").splitlines() == [
        f"eval step-{i}: weights-{i}" for i in (1, 2, 3)]
    vol = jenv.home / "volumes" / "ckpts"
    assert sorted(os.listdir(vol)) == ["DONE", "step-1", "step-2", "step-3"]
    assert not os.path.exists("/checkpoints")
    host.assert_clean()


@root
@needs_root
def test_hostnames_and_every_peer_resolves_from_every_node(jenv, host):
    names = ["a-0", "a-1", "b-0", "b-1", "c-0"]
    script = textwrap.dedent(f'''\
        echo "HOSTNAME $(hostname)"
        for n in {" ".join(names)}; do
          for q in "$n.names" "$n"; do
            echo "RESOLVE $q $(getent ahostsv4 "$q" | awk 'NR==1{{print $1}}')"
          done
        done
        python3 -c 'import socket; print("PY", socket.gethostbyname("c-0.names"))'
        grep -c localhost /etc/hosts | sed "s/^/LOCALHOST /"
        ''')
    job = jenv.launch_d(f"""
        name: names
        execution: parallel
        ---
        name: a
        num_nodes: 2
        run: |
          {_block(script)}
        ---
        name: b
        num_nodes: 2
        run: |
          {_block(script)}
        ---
        name: c
        run: |
          {_block(script)}
        """)
    final = jenv.wait(job)
    assert final["status"] == "SUCCEEDED", final
    topo = _topology(jenv, job)
    assert len(set(topo.values())) == 5
    for node in names:
        task, rank = node.rsplit("-", 1)
        lines = jenv.log(job, task, int(rank)).splitlines()
        assert f"HOSTNAME {node}" in lines
        for peer in names:
            addr = topo[f"{peer}.names"]
            assert f"RESOLVE {peer}.names {addr}" in lines, (node, peer, lines)
            assert f"RESOLVE {peer} {addr}" in lines, (node, peer, lines)
        assert f"PY {topo['c-0.names']}" in lines
        assert any(l.startswith("LOCALHOST ") and l != "LOCALHOST 0" for l in lines)
    # Addresses are on the group's own subnet, not loopback.
    assert all(not a.startswith("127.") for a in topo.values())
    host.assert_clean()  # /etc/hosts byte-identical, nothing new under /, no mounts


@root
@needs_root
def test_file_mounts_directory_and_file_read_only_and_remote_rejected(jenv, host):
    (jenv.tmp / "code").mkdir()
    (jenv.tmp / "code" / "train.py").write_text("print('from mounted code')\n")
    (jenv.tmp / "conf.yaml").write_text("lr: 0.1\n")
    assert not os.path.exists("/code") and not os.path.exists("/opt/jg-test-conf")
    job = jenv.launch_d("""
        name: fm
        file_mounts:
          /code: ./code
          /opt/jg-test-conf/conf.yaml: ./conf.yaml
        run: |
          python3 /code/train.py
          cat /opt/jg-test-conf/conf.yaml
          touch /code/new 2>/dev/null && echo WROTE-DIR || echo DIR-READONLY
          { echo x >> /opt/jg-test-conf/conf.yaml; } 2>/dev/null && echo WROTE-FILE || echo FILE-READONLY
        """)
    final = jenv.wait(job)
    assert final["status"] == "SUCCEEDED", final
    assert jenv.log(job, "fm").splitlines() == [
        "from mounted code", "lr: 0.1", "DIR-READONLY", "FILE-READONLY"]
    assert os.listdir(jenv.tmp / "code") == ["train.py"]
    assert (jenv.tmp / "conf.yaml").read_text() == "lr: 0.1\n"
    assert not os.path.exists("/code") and not os.path.exists("/opt/jg-test-conf")
    remote = jenv.spec("name: s3\nfile_mounts: {/data: s3://bucket/prefix}\nrun: ls /data\n",
                       "s3.yaml")
    p = jenv.jg("launch", str(remote), "-d")
    assert p.returncode == 2, p
    assert "s3://bucket/prefix" in p.stderr and "remote storage" in p.stderr
    assert "Traceback" not in p.stderr
    host.assert_clean()


# --- cleanup, however the group ends --------------------------------------------------------------

SLEEPERS = """
    name: {name}
    execution: parallel
    primary_tasks: [main]
    termination_delay: 0s
    ---
    name: main
    num_nodes: 2
    run: {main}
    ---
    name: side
    num_nodes: 2
    volumes: {{/scratch: scratch}}
    run: setsid sleep 1000 & echo up; sleep 1000
    """


def _running(jenv, job: int) -> None:
    wait_for(lambda: jenv.job(job)["status"] == "RUNNING", timeout=60)
    wait_for(lambda: all("up" in jenv.log(job, "side", r) for r in (0, 1)), timeout=30)


@root
@needs_root
def test_cleanup_after_cancel_and_after_fail_fast(jenv, host):
    cancelled = jenv.launch_d(SLEEPERS.format(name="cancelme", main="sleep 1000"))
    failing = jenv.launch_d(SLEEPERS.format(
        name="failfast", main="for i in $(seq 300); do [ -e go ] && exit 3; sleep 0.1; done"))
    _running(jenv, cancelled)
    _running(jenv, failing)
    assert host.ours_exist()
    jenv.jg("cancel", str(cancelled), check=True)
    assert jenv.wait(cancelled)["status"] == "CANCELLED"
    for r in (0, 1):
        (jenv.home / "jobs" / str(failing) / "work" / f"main-{r}" / "go").write_text("")
    final = jenv.wait(failing)
    assert final["status"] == "FAILED" and "exited with code 3" in final["reason"], final
    host.assert_clean()


def _phase_pids(home: Path, job: int, node: str) -> list[int]:
    """Every process of one node's run phase (shim, nsenter, bwrap, shell, children)."""
    needle = f"JOBGROUP_PHASE={home}/jobs/{job}/nodes/{node}.run.".encode()
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/environ", "rb") as f:
                    if needle in f.read():
                        out.append(int(entry))
            except OSError:
                pass
    return out


@root
@needs_root
def test_cleanup_after_kill_9_of_a_nodes_processes(jenv, host):
    job = jenv.launch_d(SLEEPERS.format(name="killed", main="sleep 1000"))
    _running(jenv, job)
    pids = _phase_pids(jenv.home, job, "1-1")  # side-1: task 1, rank 1
    assert len(pids) >= 3, pids  # shim, the node's shell (exec'd into its last sleep), setsid sleep
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    final = jenv.wait(job)
    assert final["status"] == "FAILED", final
    assert "side" in final["reason"], final
    host.assert_clean()


@root
@needs_root
def test_cleanup_after_controller_sigkill_and_restart(jenv, host):
    ends_alone = jenv.launch_d(SLEEPERS.format(
        name="endsalone", main="for i in $(seq 300); do [ -e go ] && exit 0; sleep 0.1; done"))
    cancelled = jenv.launch_d(SLEEPERS.format(name="cancelledoffline", main="sleep 1000"))
    _running(jenv, ends_alone)
    _running(jenv, cancelled)
    pid = jenv.controller_pid()
    assert pid
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not os.path.exists(f"/proc/{pid}") or _zombie(pid), timeout=10)
    # While nobody watches: one group's primary ends, the other is cancelled.
    for r in (0, 1):
        (jenv.home / "jobs" / str(ends_alone) / "work" / f"main-{r}" / "go").write_text("")
    wait_for(lambda: all((jenv.home / "jobs" / str(ends_alone) / "nodes" / f"0-{r}.run.1.status")
                         .exists() for r in (0, 1)), timeout=20)
    jenv.jg("cancel", str(cancelled), check=True)  # restarts the controller
    assert jenv.wait(ends_alone)["status"] == "SUCCEEDED"
    assert jenv.wait(cancelled)["status"] == "CANCELLED"
    host.assert_clean()


@root
@needs_root
def test_restarted_controller_keeps_a_running_groups_network(jenv, host):
    """A controller SIGKILLed while a group runs: the restarted one re-adopts the group
    without re-creating (or losing) its network, and peers still reach each other."""
    job = jenv.launch_d(f"""
        name: readopt
        execution: parallel
        primary_tasks: [client]
        termination_delay: 0s
        ---
        name: server
        run: |
          {_block(SERVER)}0.0.0.0 28100
        ---
        name: client
        run: |
          for i in $(seq 600); do [ -e go ] && break; sleep 0.1; done
          python3 -c 'import urllib.request as u; print("GOT", u.urlopen("http://server-0.readopt:28100/", timeout=5).read().decode())'
        """)
    wait_for(lambda: jenv.job(job)["status"] == "RUNNING", timeout=60)
    before = network.existing(network.net_id(jenv.home, job))
    assert before["netns"]
    pid = jenv.controller_pid()
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not os.path.exists(f"/proc/{pid}") or _zombie(pid), timeout=10)
    jenv.jg("controller", "start", check=True)
    time.sleep(0.5)
    assert network.existing(network.net_id(jenv.home, job)) == before
    (jenv.home / "jobs" / str(job) / "work" / "client-0" / "go").write_text("")
    final = jenv.wait(job)
    assert final["status"] == "SUCCEEDED", final
    assert "GOT server-0" in jenv.log(job, "client")
    host.assert_clean()


# --- forced levels --------------------------------------------------------------------------------

def test_user_level_states_itself_names_resolve_on_loopback(jenv, host):
    if os.geteuid() != 0:
        pytest.skip("as non-root the `user` level is tested in test_unprivileged_run")
    jenv.force_level("user")
    script = textwrap.dedent('''\
        echo "HOSTNAME $(hostname)"
        for q in srv-0.lvl srv-1 cli-0.lvl; do
          echo "RESOLVE $q $(getent ahostsv4 "$q" | awk 'NR==1{print $1}')"
        done
        ''')
    spec = jenv.spec(f"""
        name: lvl
        execution: parallel
        ---
        name: srv
        num_nodes: 2
        volumes: {{/lvl-data: lvl}}
        run: |
          {_block(script)}
          echo "rank $SKYPILOT_NODE_RANK" > /lvl-data/r$SKYPILOT_NODE_RANK
        ---
        name: cli
        run: |
          {_block(script)}
        """)
    p = jenv.jg("launch", str(spec), "-d", check=True)
    assert "Isolation: user (" in p.stderr and "cannot both bind 0.0.0.0" in p.stderr
    job = int(p.stdout.split()[1])
    final = jenv.wait(job)
    assert final["status"] == "SUCCEEDED", final
    assert final["isolation"] == "user"
    assert jenv.job(job)["isolation"] == "user"
    topo = _topology(jenv, job)
    assert all(a.startswith("127.") for a in topo.values()) and len(set(topo.values())) == 3
    for task, rank in (("srv", 0), ("srv", 1), ("cli", 0)):
        lines = jenv.log(job, task, rank).splitlines()
        assert f"HOSTNAME {task}-{rank}" in lines
        assert f"RESOLVE srv-0.lvl {topo['srv-0.lvl']}" in lines
        assert f"RESOLVE srv-1 {topo['srv-1.lvl']}" in lines
        assert f"RESOLVE cli-0.lvl {topo['cli-0.lvl']}" in lines
    assert sorted(os.listdir(jenv.home / "volumes" / "lvl")) == ["r0", "r1"]
    assert not os.path.exists("/lvl-data")
    assert not network.existing(host.tag)["netns"]
    host.assert_clean()


def test_none_level_plain_processes_env_vars_and_no_volumes(jenv, host):
    jenv.force_level("none")
    vol = jenv.spec("name: v\nvolumes: {/ckpt: v}\nrun: ls /ckpt\n", "vol.yaml")
    p = jenv.jg("launch", str(vol), "-d")
    assert p.returncode == 2, p
    assert "volumes and file_mounts need mount namespaces" in p.stderr
    assert "Traceback" not in p.stderr
    spec = jenv.spec(f"""
        name: plain
        execution: parallel
        primary_tasks: [cli]
        termination_delay: 0s
        ---
        name: srv
        run: |
          {_block(SERVER)}"$(echo "$SKYPILOT_NODE_IPS" | head -1)" 8765
        ---
        name: cli
        run: |
          echo "HOSTNAME $(hostname)"
          python3 - <<'EOF'
          import os, time, urllib.request
          url = f"http://{{os.environ['SKYPILOT_JOBGROUP_HOST_SRV']}}:8765/"
          for _ in range(300):
              try:
                  print("GOT", urllib.request.urlopen(url, timeout=2).read().decode()); break
              except OSError:
                  time.sleep(0.1)
          EOF
        """)
    p = jenv.jg("launch", str(spec), "-d", check=True)
    assert "Isolation: none (" in p.stderr and "SKYPILOT_" in p.stderr
    job = int(p.stdout.split()[1])
    final = jenv.wait(job)
    assert final["status"] == "SUCCEEDED", final
    assert final["isolation"] == "none"
    log = jenv.log(job, "cli")
    assert f"HOSTNAME {socket.gethostname()}" in log  # plain processes: the machine's name
    assert f"GOT {socket.gethostname()}" in log
    host.assert_clean()


# --- volume and doctor commands -------------------------------------------------------------------

def test_volume_ls_and_rm_refused_while_in_use(jenv, host):
    if os.geteuid() != 0:
        jenv.force_level("user")  # volumes need a mount view, not root
    job = jenv.launch_d("""
        name: vols
        volumes: {/vol-a: va}
        run: head -c 3000 /dev/zero > /vol-a/blob; echo written; sleep 1000
        """)
    wait_for(lambda: "written" in jenv.log(job, "vols"), timeout=60)
    vols = {v["name"]: v for v in json.loads(jenv.jg("volume", "ls", "--json", check=True).stdout)}
    assert vols["va"]["used_by"] == [job] and vols["va"]["size_bytes"] == 3000
    assert vols["va"]["path"] == str(jenv.home / "volumes" / "va")
    table = jenv.jg("volume", "ls", check=True).stdout
    assert "va" in table and f"job {job}" in table
    p = jenv.jg("volume", "rm", "va")
    assert p.returncode == 1 and "in use" in p.stderr and str(job) in p.stderr, p
    assert (jenv.home / "volumes" / "va" / "blob").exists()
    jenv.jg("cancel", str(job), check=True)
    jenv.wait(job)
    vols = {v["name"]: v for v in json.loads(jenv.jg("volume", "ls", "--json", check=True).stdout)}
    assert vols["va"]["used_by"] == []
    assert "Volume va removed." in jenv.jg("volume", "rm", "va", check=True).stdout
    assert not (jenv.home / "volumes" / "va").exists()
    missing = jenv.jg("volume", "rm", "va")
    assert missing.returncode == 2 and "no volume 'va'" in missing.stderr
    assert "Traceback" not in missing.stderr
    assert jenv.jg("volume", "ls", check=True).stdout.strip() == "No volumes."
    host.assert_clean()


@root
@needs_root
def test_doctor_finds_and_fixes_leftovers_of_crashed_runs_only(jenv, host):
    import subprocess

    running = jenv.launch_d("name: alive\nrun: sleep 1000\n")
    wait_for(lambda: jenv.job(running)["status"] == "RUNNING", timeout=60)
    assert jenv.jg("doctor", check=True).stdout.strip() == "Nothing left behind."
    # What a crash could leave: a network of a job that is not active, its files, a process.
    crashed = 999
    net = network.create(jenv.home, crashed, 2)
    stale_dir = jenv.home / "jobs" / str(crashed)
    stale_dir.mkdir(parents=True)
    (stale_dir / "hosts").write_text("10.0.0.1 x\n")
    (stale_dir / "network.json").write_text(net.to_json())
    proc = subprocess.Popen(
        ["sleep", "1000"], start_new_session=True,
        env={**os.environ, "JOBGROUP_PHASE": f"{stale_dir}/nodes/0-0.run.1.status"})
    try:
        p = jenv.jg("doctor")
        assert p.returncode == 1, p
        assert net.netns(0) in p.stdout and net.bridge in p.stdout and str(proc.pid) in p.stdout
        assert "doctor --fix" in p.stdout
        found = json.loads(jenv.jg("doctor", "--json").stdout)["found"]
        assert sorted(found["netns"]) == [net.netns(0), net.netns(1)]
        assert found["processes"] == [proc.pid]
        assert sorted(found["files"]) == [str(stale_dir / "hosts"), str(stale_dir / "network.json")]
        alive_net = network.existing(network.net_id(jenv.home, running))
        assert alive_net["netns"] and not set(alive_net["netns"]) & set(found["netns"])
        fixed = jenv.jg("doctor", "--fix")
        assert fixed.returncode == 0 and "Removed." in fixed.stdout, fixed
        assert proc.wait(timeout=10) == -signal.SIGKILL
        assert not any(network.existing(net.netid).values())
        assert not (stale_dir / "hosts").exists() and not (stale_dir / "network.json").exists()
        # The running group was not touched.
        assert network.existing(network.net_id(jenv.home, running)) == alive_net
        assert jenv.job(running)["status"] == "RUNNING"
        assert jenv.jg("doctor", check=True).returncode == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        network.destroy(net.netid)
