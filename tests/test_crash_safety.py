"""Crash safety by construction (issue 16, findings 3 and 5): the controller SIGKILLed at every
step of starting, stopping, restarting and tearing down groups loses nothing and leaves nothing;
subnets are never shared between state directories.

The deterministic set below runs one fault run per named point (`jobgroup.faults.POINTS`, plus
some N-th hits) and a few SIGKILLs from outside; bench/bench_crash.py runs the long random
campaign with the same harness (five groups per run: success, failure, cancel, task restart,
group restart; see its docstring for what a good run is).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import Env, REPO, _zombie, processes_of, wait_for

from jobgroup import faults
from jobgroup.backends.local import network

sys.path.insert(0, str(REPO / "bench"))
import bench_crash  # noqa: E402  (the campaign's harness)

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: network namespaces, "
                                "bridges and cgroups are what a crash could leak")
pytestmark = [pytest.mark.root, needs_root]

# Every named point, and later hits of the points a group passes many times (the 4th spawn is a
# node of the second group, started in the same batch as two others).
FAULTS = [*faults.POINTS, "start.spawned:2", "start.spawned:4", "settle.read:3",
          "stop.signalled:2", "network.claimed:2", "teardown.begin:3"]


@pytest.mark.parametrize("fault", FAULTS)
def test_sigkill_at_a_named_step_then_restart_every_group_ends_right_and_nothing_is_left(
        tmp_path, fault):
    result = bench_crash.run_once(tmp_path / "run", fault=fault)
    assert result.fired, f"the controller never reached {fault}"
    assert not result.problems, "\n".join(result.problems)


def test_sigkill_between_two_nodes_of_one_task_starts_the_other_after_the_restart(tmp_path):
    # "ok" alone: spawns 1 and 2 are main's setups, 3 is main-0's run; main-1's run was
    # decided (recorded as starting) but never spawned. The restarted controller finds main-0
    # running and starts main-1 rather than waiting for a barrier that is already past.
    result = bench_crash.run_once(tmp_path / "run", fault="start.spawned:3", scenarios=("ok",))
    assert result.fired
    assert not result.problems, "\n".join(result.problems)


@pytest.mark.parametrize("seed", range(4))
def test_sigkill_from_outside_at_random_moments(tmp_path, seed):
    import random

    rng = random.Random(1600 + seed)
    kills = [rng.uniform(0, 2.0) for _ in range(1 + seed % 3)]
    result = bench_crash.run_once(tmp_path / "run", kills=kills)
    assert result.fired
    assert not result.problems, "\n".join(result.problems)


def test_unknown_fault_point_is_refused_by_the_controller(jenv):
    env = {**jenv.env, "JOBGROUP_FAULT": "start.spwned"}
    p = subprocess.run([sys.executable, "-m", "jobgroup.controller.daemon", str(jenv.home)],
                       env=env, capture_output=True, text=True, timeout=30)
    assert p.returncode == 2
    assert "unknown fault point 'start.spwned'" in p.stderr and "start.spawned" in p.stderr
    assert "Traceback" not in p.stderr


# --- the network alone ----------------------------------------------------------------------------

def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


def test_network_left_half_made_is_made_anew_and_teardown_twice_is_quiet(tmp_path):
    home = tmp_path / "home"
    netid = network.net_id(home, 7)
    # What a controller killed in the middle of the old single batch left: the bridge (with an
    # address), one namespace with its veth, and nothing recorded.
    _ip("link", "add", network.bridge_name(netid), "type", "bridge")
    _ip("addr", "add", "10.213.250.1/30", "dev", network.bridge_name(netid))
    _ip("netns", "add", network.netns_name(netid, 0))
    _ip("link", "add", network.veth_name(netid, 0), "type", "veth", "peer", "name", "eth0",
        "netns", network.netns_name(netid, 0))
    try:
        net = network.ensure(home, 7, 2)
        assert network.complete(net)
        assert network.read_record(home, 7) == net
        left = network.existing(netid)
        assert left == {"bridges": [net.bridge],
                        "veths": [network.veth_name(netid, 0), network.veth_name(netid, 1)],
                        "netns": [net.netns(0), net.netns(1)]}
        assert network.ensure(home, 7, 2) == net  # recorded and complete: reused as it is
        # A namespace gone (e.g. removed by hand): made again, on the same subnet.
        _ip("netns", "del", net.netns(1))
        again = network.ensure(home, 7, 2)
        assert again == net and network.complete(again)
        network.teardown(home, 7)
        assert network.existing(netid) == {"bridges": [], "veths": [], "netns": []}
        assert not network.record_path(home, 7).exists()
        assert not network.group_lock_path(home, 7).exists()
        network.teardown(home, 7)  # twice: quiet
    finally:
        network.destroy(netid)


def test_machine_lock_directory_must_be_private(tmp_path):
    loose = tmp_path / "loose"
    loose.mkdir(mode=0o755)
    os.chmod(loose, 0o755)
    with pytest.raises(network.NetworkError, match="must be a directory private to uid 0"):
        network.check_private_dir(loose)
    link = tmp_path / "link"
    link.symlink_to(loose)
    with pytest.raises(network.NetworkError, match="is not a directory"):
        network.check_private_dir(link)
    os.chmod(loose, 0o700)
    network.check_private_dir(loose)  # fine
    assert os.stat(network.RUN_DIR).st_mode & 0o777 == 0o700 or not network.RUN_DIR.exists()


# --- doctor and the leftovers of finding 3 --------------------------------------------------------

def test_doctor_finds_an_interrupted_network_of_a_group_that_has_not_ended(jenv):
    """The controller killed while it made a group's network: the group is still RUNNING in the
    store (it has not ended), yet its half-made network is a leftover that `doctor` reports,
    and that the next controller replaces anyway."""
    fault_env = {**jenv.env, "JOBGROUP_FAULT": "network.host"}
    subprocess.run([sys.executable, "-m", "jobgroup", "controller", "start"], env=fault_env,
                   check=True, capture_output=True, timeout=60)
    pid = jenv.controller_pid()
    p = jenv.jg("launch", str(jenv.spec("name: half\nrun: echo hello from $(hostname)\n")),
                "-d")
    wait_for(lambda: not os.path.exists(f"/proc/{pid}") or _zombie(pid))
    # The controller may die before it answers (the launch then says to check the queue).
    assert p.returncode == 0 or "did not answer" in p.stderr, p.stderr
    job = json.loads(jenv.jg("queue", "--all", "--json", check=True).stdout)[0]["id"]
    netid = network.net_id(jenv.home, job)
    made = network.existing(netid)
    assert made["bridges"] and made["netns"], made  # half made, nothing recorded
    assert jenv.job(job)["status"] in ("PENDING", "STARTING")
    p = jenv.jg("doctor", "--json")
    assert p.returncode == 1, p.stdout + p.stderr
    found = json.loads(p.stdout)["found"]
    assert found["netns"] == made["netns"]
    assert sorted(found["links"]) == sorted(made["bridges"] + made["veths"])
    assert found["mounts"] == [f"/run/netns/{n}" for n in made["netns"]]
    assert found["processes"] == [] and found["files"] == []
    final = jenv.wait(job)  # `wait` starts a controller: it makes the network anew
    assert final["status"] == "SUCCEEDED", final
    assert "hello from half-0" in jenv.log(job, "half")
    assert network.existing(netid) == {"bridges": [], "veths": [], "netns": []}
    assert jenv.jg("doctor").stdout.strip() == "Nothing left behind."


def test_doctor_finds_a_stray_process_of_a_running_group_but_not_its_live_node(jenv):
    job = jenv.launch_d("name: live\nrun: echo up; sleep 1000\n")
    wait_for(lambda: "up" in jenv.log(job, "live"))
    # A process of an attempt the store does not run (what a phase started twice would be).
    stray_status = jenv.home / "jobs" / str(job) / "nodes" / "0-0.run.7.status"
    stray = subprocess.Popen(["sleep", "1000"], start_new_session=True,
                             env={**os.environ, "JOBGROUP_PHASE": str(stray_status)})
    try:
        found = json.loads(jenv.jg("doctor", "--json").stdout)["found"]
        assert found["processes"] == [stray.pid]  # the live node is not reported
        assert found["netns"] == [] and found["links"] == []
        fixed = jenv.jg("doctor", "--fix")
        assert fixed.returncode == 0, fixed.stdout
        assert stray.wait(timeout=10) == -9
        assert jenv.job(job)["status"] == "RUNNING"
        assert "up" in jenv.log(job, "live") and processes_of(jenv.home)
    finally:
        if stray.poll() is None:
            stray.kill()
            stray.wait()


# --- subnets across state directories (finding 5) -------------------------------------------------

SERVER = textwrap.dedent('''\
    name: {name}
    run: |
      exec python3 -c '
      import os, socket
      s = socket.socket()
      s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
      s.bind(("0.0.0.0", 8000))
      s.listen()
      print("listening", flush=True)
      while True:
          c, _ = s.accept()
          c.sendall(os.environ["SKYPILOT_JOBGROUP_NAME"].encode())
          c.close()
      '
    ''')


def test_groups_launched_at_once_in_two_state_directories_get_distinct_subnets(tmp_path):
    envs = []
    for side in ("a", "b"):
        (tmp_path / side).mkdir()
        envs.append(Env(tmp_path / side / "home", tmp_path / side))
    try:
        for e in envs:  # both controllers up, so that their allocations really overlap
            e.jg("controller", "start", check=True)
        work = [(e, f"{side}{i}") for e, side in zip(envs, "ab") for i in range(6)]

        def launch(item: tuple[Env, str]) -> tuple[Env, str, int]:
            e, name = item
            path = e.spec(SERVER.format(name=name), name=f"{name}.yaml")
            p = e.jg("launch", str(path), "-d", check=True)
            return e, name, int(p.stdout.split()[1])

        with ThreadPoolExecutor(len(work)) as pool:
            jobs = list(pool.map(launch, work))
        subnets = {}
        for e, name, job in jobs:
            wait_for(lambda: "listening" in e.log(job, name), timeout=60)
            record = e.home / "jobs" / str(job) / "network.json"
            subnets[name] = json.loads(record.read_text())["subnet"]
        assert len(set(subnets.values())) == 12, subnets
        for e, name, job in jobs:  # each address answers with the group that owns it
            topo = json.loads((e.home / "jobs" / str(job) / "topology.json").read_text())
            address = topo["tasks"][0]["nodes"][0]["address"]
            with socket.create_connection((address, 8000), timeout=10) as c:
                assert c.recv(100).decode() == name
    finally:
        for e in envs:
            if (e.home / "state.db").exists():
                e.jg("cancel", "--all")
                queue = json.loads(e.jg("queue", "--all", "--json", check=True).stdout)
                for j in queue:  # ended means torn down (network included)
                    e.wait(j["id"])
                assert not processes_of(e.home)
            e.stop_controller()
        for e in envs:
            assert network.existing(network.home_tag(e.home)) == {
                "bridges": [], "veths": [], "netns": []}
