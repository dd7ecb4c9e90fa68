"""The Slurm dev cluster (`jobgroup dev slurm up|down|status`): pure rendering of its files, and
a real cluster (Debian's slurmctld, slurmd and munged; one network namespace per node) started
once for the module. The real tests need root and Slurm (scripts/install-slurm) and skip
otherwise with the reason."""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from conftest import processes_named
from jobgroup.devcluster import slurm as dc
from jobgroup.devcluster import slurmconf
from jobgroup.devcluster.slurmconf import Paths
from jobgroup.errors import UsageError

# ----------------------------------------------------------------------------- pure


def _layout(nodes: int = 3) -> slurmconf.Layout:
    return slurmconf.plan_layout("ab12", ipaddress.ip_network("10.214.3.0/24"), nodes, "vm", 6817,
                                 2, 4000, "/run/jobgroup-slurm-ab12/munge.socket")


def test_layout_names_and_addresses() -> None:
    lay = _layout(3)
    assert [n.name for n in lay.nodes] == ["node1", "node2", "node3"]
    assert [n.address for n in lay.nodes] == ["10.214.3.2", "10.214.3.3", "10.214.3.4"]
    assert lay.gateway == "10.214.3.1"
    assert lay.bridge == "jg-sab12" and [n.veth for n in lay.nodes][0] == "jg-sab12-1"
    assert lay.nodes[2].netns == "jgslurm-ab12-node3"
    # Interface names must fit Linux's 15 bytes, even with 250 nodes.
    assert all(len(n.veth) <= 15 for n in slurmconf.plan_layout(
        "zzzz", ipaddress.ip_network("10.214.0.0/16"), 250, "h", 1, 1, 1, "s").nodes)
    with pytest.raises(UsageError):
        slurmconf.plan_layout("ab12", ipaddress.ip_network("10.0.0.0/30"), 3, "vm", 1, 1, 1, "s")


def test_slurm_conf_rendering(tmp_path: Path) -> None:
    paths = Paths.of(tmp_path)
    conf = slurmconf.render_slurm_conf(_layout(3), paths)
    lines = conf.splitlines()
    for want in ("SlurmctldHost=vm(10.214.3.1)", "SlurmctldPort=6817",
                 "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none",
                 "SelectType=select/cons_tres",
                 "SchedulerParameters=bf_interval=1,batch_sched_delay=0", "ReturnToService=2",
                 "AccountingStorageType=accounting_storage/none",
                 "JobCompType=jobcomp/filetxt", f"JobCompLoc={paths.log}/jobcomp.txt",
                 "AuthInfo=socket=/run/jobgroup-slurm-ab12/munge.socket",
                 f"SlurmdSpoolDir={paths.spool}/%n",
                 f"SlurmdPidFile={paths.run}/slurmd-%n.pid",
                 "PartitionName=debug Nodes=node1,node2,node3 Default=YES MaxTime=INFINITE "
                 "State=UP"):
        assert want in lines, want
    node_lines = [x for x in lines if x.startswith("NodeName=")]
    assert node_lines[1] == ("NodeName=node2 NodeAddr=10.214.3.3 NodeHostname=node2 CPUs=2 "
                             "RealMemory=4000 Feature=cpu State=UNKNOWN")
    assert not any(x.startswith("GresTypes") for x in lines)  # 22.05 rejects an empty value
    # No cgroups: Slurm tracks processes by their parents; accounting from /proc.
    for want in ("ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none",
                 "JobAcctGatherType=jobacct_gather/linux", "DefMemPerCPU=2000",
                 f"FirstJobId={slurmconf.first_job_id('ab12')}"):
        assert want in lines, want


