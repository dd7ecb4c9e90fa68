"""The emulated Slurm cluster's files, rendered purely from its layout: `slurm.conf`, the nodes'
hosts file and resolv.conf, and where every file of the cluster lives.

Nothing here touches the machine; `slurm.py` writes what these functions return.
"""

from __future__ import annotations

import ipaddress
import zlib
from dataclasses import dataclass
from pathlib import Path

from jobgroup.errors import UsageError

PARTITION = "debug"
_B36 = "0123456789abcdefghijklmnopqrstuvwxyz"
# Slurm's config parser splits on blanks and '#'; a Unix socket's path must fit sockaddr_un.
_BAD_PATH_CHARS = set(" \t\n#=\"'\\")
MAX_SOCKET_PATH = 100


@dataclass(frozen=True)
class Node:
    name: str  # node1, node2, ...
    address: str
    netns: str  # network namespace name under /run/netns
    veth: str  # host-side end of its veth pair (the peer is eth0 inside the namespace)


@dataclass(frozen=True)
class Layout:
    """Everything that identifies one emulated cluster; persisted in cluster.json."""

    tag: str  # 4 characters from the state directory's path: names never collide across homes
    subnet: str
    gateway: str  # the bridge's address: slurmctld listens here
    bridge: str
    controller_host: str  # this machine's short host name (slurmctld insists on it)
    controller_port: int
    nodes: list[Node]
    munge_socket: str  # its directory has mode 0755 (munged insists)
    cpus_per_node: int = 2
    memory_per_node: int = 4000  # MB
    partition: str = PARTITION
    # Slurm's own containment: "v1" / "v2" (proctrack/cgroup + task/cgroup through that cgroup
    # plugin: every process of a step is tracked and killed with it, memory enforced), or ""
    # where this machine allows none (proctrack/linuxproc: processes that leave the step's
    # process tree escape Slurm; jobgroup's shims still catch them).
    cgroup: str = ""
    # Emulated GPUs: the first `gpu_nodes` nodes have `gpus_per_node` GPUs of `gpu_type` (GRES
    # backed by character devices like /dev/null under the cluster's dev/ folder).
    gpu_type: str = ""
    gpus_per_node: int = 0
    gpu_nodes: int = 0
    # Job ids start here: Slurm names its cgroups slurm_<node>/uid_<uid>/job_<id>, so two dev
    # clusters on this machine (same node names) must never hand out the same job ids.
    first_job_id: int = 1
    # SlurmdSpoolDir's parent (empty: Paths.spool); see `spool_dir`.
    spool: str = ""

    def gpu_node_names(self) -> list[str]:
        return [n.name for n in self.nodes[: self.gpu_nodes]] if self.gpus_per_node else []


@dataclass(frozen=True)
class Paths:
    """Where the cluster's files live: `$JOBGROUP_HOME/devcluster/slurm/`."""

    root: Path

    @staticmethod
    def of(home: Path) -> Paths:
        return Paths(Path(home).absolute() / "devcluster" / "slurm")

    @property
    def conf(self) -> Path:
        return self.root / "slurm.conf"

    @property
    def cluster_json(self) -> Path:
        return self.root / "cluster.json"

    @property
    def hosts(self) -> Path:
        return self.root / "etc" / "hosts"

    @property
    def resolv(self) -> Path:
        return self.root / "etc" / "resolv.conf"

    @property
    def munge_dir(self) -> Path:  # key and seed: mode 0700
        return self.root / "munge"

    @property
    def munge_key(self) -> Path:
        return self.munge_dir / "munge.key"

    @property
    def munge_socket_inside(self) -> Path:
        """Where munged's socket goes when every directory above it is world-traversable and the
        path fits a Unix socket address (munged checks both); else `munge_socket_outside`."""
        return self.root / "munge-socket" / "munge.socket"

    @property
    def munge_socket_outside(self) -> Path:
        return Path("/run") / f"jobgroup-slurm-{home_tag(self.root)}" / "munge.socket"

    @property
    def state(self) -> Path:  # StateSaveLocation
        return self.root / "state"

    @property
    def spool(self) -> Path:  # SlurmdSpoolDir=spool/%n (see `spool_dir`)
        return self.root / "spool"

    @property
    def spool_outside(self) -> Path:
        return self.munge_socket_outside.parent / "spool"

    @property
    def run(self) -> Path:  # pid files (ours and the daemons' own)
        return self.root / "run"

    @property
    def log(self) -> Path:
        return self.root / "log"

    @property
    def cgroup_conf(self) -> Path:  # beside slurm.conf: where Slurm looks for it
        return self.root / "cgroup.conf"

    @property
    def gres_conf(self) -> Path:
        return self.root / "gres.conf"

    @property
    def dev(self) -> Path:  # emulated GPU devices: dev/<node>/nvidia<i>
        return self.root / "dev"

    def pid_file(self, daemon: str) -> Path:
        """Our record of a daemon we started: 'pid starttime' (munged, slurmctld, slurmd-nodeN)."""
        return self.run / f"{daemon}.started"

    def log_file(self, daemon: str) -> Path:
        return self.log / f"{daemon}.log"


