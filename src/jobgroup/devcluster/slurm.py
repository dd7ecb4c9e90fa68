"""A real Slurm cluster on this machine for development and tests (`jobgroup dev slurm up`).

Debian's slurmctld, slurmd and munged run with a private config under
`$JOBGROUP_HOME/devcluster/slurm/`: slurmctld on the host, bound to a bridge's address; each
slurmd (node1..nodeN) in its own network namespace with its own address, host name and
/etc/hosts; all of them share this machine's filesystem, so paths under $JOBGROUP_HOME mean the
same thing inside jobs. Slurm's commands reach the cluster with `SLURM_CONF=<slurm.conf>`.

Every daemon is started by us and stopped by its recorded pid (verified), never by name.
`cluster.json` tells other code (the Slurm backend, tests) where the cluster is: see `info`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import shutil
import socket
import stat
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from jobgroup.backends.slurm.commands import per_node
from jobgroup.devcluster import net, procs
from jobgroup.devcluster.net import DevClusterError
from jobgroup.devcluster.slurmconf import (
    MAX_SOCKET_PATH,
    RESOLV_CONF,
    Layout,
    Node,
    Paths,
    check_paths,
    home_tag,
    munged_command,
    parse_gpus,
    plan_layout,
    render_cgroup_conf,
    render_gres_conf,
    render_hosts,
    render_slurm_conf,
    slurmctld_command,
    spool_dir,
    slurmd_command,
)
from jobgroup.errors import UsageError

DEFAULT_NODES = 7  # the seed's RL group: 5 heterogeneous components on 7 nodes
DEFAULT_CPUS = 2
DEFAULT_MEMORY_MB = 4000
CLIENT_TIMEOUT = 5.0  # every Slurm client call: sinfo blocks for long when slurmctld is down
TOOLS = ("slurmctld", "slurmd", "munged", "sinfo", "scontrol", "scancel", "squeue", "nsenter",
         "unshare", "ip")
_READY = {"idle", "mixed", "allocated", "completing"}

Progress = Callable[[str], None]


@dataclass(frozen=True)
class NodeInfo:
    name: str
    address: str


@dataclass(frozen=True)
class ClusterInfo:
    """Where a running dev cluster is. `env()` is what Slurm's commands need to reach it."""

    slurm_conf: Path
    nodes: list[NodeInfo]
    partition: str
    munge_socket: Path
    controller_address: str
    controller_port: int
    root: Path  # $JOBGROUP_HOME/devcluster/slurm

    def env(self) -> dict[str, str]:
        return {"SLURM_CONF": str(self.slurm_conf)}


# ---------------------------------------------------------------- cluster.json


def _layout_to_json(layout: Layout, paths: Paths) -> dict:
    return {
        # what the Slurm backend reads
        "slurm_conf": str(paths.conf),
        "nodes": [{"name": n.name, "address": n.address} for n in layout.nodes],
        "partition": layout.partition,
        "munge_socket": layout.munge_socket,
        "controller_address": layout.gateway,
        # the rest: how to rebuild or tear down this very cluster
        "controller_port": layout.controller_port,
        "controller_host": layout.controller_host,
        "subnet": layout.subnet,
        "bridge": layout.bridge,
        "tag": layout.tag,
        "cpus_per_node": layout.cpus_per_node,
        "memory_per_node": layout.memory_per_node,
        "cgroup": layout.cgroup,
        "gpu_type": layout.gpu_type,
        "gpus_per_node": layout.gpus_per_node,
        "gpu_nodes": layout.gpu_nodes,
        "first_job_id": layout.first_job_id,
        "spool": layout.spool,
        "layout": [asdict(n) for n in layout.nodes],
    }