def test_cgroup_containment_gpus_and_job_ids_are_rendered(tmp_path: Path) -> None:
    paths = Paths.of(tmp_path)
    lay = slurmconf.plan_layout("ab12", ipaddress.ip_network("10.214.3.0/24"), 3, "vm", 6817, 2,
                                4000, "/run/x/munge.socket", cgroup="v1", gpus="A100:2",
                                gpu_nodes=1)
    lines = slurmconf.render_slurm_conf(lay, paths).splitlines()
    for want in ("ProctrackType=proctrack/cgroup", "TaskPlugin=task/cgroup",
                 "JobAcctGatherType=jobacct_gather/cgroup", "GresTypes=gpu"):
        assert want in lines, want
    nodes = [x for x in lines if x.startswith("NodeName=")]
    assert "Gres=gpu:A100:2 Feature=gpu" in nodes[0] and "Gres" not in nodes[1]
    cg = slurmconf.render_cgroup_conf(lay).splitlines()
    assert "CgroupPlugin=cgroup/v1" in cg and "ConstrainRAMSpace=yes" in cg
    assert "ConstrainCores=no" in cg  # every emulated node shares this machine's cores
    assert slurmconf.render_gres_conf(lay, paths).splitlines()[1] == (
        f"NodeName=node1 Name=gpu Type=A100 File={paths.dev}/node1/nvidia[0-1]")
    # Two clusters at once (two sessions' tests) never share job ids, hence never a cgroup.
    starts = {slurmconf.first_job_id(t) for t in ("ab12", "ab13", "zz00", "0000")}
    assert len(starts) == 4 and max(starts) + 100_000 < 67_043_328
    with pytest.raises(UsageError, match="TYPE:COUNT"):
        slurmconf.parse_gpus("A100:x")
    # slurmstepd's sockets (SPOOL/node/node_JOB.STEP) must fit a Unix socket address.
    names = ["node1", "node100"]
    assert slurmconf.spool_dir(Paths.of(Path("/h")), names, 59_900_001) == Path(
        "/h/devcluster/slurm/spool")
    deep = Paths.of(Path("/tmp/" + "x" * 60))
    assert slurmconf.spool_dir(deep, names, 59_900_001) == deep.spool_outside
    assert str(deep.spool_outside).startswith("/run/jobgroup-slurm-")


def test_which_cgroups_slurm_gets_here() -> None:
    hybrid = "\n".join([
        "30 25 0:26 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw",
        "31 25 0:27 / /sys/fs/cgroup/freezer rw - cgroup cgroup rw,freezer",
        "32 25 0:28 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory",
        "33 25 0:29 / /sys/fs/cgroup/cpuset rw - cgroup cgroup rw,cpuset"])
    assert dc.cgroup_mode(hybrid) == "v1"
    assert dc.cgroup_mode("30 25 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw") == "v2"
    assert dc.cgroup_mode("") == ""


def test_hosts_and_commands(tmp_path: Path) -> None:
    lay, paths = _layout(2), Paths.of(tmp_path)
    hosts = slurmconf.render_hosts(lay)
    assert "10.214.3.1\tvm" in hosts and "10.214.3.3\tnode2" in hosts
    assert "127.0.0.1\tlocalhost" in hosts
    cmd = slurmconf.slurmd_command(lay.nodes[0], paths)
    assert cmd[:2] == ["nsenter", "--net=/run/netns/jgslurm-ab12-node1"]
    assert "ip" not in cmd and "unshare" in cmd and "--uts" in cmd and "--mount" in cmd
    assert cmd[-4:] == ["node1", str(paths.hosts), str(paths.resolv), str(paths.conf)]
    assert "exec slurmd -D -f" in cmd[cmd.index("-c") + 1]
    m = slurmconf.munged_command(lay, paths)
    assert f"--socket={lay.munge_socket}" in m and f"--key-file={paths.munge_key}" in m


def test_paths_slurm_cannot_express_are_refused(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="JOBGROUP_HOME"):
        slurmconf.check_paths(Paths.of(tmp_path / "a b"))
    slurmconf.check_paths(Paths.of(tmp_path))


def test_munge_socket_moves_to_run_where_munged_would_refuse_it(tmp_path: Path) -> None:
    # munged wants every directory above its socket world-traversable, and the path must fit
    # a Unix socket address.
    closed = Paths.of(tmp_path / "closed")
    closed.root.mkdir(parents=True)
    (tmp_path / "closed").chmod(0o700)
    long = Paths.of(tmp_path / ("x" * 120))
    long.root.mkdir(parents=True)
    assert dc._munge_socket(closed) == closed.munge_socket_outside
    assert dc._munge_socket(long) == long.munge_socket_outside
    assert len(str(long.munge_socket_outside)) <= slurmconf.MAX_SOCKET_PATH
    assert Paths.of(Path("/h")).munge_socket_inside == Path(
        "/h/devcluster/slurm/munge-socket/munge.socket")