def check_paths(paths: Paths) -> None:
    """Refuse state directories that Slurm's config cannot express."""
    bad = sorted(_BAD_PATH_CHARS & set(str(paths.root)))
    if bad:
        raise UsageError(
            f"the Slurm dev cluster cannot live under {str(paths.root)!r}: slurm.conf cannot "
            f"hold paths with {' '.join(repr(c) for c in bad)}; set JOBGROUP_HOME to a simpler "
            "path")


def home_tag(root: Path) -> str:
    n = zlib.crc32(str(Path(root).absolute()).encode()) % 36**4
    out = ""
    for _ in range(4):
        n, r = divmod(n, 36)
        out = _B36[r] + out
    return out


# slurmstepd listens on SPOOL/<node>/<node>_<job id>.<step id> (the batch step's id has 10
# digits); a Unix socket's path must fit in 108 bytes.
MAX_STEP_SOCKET = 107


def spool_dir(paths: Paths, node_names: list[str], first_job: int) -> Path:
    """Where the nodes' spool folders go: inside the state directory when every step's socket
    path fits a Unix socket address there, else under /run (`Paths.spool_outside`)."""
    longest = max((len(n) for n in node_names), default=5)
    rest = 1 + longest + 1 + longest + 1 + len(str(first_job + 9_999_999)) + 1 + 10
    if len(str(paths.spool)) + rest <= MAX_STEP_SOCKET:
        return paths.spool
    return paths.spool_outside


def first_job_id(tag: str) -> int:
    """Where a cluster's job ids start: 600 blocks of 100,000 below Slurm's MaxJobId
    (67,043,328), chosen by the cluster's tag, so two dev clusters running at once (tests of two
    sessions) almost never share job ids, hence never a cgroup (see `Layout.first_job_id`)."""
    return 1 + (int(tag, 36) % 600) * 100_000


def node_names(n: int) -> list[str]:
    return [f"node{i}" for i in range(1, n + 1)]


def plan_layout(tag: str, subnet: ipaddress.IPv4Network, nodes: int, controller_host: str,
                controller_port: int, cpus_per_node: int, memory_per_node: int,
                munge_socket: str, cgroup: str = "", gpus: str | None = None,
                gpu_nodes: int | None = None) -> Layout:
    """Names and addresses of a new cluster (the subnet and port are chosen by the caller).

    Bridge and veths start with 'jg-' so that the local backend's leftover finder
    (`network.existing`) never mistakes them for a group's; namespaces start with 'jgslurm-'."""
    hosts = list(subnet.hosts())
    if len(hosts) < nodes + 1:
        raise UsageError(f"subnet {subnet} is too small for {nodes} nodes")
    gpu_type, per_node = parse_gpus(gpus)
    if gpu_nodes is not None and not 0 <= gpu_nodes <= nodes:
        raise UsageError(f"--gpu-nodes {gpu_nodes}: the cluster has {nodes} nodes")
    return Layout(
        tag=tag, subnet=str(subnet), gateway=str(hosts[0]), bridge=f"jg-s{tag}",
        controller_host=controller_host, controller_port=controller_port,
        nodes=[Node(name=name, address=str(hosts[i + 1]), netns=f"jgslurm-{tag}-{name}",
                    veth=f"jg-s{tag}-{i + 1}")
               for i, name in enumerate(node_names(nodes))],
        munge_socket=munge_socket, cpus_per_node=cpus_per_node, memory_per_node=memory_per_node,
        cgroup=cgroup, gpu_type=gpu_type, gpus_per_node=per_node,
        gpu_nodes=(nodes if gpu_nodes is None else gpu_nodes) if per_node else 0,
        first_job_id=first_job_id(tag),
    )