def _layout_from_json(d: dict) -> Layout:
    return Layout(
        tag=d["tag"], subnet=d["subnet"], gateway=d["controller_address"], bridge=d["bridge"],
        controller_host=d["controller_host"], controller_port=int(d["controller_port"]),
        nodes=[Node(**n) for n in d["layout"]], cpus_per_node=int(d["cpus_per_node"]),
        memory_per_node=int(d["memory_per_node"]), partition=d["partition"],
        munge_socket=d["munge_socket"], cgroup=str(d.get("cgroup", "")),
        gpu_type=str(d.get("gpu_type", "")), gpus_per_node=int(d.get("gpus_per_node", 0)),
        gpu_nodes=int(d.get("gpu_nodes", 0)), first_job_id=int(d.get("first_job_id", 1)),
        spool=str(d.get("spool", "")),
    )


def _load(paths: Paths) -> Layout | None:
    try:
        return _layout_from_json(json.loads(paths.cluster_json.read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _info(layout: Layout, paths: Paths) -> ClusterInfo:
    return ClusterInfo(
        slurm_conf=paths.conf, nodes=[NodeInfo(n.name, n.address) for n in layout.nodes],
        partition=layout.partition, munge_socket=Path(layout.munge_socket),
        controller_address=layout.gateway, controller_port=layout.controller_port,
        root=paths.root)


def info(home: Path) -> ClusterInfo | None:
    """The running dev cluster of this state directory, or None when it is not up (no
    cluster.json, or its slurmctld is not running). Cheap: no Slurm command is run."""
    paths = Paths.of(home)
    layout = _load(paths)
    if layout is None or _alive(paths, "slurmctld") is None:
        return None
    return _info(layout, paths)


# ---------------------------------------------------------------- daemons


def _marker(paths: Paths, daemon: str) -> Callable[[bytes], bool]:
    """How a command line shows that a process is this cluster's `daemon`."""
    if daemon == "munged":  # munged's names its key file; the others the cluster's slurm.conf
        key = str(paths.munge_key).encode()
        return lambda cmd: key in cmd
    conf = str(paths.conf).encode()
    if not daemon.startswith("slurmd-"):
        return lambda cmd: conf in cmd
    # One conf serves every node: the node name tells them apart (slurmd's own command line,
    # or nsenter's before the exec).
    name = daemon[len("slurmd-"):].encode()
    return lambda cmd: conf in cmd and (b"-N " + name + b" " in cmd
                                        or b" slurmd-node " + name + b" " in cmd)


def _alive(paths: Paths, daemon: str) -> int | None:
    return procs.alive(paths.pid_file(daemon), _marker(paths, daemon))


def _daemons(layout: Layout) -> list[str]:
    return ["munged", "slurmctld", *(f"slurmd-{n.name}" for n in layout.nodes)]


def _client(paths: Paths, *args: str,
            timeout: float = CLIENT_TIMEOUT) -> subprocess.CompletedProcess[str] | None:
    """Run a Slurm client command against this cluster; None when it timed out."""
    env = {**os.environ, "SLURM_CONF": str(paths.conf)}
    try:
        return subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return None


def node_states(home: Path) -> dict[str, str] | None:
    """node name -> Slurm's state ('idle', 'allocated', 'down*', ...), or None when slurmctld
    does not answer within a few seconds."""
    p = _client(Paths.of(home), "sinfo", "-h", "-N", "-o", "%N %T")
    if p is None or p.returncode != 0:
        return None
    return per_node(p.stdout)


def _ready(states: dict[str, str] | None, layout: Layout) -> bool:
    return states is not None and all(states.get(n.name) in _READY for n in layout.nodes)


def _log_tail(path: Path, lines: int = 8) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return ""
    return "\n".join("    " + t for t in text)


def _wait(pred: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if pred():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)


# ---------------------------------------------------------------- up


def _check_can_run() -> None:
    if os.geteuid() != 0:
        raise UsageError("the Slurm dev cluster needs root (network namespaces, Slurm's daemons); "
                         "run `sudo jobgroup dev slurm up`")
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        raise UsageError(f"the Slurm dev cluster needs {', '.join(missing)}: run "
                         "scripts/install-slurm (Debian/Ubuntu: apt-get install slurm-wlm munge)")


@contextlib.contextmanager
def _locked(paths: Paths) -> Iterator[None]:
    paths.root.mkdir(parents=True, exist_ok=True)
    fd = os.open(paths.root.parent / ".slurm.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _free_port(preferred: list[int]) -> int:
    for port in preferred:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            # as slurmctld binds: connections of an earlier cluster in TIME_WAIT do not count
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("0.0.0.0", port))
                return port
            except OSError:
                continue
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("0.0.0.0", 0))
        return s.getsockname()[1]


def _new_layout(paths: Paths, nodes: int, cpus: int, memory: int, gpus: str | None = None,
                gpu_nodes: int | None = None) -> Layout:
    tag = home_tag(paths.root)
    subnet = net.pick_subnet(nodes)
    port = _free_port([6817, 20000 + int(tag, 36) % 10000])
    host = socket.gethostname().split(".")[0] or "localhost"
    layout = plan_layout(tag, subnet, nodes, host, port, cpus, memory,
                         str(_munge_socket(paths)), cgroup=cgroup_mode(), gpus=gpus,
                         gpu_nodes=gpu_nodes)
    spool = spool_dir(paths, [n.name for n in layout.nodes], layout.first_job_id)
    return dataclasses.replace(layout, spool=str(spool))


def cgroup_mode(mountinfo: str | None = None) -> str:
    """Which of Slurm's cgroup plugins this machine can give the nodes: "v1" where the v1
    freezer, memory and cpuset controllers are mounted (also on hybrid layouts, with v2 at
    /sys/fs/cgroup/unified), "v2" where /sys/fs/cgroup is a cgroup2 mount, "" otherwise.
    $JOBGROUP_DEV_SLURM_CGROUP (v1, v2, none) overrides it."""
    forced = os.environ.get("JOBGROUP_DEV_SLURM_CGROUP", "").strip().lower()
    if forced in ("v1", "v2"):
        return forced
    if forced in ("none", "no", "0", "off"):
        return ""
    if mountinfo is None:
        try:
            mountinfo = Path("/proc/self/mountinfo").read_text()
        except OSError:
            return ""
    v1: set[str] = set()
    v2_root = False
    for line in mountinfo.splitlines():
        left, _, right = line.partition(" - ")
        fields, rfields = left.split(), right.split()
        if len(fields) < 5 or len(rfields) < 3:
            continue
        mnt, fstype, opts = fields[4], rfields[0], rfields[2].split(",")
        if fstype == "cgroup" and mnt.startswith("/sys/fs/cgroup/"):
            v1.update(o for o in opts if o in ("freezer", "memory", "cpuset"))
        elif fstype == "cgroup2" and mnt == "/sys/fs/cgroup":
            v2_root = True
    if v1 == {"freezer", "memory", "cpuset"}:
        return "v1"
    return "v2" if v2_root else ""


def _munge_socket(paths: Paths) -> Path:
    """Inside the state directory when munged will accept it there (every directory above
    world-traversable, e.g. not under a 0700 home or pytest's tmp dirs; a short enough path)."""
    inside = paths.munge_socket_inside
    if len(str(inside)) > MAX_SOCKET_PATH:
        return paths.munge_socket_outside
    for d in [paths.root, *paths.root.parents]:
        try:
            if not os.stat(d).st_mode & 0o001:
                return paths.munge_socket_outside
        except OSError:
            return paths.munge_socket_outside
    return inside


def _prepare_files(layout: Layout, paths: Paths) -> None:
    for d, mode in ((paths.root, 0o755), (paths.munge_dir, 0o700),
                    (Path(layout.munge_socket).parent, 0o755),
                    (paths.state, 0o700), (_spool(layout, paths), 0o755), (paths.run, 0o755),
                    (paths.log, 0o755), (paths.hosts.parent, 0o755)):
        d.mkdir(parents=True, exist_ok=True)
        os.chmod(d, mode)
    if not paths.munge_key.exists():
        fd = os.open(paths.munge_key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
        with os.fdopen(fd, "wb") as f:
            f.write(os.urandom(1024))
    os.chmod(paths.munge_key, 0o400)
    for n in layout.nodes:
        (_spool(layout, paths) / n.name).mkdir(exist_ok=True)
    for name in layout.gpu_node_names():  # emulated GPUs: character devices like /dev/null
        (paths.dev / name).mkdir(parents=True, exist_ok=True)
        for i in range(layout.gpus_per_node):
            dev = paths.dev / name / f"nvidia{i}"
            if not dev.exists():
                os.mknod(dev, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    files = [(paths.conf, render_slurm_conf(layout, paths)),
             (paths.hosts, render_hosts(layout)), (paths.resolv, RESOLV_CONF)]
    if layout.cgroup:
        files.append((paths.cgroup_conf, render_cgroup_conf(layout)))
    if layout.gpu_node_names():
        files.append((paths.gres_conf, render_gres_conf(layout, paths)))
    for path, text in files:
        if not path.exists() or path.read_text() != text:
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(text)
            os.chmod(tmp, 0o644)
            tmp.replace(path)


def _spool(layout: Layout, paths: Paths) -> Path:
    return Path(layout.spool) if layout.spool else paths.spool


def _start_munged(layout: Layout, paths: Paths) -> None:
    sock = Path(layout.munge_socket)
    for stale in (sock, sock.with_name(sock.name + ".lock")):
        stale.unlink(missing_ok=True)
    procs.start(munged_command(layout, paths), paths.pid_file("munged"), paths.log_file("munged"))
    if not _wait(lambda: sock.exists() or _alive(paths, "munged") is None, 10):
        raise DevClusterError("munged did not create its socket within 10 s")
    if _alive(paths, "munged") is None:
        raise DevClusterError("munged exited at start:\n" + _log_tail(paths.log_file("munged")))


def _start_slurmctld(layout: Layout, paths: Paths) -> None:
    procs.start(slurmctld_command(paths), paths.pid_file("slurmctld"),
                paths.log_file("slurmctld.out"))

    def listening() -> bool:
        if _alive(paths, "slurmctld") is None:
            return True
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.settimeout(0.5)
            return s.connect_ex((layout.gateway, layout.controller_port)) == 0

    ok = _wait(listening, 20)
    if _alive(paths, "slurmctld") is None or not ok:
        raise DevClusterError(
            "slurmctld did not start; its log (" + str(paths.log / "slurmctld.log") + "):\n"
            + _log_tail(paths.log / "slurmctld.log") + _log_tail(paths.log_file("slurmctld.out")))


def _start_slurmd(node: Node, paths: Paths) -> None:
    procs.start(slurmd_command(node, paths), paths.pid_file(f"slurmd-{node.name}"),
                paths.log_file(f"slurmd-{node.name}.out"))


def up(home: Path, nodes: int | None = None, cpus_per_node: int | None = None,
       memory_per_node: int | None = None, timeout: float = 60.0,
       progress: Progress | None = None, gpus: str | None = None,
       gpu_nodes: int | None = None) -> ClusterInfo:
    """Start the dev cluster of state directory `home` (or repair it: whatever of it is not
    running is started again, nothing running is touched) and wait until every node is idle
    (or busy with jobs). Returns where it is. Needs root.

    `nodes` (default 7), `cpus_per_node` (2) and `memory_per_node` (MB, 4000) size a new
    cluster; `gpus` ("A100:2") gives the first `gpu_nodes` nodes (default all) emulated GPUs
    (GRES `gpu:A100:2`, feature `gpu`; the others have feature `cpu`). Asking for another size
    than the running one's is an error (run `down` first).

    Where the machine has cgroups Slurm can use (`cgroup_mode`), the nodes run with Slurm's
    own containment (proctrack/cgroup, task/cgroup, jobacct_gather/cgroup); a new cluster
    whose nodes do not come up with it is started again without it (said in `progress`)."""
    say = progress or (lambda _msg: None)
    _check_can_run()
    paths = Paths.of(home)
    check_paths(paths)
    for what, v in (("--nodes", nodes), ("--cpus-per-node", cpus_per_node),
                    ("--memory-per-node", memory_per_node)):
        if v is not None and v < 1:
            raise UsageError(f"{what} must be at least 1 (got {v})")
    with _locked(paths):
        layout = _load(paths)
        fresh = layout is None
        if layout is None:
            _teardown(paths, None)  # leftovers of a cluster whose cluster.json is gone
            paths.root.mkdir(parents=True, exist_ok=True)
            layout = _new_layout(paths, nodes or DEFAULT_NODES, cpus_per_node or DEFAULT_CPUS,
                                 memory_per_node or DEFAULT_MEMORY_MB, gpus, gpu_nodes)
        else:
            want_gpu = parse_gpus(gpus) if gpus is not None else None
            for what, want, have in (("nodes", nodes, len(layout.nodes)),
                                     ("CPUs per node", cpus_per_node, layout.cpus_per_node),
                                     ("MB per node", memory_per_node, layout.memory_per_node),
                                     ("GPUs", want_gpu, (layout.gpu_type, layout.gpus_per_node)),
                                     ("GPU nodes", gpu_nodes, layout.gpu_nodes)):
                if want is not None and want != have:
                    raise UsageError(f"the Slurm dev cluster already exists with {have} {what} "
                                     f"(asked for {want}): run `jobgroup dev slurm down` first")
        try:
            _bring_up(layout, paths, fresh, timeout, say)
        except DevClusterError as e:
            if not (fresh and layout.cgroup):
                if fresh:
                    _teardown(paths, layout, keep_logs=True)
                raise
            # Slurm's cgroup plugins would not start here: the same cluster without them.
            _teardown(paths, layout, keep_logs=True)
            say(f"Slurm's cgroup containment did not start here ({str(e).splitlines()[0]}); "
                "starting the cluster without it (proctrack/linuxproc)")
            layout = dataclasses.replace(layout, cgroup="")
            try:
                _bring_up(layout, paths, fresh, timeout, say)
            except BaseException:
                _teardown(paths, layout, keep_logs=True)
                raise
        except BaseException:
            if fresh:
                _teardown(paths, layout, keep_logs=True)
            raise
        return _info(layout, paths)


def _bring_up(layout: Layout, paths: Paths, fresh: bool, timeout: float, say: Progress) -> None:
    started: list[str] = []
    made = net.missing(layout)
    dead = [d for d in _daemons(layout) if _alive(paths, d) is None]
    if not made and not dead and _ready(node_states(paths.root.parent.parent), layout):
        say(f"Slurm dev cluster already up: {len(layout.nodes)} nodes idle or busy.")
        return
    t0 = time.monotonic()
    if not fresh and (made or dead):
        say("Slurm dev cluster is partly down; restarting: " + ", ".join(made + dead))
    _prepare_files(layout, paths)
    made = net.ensure(layout)
    if made:
        # A new namespace has no processes: its node's old slurmd (if any) lost its network.
        for n in layout.nodes:
            if n.netns in made and _alive(paths, f"slurmd-{n.name}") is not None:
                _stop([f"slurmd-{n.name}"], paths)
    if _alive(paths, "munged") is None:
        _start_munged(layout, paths)
        started.append("munged")
    if _alive(paths, "slurmctld") is None:
        _start_slurmctld(layout, paths)
        started.append("slurmctld")
    for n in layout.nodes:
        if _alive(paths, f"slurmd-{n.name}") is None:
            _start_slurmd(n, paths)
            started.append(f"slurmd-{n.name}")
    home = paths.root.parent.parent
    resumed: set[str] = set()

    def ready() -> bool:
        states = node_states(home)
        if states is None:
            return False
        for n in layout.nodes:  # registered but left DOWN/DRAIN by an earlier life: resume it
            st = states.get(n.name, "")
            if (st.startswith(("down", "drain")) and not st.endswith("*")
                    and n.name not in resumed):
                _client(paths, "scontrol", "update", f"nodename={n.name}", "state=resume")
                resumed.add(n.name)
        return _ready(states, layout)

    if not _wait(ready, timeout, interval=0.1):
        states = node_states(home)
        dead_nodes = [n.name for n in layout.nodes if _alive(paths, f"slurmd-{n.name}") is None]
        detail = "".join(f"\n  {n}: {(states or {}).get(n, '?')}" for n in
                         [x.name for x in layout.nodes])
        tail = _log_tail(paths.log / f"slurmd-{dead_nodes[0]}.log") if dead_nodes else ""
        raise DevClusterError(
            f"the Slurm dev cluster's nodes were not idle within {timeout:.0f} s:{detail}"
            + (f"\nslurmd exited on {', '.join(dead_nodes)}; log:\n{tail}" if dead_nodes else "")
            + f"\nlogs: {paths.log}")
    tmp = paths.cluster_json.with_suffix(".tmp")
    tmp.write_text(json.dumps(_layout_to_json(layout, paths), indent=2) + "\n")
    tmp.replace(paths.cluster_json)
    what = "started" if fresh else "restarted " + ", ".join(started or ["nothing"])
    say(f"Slurm dev cluster {what}: {len(layout.nodes)} nodes idle in "
        f"{time.monotonic() - t0:.1f} s.")


# ---------------------------------------------------------------- down


def _stop(daemons: list[str], paths: Paths) -> bool:
    pids: dict[int, int] = {}
    for d in daemons:
        pid = _alive(paths, d)
        st = procs.start_time(pid) if pid is not None else None
        if pid is not None and st is not None:
            pids[pid] = st
    if pids:
        procs.terminate(pids)
    for d in daemons:
        paths.pid_file(d).unlink(missing_ok=True)
    return bool(pids)


def down(home: Path, keep_logs: bool = False) -> None:
    """Stop every daemon of the dev cluster (by recorded pid) and whatever still runs on its
    nodes, remove its namespaces, bridge and state (and logs, unless `keep_logs`). Quiet and
    idempotent: nothing up, nothing done."""
    stop(home, keep_logs=keep_logs)


def stop(home: Path, keep_logs: bool = False) -> bool:
    """`down`, returning whether there was anything to stop or remove."""
    paths = Paths.of(home)
    if not paths.root.exists():
        return False
    if os.geteuid() != 0:
        raise UsageError("stopping the Slurm dev cluster needs root")
    with _locked(paths):
        return _teardown(paths, _load(paths), keep_logs=keep_logs)


def _teardown(paths: Paths, layout: Layout | None, keep_logs: bool = False) -> bool:
    did = False
    if layout is not None and _alive(paths, "slurmctld") is not None:
        # Jobs first, so their steps end cleanly (what survives is killed below anyway).
        p = _client(paths, "squeue", "-h", "-o", "%A")
        if p is not None and p.returncode == 0 and p.stdout.split():
            _client(paths, "scancel", *sorted(set(p.stdout.split())))
            did = True
    if layout is not None:
        nodes = [f"slurmd-{n.name}" for n in layout.nodes]
    else:
        nodes = [f.name[: -len(".started")] for f in paths.run.glob("slurmd-*.started")] \
            if paths.run.exists() else []
    did |= _stop(nodes, paths)
    did |= _stop(["slurmctld"], paths)
    did |= _stop(["munged"], paths)
    # What the nodes still run (job steps, their children): every process in our namespaces.
    if layout is not None:
        bridge, veths, namespaces = layout.bridge, [n.veth for n in layout.nodes], \
            [n.netns for n in layout.nodes]
    else:
        bridge, veths, namespaces = net.leftovers(home_tag(paths.root))
    left = procs.in_net_namespaces([net.netns_path(ns) for ns in namespaces])
    if left:
        procs.terminate(left, timeout=2.0)
        did = True
    if bridge or veths or any(net.netns_path(ns).exists() for ns in namespaces):
        net.remove(bridge, veths, namespaces)
        did = True
    if layout is not None:
        _remove_cgroups([n.name for n in layout.nodes])
    did |= paths.cluster_json.exists()
    _remove_state(paths, keep_logs)
    return did


def _remove_cgroups(node_names: list[str], root: Path = Path("/sys/fs/cgroup")) -> None:
    """Remove the empty cgroups Slurm's cgroup/v1 plugin leaves per node (`slurm_<node>` in
    each controller's hierarchy, and their empty `uid_*` children). Another dev cluster may use
    nodes of the same names: each one is locked as Slurm locks it (flock on the directory) and
    only empty directories are removed, so a running job's cgroups are never touched."""
    try:
        hierarchies = [d for d in root.iterdir() if d.is_dir()]
    except OSError:
        return
    for h in hierarchies:
        for name in node_names:
            top = h / f"slurm_{name}"
            try:
                fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                for child in top.iterdir():
                    if child.is_dir() and child.name.startswith("uid_"):
                        with contextlib.suppress(OSError):
                            child.rmdir()
                with contextlib.suppress(OSError):
                    top.rmdir()
            except OSError:
                pass
            finally:
                os.close(fd)


def _remove_state(paths: Paths, keep_logs: bool) -> None:
    shutil.rmtree(paths.munge_socket_outside.parent, ignore_errors=True)
    if not paths.root.exists():
        return
    for child in paths.root.iterdir():
        if keep_logs and child == paths.log:
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)
    if not keep_logs:
        with contextlib.suppress(OSError):
            paths.root.rmdir()


def status(home: Path) -> tuple[bool, list[str]]:
    """(running, human-readable lines): nodes and their states from sinfo, or what is wrong."""
    paths = Paths.of(home)
    layout = _load(paths)
    if layout is None:
        return False, ["Slurm dev cluster: not running."]
    if _alive(paths, "slurmctld") is None:
        dead = [d for d in _daemons(layout) if _alive(paths, d) is None]
        return False, [f"Slurm dev cluster: partly down (not running: {', '.join(dead)}); "
                       "`jobgroup dev slurm up` restarts it, `jobgroup dev slurm down` removes it."]
    ci = _info(layout, paths)
    states = node_states(home) or {}
    contain = (f"cgroup/{layout.cgroup} (proctrack/cgroup, task/cgroup)" if layout.cgroup
               else "proctrack/linuxproc (no cgroups)")
    gpus = (f"; GPUs: gpu:{layout.gpu_type}:{layout.gpus_per_node} on "
            f"{', '.join(layout.gpu_node_names())}" if layout.gpu_node_names() else "")
    lines = [f"Slurm dev cluster: controller {ci.controller_address}:{ci.controller_port}, "
             f"partition {ci.partition}; containment {contain}{gpus}",
             f"export SLURM_CONF={ci.slurm_conf}"]
    if not states:
        lines.append(f"slurmctld does not answer (logs: {paths.log})")
    lines.append(f"{'NODE':<10}{'ADDRESS':<16}STATE")
    for n in ci.nodes:
        lines.append(f"{n.name:<10}{n.address:<16}{states.get(n.name, '?')}")
    return bool(states), lines


__all__ = ["ClusterInfo", "NodeInfo", "info", "up", "down", "stop", "node_states",
           "status", "DevClusterError"]