def test_not_up_is_quiet(tmp_path: Path) -> None:
    assert dc.info(tmp_path) is None
    assert dc.status(tmp_path) == (False, ["Slurm dev cluster: not running."])
    dc.down(tmp_path)  # nothing there: nothing done, no error
    assert not (tmp_path / "devcluster").exists()


def _cli(home: Path, *args: str, timeout: float = 90, **kw) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "JOBGROUP_HOME": str(home), "NO_COLOR": "1"}
    env.pop("SLURM_CONF", None)
    return subprocess.run([sys.executable, "-m", "jobgroup", "dev", "slurm", *args], env=env,
                          capture_output=True, text=True, timeout=timeout, **kw)


def test_up_without_root_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    from jobgroup.cli.main import main

    monkeypatch.setenv("JOBGROUP_HOME", str(tmp_path))
    monkeypatch.setattr(dc.os, "geteuid", lambda: 1000)
    with pytest.raises(SystemExit) as e:
        main(["dev", "slurm", "up"])
    assert e.value.code == 2
    assert "needs root" in capsys.readouterr().err
    assert not (tmp_path / "devcluster" / "slurm" / "slurm.conf").exists()


# ----------------------------------------------------------------------------- real cluster

_why = ("needs root" if os.geteuid() != 0 else
        "needs Slurm and munge (scripts/install-slurm)"
        if not all(shutil.which(t) for t in ("slurmctld", "slurmd", "munged", "srun"))
        else "needs nsenter, unshare and ip" if not all(shutil.which(t) for t in
                                                          ("nsenter", "unshare", "ip"))
        else "")
needs_cluster = pytest.mark.skipif(bool(_why), reason=_why or "-")


def _recorded_pids(home: Path) -> dict[str, int]:
    run = Paths.of(home).run
    return {f.name[: -len(".started")]: int(f.read_text().split()[0])
            for f in run.glob("*.started")} if run.exists() else {}


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] not in (b"Z", b"X")
    except OSError:
        return False


def _links() -> set[str]:
    out = subprocess.run(["ip", "-j", "link"], capture_output=True, text=True, timeout=10).stdout
    return {link["ifname"] for link in json.loads(out or "[]")}


def _namespaces() -> set[str]:
    try:
        return set(os.listdir("/run/netns"))
    except FileNotFoundError:
        return set()