def parse_gpus(text: str | None) -> tuple[str, int]:
    """`--gpus TYPE:COUNT` ("A100:2") -> ("A100", 2); None -> ("", 0). The type keeps its
    spelling: it is the GRES type Slurm's users must write."""
    if not text:
        return "", 0
    name, _, count = text.partition(":")
    if not name.replace("-", "").replace("_", "").isalnum() or not (count or "1").isdigit() \
            or int(count or "1") < 1:
        raise UsageError(f"--gpus {text!r}: expected TYPE:COUNT, e.g. A100:2")
    return name, int(count or "1")


def render_slurm_conf(layout: Layout, paths: Paths) -> str:
    """slurm.conf for the cluster: one controller on the bridge's gateway, node1..N on their
    namespace addresses, one default partition, Slurm's cgroup containment where this machine
    allows it (`layout.cgroup`), the job completion log, fast scheduling."""
    names = ",".join(n.name for n in layout.nodes)
    if layout.cgroup:
        contain = ["ProctrackType=proctrack/cgroup", "TaskPlugin=task/cgroup",
                   "JobAcctGatherType=jobacct_gather/cgroup"]
    else:
        contain = ["ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none",
                   "JobAcctGatherType=jobacct_gather/linux"]
    lines = [
        "# written by `jobgroup dev slurm up`; rewritten on every start",
        "ClusterName=jobgroup-dev",
        f"SlurmctldHost={layout.controller_host}({layout.gateway})",
        f"SlurmctldPort={layout.controller_port}",
        "SlurmdPort=6818",  # each slurmd has its own network namespace
        "SlurmUser=root",
        "SlurmdUser=root",
        "AuthType=auth/munge",
        "CredType=cred/munge",
        f"AuthInfo=socket={layout.munge_socket}",
        f"StateSaveLocation={paths.state}",
        f"SlurmdSpoolDir={layout.spool or paths.spool}/%n",
        f"SlurmctldPidFile={paths.run}/slurmctld.pid",
        f"SlurmdPidFile={paths.run}/slurmd-%n.pid",
        f"SlurmctldLogFile={paths.log}/slurmctld.log",
        f"SlurmdLogFile={paths.log}/slurmd-%n.log",
        # Slurm's containment (see `Layout.cgroup`); the gatherer feeds sstat (`jobgroup top`).
        *contain,
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core_Memory",
        # A job that names no memory gets its CPUs' share of the node (enforced with cgroups).
        f"DefMemPerCPU={max(1, layout.memory_per_node // max(1, layout.cpus_per_node))}",
        f"FirstJobId={layout.first_job_id}",
        "SchedulerType=sched/backfill",
        "SchedulerParameters=bf_interval=1,batch_sched_delay=0",
        # Nodes advertise what the config says, not this machine's cores and memory.
        "SlurmdParameters=config_overrides",
        "MpiDefault=none",
        "ReturnToService=2",
        "AccountingStorageType=accounting_storage/none",
        # No accounting database: finished jobs stay in squeue/scontrol for MinJobAge seconds,
        # and every ended job (each component of a heterogeneous one) gets a line with its
        # JobState and ExitCode in the completion log (`jobcomp/filetxt`), as sites' reports
        # read it.
        "JobCompType=jobcomp/filetxt",
        f"JobCompLoc={paths.log}/jobcomp.txt",
        "SlurmctldTimeout=30",
        "SlurmdTimeout=30",
        "InactiveLimit=0",
        "KillWait=5",
        "MinJobAge=3600",
        "Waittime=0",
        "SlurmctldDebug=info",
        "SlurmdDebug=info",
    ]
    gpu_nodes = set(layout.gpu_node_names())
    if gpu_nodes:
        lines.append("GresTypes=gpu")
    for n in layout.nodes:
        gpu = n.name in gpu_nodes
        gres = f"Gres=gpu:{layout.gpu_type}:{layout.gpus_per_node} " if gpu else ""
        lines.append(f"NodeName={n.name} NodeAddr={n.address} NodeHostname={n.name} "
                     f"CPUs={layout.cpus_per_node} RealMemory={layout.memory_per_node} "
                     f"{gres}Feature={'gpu' if gpu else 'cpu'} State=UNKNOWN")
    lines.append(f"PartitionName={layout.partition} Nodes={names} Default=YES "
                 "MaxTime=INFINITE State=UP")
    return "\n".join(lines) + "\n"