def _assert_gone(home: Path, pids: dict[str, int], layout: dict) -> None:
    deadline = time.monotonic() + 5
    while any(_running(p) for p in pids.values()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [d for d, p in pids.items() if _running(p)]
    assert not {n["netns"] for n in layout["layout"]} & _namespaces()
    assert not ({layout["bridge"]} | {n["veth"] for n in layout["layout"]}) & _links()
    assert dc.info(home) is None


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    home = tmp_path_factory.mktemp("slurm") / "home"
    t0 = time.monotonic()
    try:
        info = dc.up(home, nodes=3, timeout=60)
        print(f"dev cluster up in {time.monotonic() - t0:.2f} s")
        yield home, info
    finally:
        dc.down(home, keep_logs=False)


def _slurm(info: dc.ClusterInfo, *args: str, timeout: float = 30, cwd: Path | None = None,
           check: bool = True) -> subprocess.CompletedProcess[str]:
    p = subprocess.run(list(args), env={**os.environ, **info.env()}, capture_output=True,
                       text=True, timeout=timeout, cwd=cwd)
    if check and p.returncode != 0:
        raise AssertionError(f"{' '.join(args)} -> {p.returncode}\n{p.stdout}\n{p.stderr}")
    return p


@pytest.mark.root
@needs_cluster
def test_up_shows_idle_nodes_and_describes_itself(cluster) -> None:
    home, info = cluster
    assert [n.name for n in info.nodes] == ["node1", "node2", "node3"]
    assert dc.node_states(home) == {"node1": "idle", "node2": "idle", "node3": "idle"}
    p = _slurm(info, "sinfo", "-h", "-o", "%D %t %P")
    assert p.stdout.split() == ["3", "idle", "debug*"]
    d = json.loads((info.root / "cluster.json").read_text())
    assert d["slurm_conf"] == str(info.slurm_conf) and d["partition"] == "debug"
    assert [(n["name"], n["address"]) for n in d["nodes"]] == [
        (n.name, n.address) for n in info.nodes]
    assert d["munge_socket"] == str(info.munge_socket) and d["controller_address"]
    assert dc.info(home) == info
    paths = Paths.of(home)
    assert stat.S_IMODE(paths.munge_key.stat().st_mode) == 0o400
    assert stat.S_IMODE(paths.munge_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(info.munge_socket.parent.stat().st_mode) == 0o755
    assert info.munge_socket.is_socket()
    running, lines = dc.status(home)
    assert running and any("node3" in x and "idle" in x for x in lines)


@pytest.mark.root
@needs_cluster
def test_srun_on_two_nodes_prints_two_host_names(cluster) -> None:
    _, info = cluster
    p = _slurm(info, "srun", "-N2", "hostname")
    names = sorted(p.stdout.split())
    assert len(names) == 2 and len(set(names)) == 2
    assert set(names) <= {"node1", "node2", "node3"}


@pytest.mark.root
@needs_cluster
def test_heterogeneous_job_runs_components_on_distinct_nodes(cluster, tmp_path: Path) -> None:
    _, info = cluster
    out = tmp_path / "het.out"
    script = tmp_path / "het.sh"
    script.write_text(textwrap.dedent(f"""\
        #!/bin/sh
        #SBATCH -N1 -n1 --output={out}
        #SBATCH hetjob
        #SBATCH -N1 -n1
        srun --het-group=0,1 sh -c 'echo "$(hostname) $SLURM_HET_SIZE"'
        """))
    _slurm(info, "sbatch", "--wait", str(script), timeout=60, cwd=tmp_path)
    rows = [line.split() for line in out.read_text().splitlines() if line.strip()]
    assert len(rows) == 2, out.read_text()
    assert {r[1] for r in rows} == {"2"}  # SLURM_HET_SIZE inside every component
    assert len({r[0] for r in rows}) == 2  # two components, two nodes


@pytest.mark.root
@needs_cluster
def test_server_on_one_node_is_reached_by_name_from_another(cluster, tmp_path: Path) -> None:
    _, info = cluster
    (tmp_path / "hello.txt").write_text("hello from node1\n")
    server = subprocess.Popen(
        ["srun", "-w", "node1", "-N1", sys.executable, "-m", "http.server", "18080",
         "--directory", str(tmp_path)],
        env={**os.environ, **info.env()}, cwd=tmp_path, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    try:
        client = textwrap.dedent("""\
            import socket, time, urllib.request
            assert socket.gethostname() == "node2"
            for _ in range(200):
                try:
                    r = urllib.request.urlopen("http://node1:18080/hello.txt", timeout=2)
                    print(r.read().decode(), end="")
                    break
                except OSError:
                    time.sleep(0.05)
            """)
        p = _slurm(info, "srun", "-w", "node2", "-N1", sys.executable, "-c", client, timeout=60)
        assert p.stdout == "hello from node1\n"
        # The host itself is not node1: the server listens only in node1's namespace.
        assert subprocess.run(["curl", "-s", "-m", "1", "http://127.0.0.1:18080/"],
                              capture_output=True, timeout=10).returncode != 0 \
            if shutil.which("curl") else True
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=5)


@pytest.mark.root
@needs_cluster
def test_slurms_own_containment_ends_what_a_step_left_running(cluster) -> None:
    """Where this machine allows it, the nodes run with proctrack/cgroup: a step's background
    child, even one that left its session, ends with the step; `status` says which it is; the
    accounting gatherer measures steps (sstat, `jobgroup top`)."""
    home, info = cluster
    mode = json.loads((info.root / "cluster.json").read_text())["cgroup"]
    assert mode == dc.cgroup_mode()
    running, lines = dc.status(home)
    assert running and ("proctrack/cgroup" if mode else "proctrack/linuxproc") in lines[0]
    if not mode:
        pytest.skip("no cgroups Slurm can use here: processes that leave a step's tree escape")
    mark = f"jg-outlive-{os.getpid()}"
    p = _slurm(info, "srun", "-w", "node2", "bash", "-c",
               f'm={mark[:6]}; (exec -a "$m{mark[6:]}" sleep 300) & '
               f'setsid bash -c \'exec -a "$0" sleep 301\' "$m{mark[6:]}-s" & echo started')
    assert p.stdout.strip() == "started"

    deadline = time.monotonic() + 10
    while processes_named(mark) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not processes_named(mark)
    p = _slurm(info, "srun", "-w", "node1", "bash", "-c",
               "python3 -c 'x = bytearray(40 << 20); import time; time.sleep(2)' & sleep 1; "
               "sstat -n -P -j $SLURM_JOB_ID.$SLURM_STEP_ID --format=MaxRSS; wait")
    rss = p.stdout.strip().splitlines()[0]
    assert rss.endswith("K") and int(rss[:-1]) > 40 << 10, p.stdout


@pytest.mark.root
@needs_cluster
def test_up_again_is_idempotent_and_repairs_a_half_dead_cluster(cluster) -> None:
    home, info = cluster
    before = _recorded_pids(home)
    said: list[str] = []
    assert dc.up(home, nodes=3, progress=said.append) == info
    assert "already up" in said[0]
    assert _recorded_pids(home) == before
    with pytest.raises(UsageError, match="already exists with 3 nodes"):
        dc.up(home, nodes=4)
    # Kill node2's slurmd (by its recorded pid): `up` starts it again and nothing else.
    os.kill(before["slurmd-node2"], 9)
    deadline = time.monotonic() + 5
    while _running(before["slurmd-node2"]) and time.monotonic() < deadline:
        time.sleep(0.02)
    said.clear()
    dc.up(home, progress=said.append)
    after = _recorded_pids(home)
    assert after["slurmd-node2"] != before["slurmd-node2"] and _running(after["slurmd-node2"])
    assert {k: v for k, v in after.items() if k != "slurmd-node2"} == \
        {k: v for k, v in before.items() if k != "slurmd-node2"}
    assert any("slurmd-node2" in s for s in said), said
    assert dc.node_states(home) == {"node1": "idle", "node2": "idle", "node3": "idle"}
    assert _slurm(info, "srun", "-w", "node2", "hostname").stdout.strip() == "node2"


@pytest.mark.root
@needs_cluster
def test_cli_lifecycle_down_removes_everything(tmp_path: Path) -> None:
    """Through the CLI: up (2 nodes), status, up again, a job left running, down, down again."""
    home = tmp_path / "home"
    layout: dict = {}
    try:
        t0 = time.monotonic()
        p = _cli(home, "up", "--nodes", "2")
        t_up = time.monotonic() - t0
        assert p.returncode == 0, p.stderr
        conf = Paths.of(home).conf
        assert f"export SLURM_CONF={conf}" in p.stdout
        layout = json.loads(Paths.of(home).cluster_json.read_text())
        p = _cli(home, "up")
        assert p.returncode == 0 and "already up" in p.stdout, p.stdout + p.stderr
        p = _cli(home, "status")
        assert p.returncode == 0 and "node2" in p.stdout and "idle" in p.stdout, p.stdout
        pids = _recorded_pids(home)
        assert set(pids) == {"munged", "slurmctld", "slurmd-node1", "slurmd-node2"}
        # A job still running on a node: down takes it too (it lives in the node's namespace).
        job = subprocess.Popen(["srun", "-w", "node1", "sleep", "300"],
                               env={**os.environ, "SLURM_CONF": str(conf)},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        info = dc.info(home)
        assert info is not None
        deadline = time.monotonic() + 20
        while (dc.node_states(home) or {}).get("node1") not in ("allocated", "mixed") \
                and time.monotonic() < deadline:
            time.sleep(0.05)
        t0 = time.monotonic()
        p = _cli(home, "down")
        t_down = time.monotonic() - t0
        assert p.returncode == 0 and "stopped" in p.stdout, p.stderr
        print(f"CLI up {t_up:.2f} s, down {t_down:.2f} s")
        job.wait(timeout=20)
        _assert_gone(home, pids, layout)
        p = _cli(home, "down")
        assert p.returncode == 0 and p.stdout == "" and p.stderr == ""
        p = _cli(home, "status")
        assert p.returncode == 1 and "not running" in p.stdout
    finally:
        dc.down(home)
        if layout:
            assert not {n["netns"] for n in layout["layout"]} & _namespaces()