def render_cgroup_conf(layout: Layout) -> str:
    """cgroup.conf (read only when `layout.cgroup`): the cgroup plugin, memory enforced, cores
    not pinned (every emulated node's CPUs are this machine's same cores: pinning would pile
    all nodes onto the first ones)."""
    lines = ["# written by `jobgroup dev slurm up`",
             f"CgroupPlugin=cgroup/{layout.cgroup or 'v1'}",
             "ConstrainCores=no",
             "ConstrainRAMSpace=yes",
             "ConstrainDevices=no"]
    if layout.cgroup == "v2":
        lines.append("IgnoreSystemd=yes")  # no systemd to ask for scopes: slurmd makes them
    return "\n".join(lines) + "\n"


def render_gres_conf(layout: Layout, paths: Paths) -> str:
    """gres.conf: each GPU node's emulated devices (Slurm drops a GPU without a device file)."""
    lines = ["# written by `jobgroup dev slurm up`: emulated GPUs"]
    last = layout.gpus_per_node - 1
    for name in layout.gpu_node_names():
        lines.append(f"NodeName={name} Name=gpu Type={layout.gpu_type} "
                     f"File={paths.dev}/{name}/nvidia[0-{last}]" if last else
                     f"NodeName={name} Name=gpu Type={layout.gpu_type} "
                     f"File={paths.dev}/{name}/nvidia0")
    return "\n".join(lines) + "\n"


def render_hosts(layout: Layout) -> str:
    """The nodes' /etc/hosts: every node name and the controller's host name."""
    lines = ["# written by `jobgroup dev slurm up`: the emulated nodes' /etc/hosts",
             "127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback",
             f"{layout.gateway}\t{layout.controller_host}"]
    lines += [f"{n.address}\t{n.name}" for n in layout.nodes]
    return "\n".join(lines) + "\n"


# No DNS server is reachable from a node's namespace: without a nameserver line glibc tries
# 127.0.0.1, which refuses at once, so unknown names fail fast instead of after time-outs.
RESOLV_CONF = ("# written by `jobgroup dev slurm up`: nodes resolve through /etc/hosts only\n"
               "options timeout:1 attempts:1\n")


def slurmd_command(node: Node, paths: Paths) -> list[str]:
    """How one slurmd starts: in its node's network namespace (nsenter: `ip netns exec` would
    remount /sys and hide the cgroup tree), with its own host name, hosts file and resolv.conf
    in a private UTS + mount namespace; exec'd, so the pid we get is slurmd's."""
    script = (f'hostname "$1" && mount --bind "$2" /etc/hosts && '
              f'{{ mount --bind "$3" /etc/resolv.conf 2>/dev/null || true; }} && '
              f'exec slurmd -D -f "$4" -N "$1"')
    return ["nsenter", f"--net=/run/netns/{node.netns}", "unshare", "--uts", "--mount",
            "--propagation", "private", "sh", "-c", script, "slurmd-node",
            node.name, str(paths.hosts), str(paths.resolv), str(paths.conf)]


def slurmctld_command(paths: Paths) -> list[str]:
    return ["slurmctld", "-D", "-i", "-f", str(paths.conf)]


def munged_command(layout: Layout, paths: Paths) -> list[str]:
    return ["munged", "--foreground", f"--socket={layout.munge_socket}",
            f"--key-file={paths.munge_key}", f"--pid-file={paths.run}/munged.pid",
            f"--log-file={paths.log_file('munged')}", f"--seed-file={paths.munge_dir}/munged.seed"]
