"""Per-group networks on one machine: a bridge, and per node a network namespace joined to it
by a veth pair, with its own address and `lo` up (measured: ~15 ms a namespace here).

Names are derived from a short id unique to the state directory and the job (`net_id`), so a
leftover can always be traced back to its group (`jobgroup doctor`) and two state directories
never collide:
    bridge      jg<netid>          host-side veth  jg<netid>v<node>   namespace  jg-<netid>-<node>
Linux limits interface names to 15 bytes: netid is at most 8 characters.

The subnet of each group is the first free block of the pool (default 10.213.0.0/16, override
with $JOBGROUP_SUBNET_POOL) that overlaps no route or address present on the machine — other
groups' bridges included, since each bridge has its address. Choosing and claiming (creating the
bridge with its address) happen under one machine-wide lock (/run/jobgroup/subnets.lock), so
two controllers — of one state directory or of two — never pick the same block.

Egress (issue 15): a group launched without --no-egress also gets an nftables table of its own
(`egress.py`: NAT on its bridge, forwarding where needed), made with its network under the same
group lock and removed by `destroy` with it.

Crash safety: `ensure` is idempotent. A create interrupted at any point (controller killed)
leaves parts whose names are known from the job alone; the next call removes them and makes the
network anew (no node runs in it yet), and `teardown` removes whatever exists, twice quietly.

All changes go through `ip -batch` (one process for the host side) and one `ip -n NS -batch` per
namespace, run in parallel: forking `ip` once per command would cost ~3 ms a command.
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import zlib
from dataclasses import dataclass
from pathlib import Path

from jobgroup import faults
from jobgroup.errors import JobGroupError

DEFAULT_POOL = "10.213.0.0/16"
_B36 = "0123456789abcdefghijklmnopqrstuvwxyz"


class NetworkError(JobGroupError):
    """The group's network could not be created (exit 1: not the user's input)."""

    exit_code = 1


def _b36(n: int, width: int = 0) -> str:
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = _B36[r] + out
        if n == 0:
            break
    return out.rjust(width, "0")


def home_tag(home: Path) -> str:
    """4 characters identifying a state directory."""
    return _b36(zlib.crc32(os.fsencode(home.absolute())) % 36**4, 4)


def net_id(home: Path, job_id: int) -> str:
    return home_tag(home) + _b36(job_id % 36**4, 4)  # fixed width: no id prefixes another


def bridge_name(netid: str) -> str:
    return f"jg{netid}"


def veth_name(netid: str, node: int) -> str:
    return f"jg{netid}v{_b36(node)}"


def netns_name(netid: str, node: int) -> str:
    return f"jg-{netid}-{node}"


@dataclass(frozen=True)
class GroupNet:
    """What exists (or will) for one group: persisted as JSON next to the job's files."""

    netid: str
    subnet: str
    gateway: str
    addresses: list[str]  # node i (in (task, rank) order) -> address
    egress: bool = False  # NAT to the outside (egress.py): its table exists with the network

    @property
    def bridge(self) -> str:
        return bridge_name(self.netid)

    def netns(self, node: int) -> str:
        return netns_name(self.netid, node)

    def to_json(self) -> str:
        return json.dumps({"netid": self.netid, "subnet": self.subnet, "gateway": self.gateway,
                           "addresses": self.addresses, "egress": self.egress})

    @staticmethod
    def from_json(text: str) -> GroupNet:
        d = json.loads(text)
        return GroupNet(netid=d["netid"], subnet=d["subnet"], gateway=d["gateway"],
                        addresses=list(d["addresses"]), egress=bool(d.get("egress", False)))


def pick_subnet(
    nodes: int, taken: list[ipaddress.IPv4Network], pool: str = DEFAULT_POOL,
    prefer: str | None = None,
) -> ipaddress.IPv4Network:
    """The first block of `pool` big enough for `nodes` + gateway that overlaps nothing taken
    (`prefer` itself when it is such a block: a group's network recreated keeps its subnet)."""
    net = ipaddress.ip_network(pool, strict=False)
    prefix = 30
    while 2 ** (32 - prefix) - 3 < nodes:  # network, broadcast and gateway are not for nodes
        prefix -= 1
    prefix = min(prefix, 24) if nodes <= 253 else prefix
    if prefix < net.prefixlen:
        raise NetworkError(f"the subnet pool {pool} is too small for {nodes} nodes")
    if prefer:
        want = ipaddress.ip_network(prefer, strict=False)
        if want.prefixlen <= prefix and want.num_addresses - 3 >= nodes and not any(
                want.overlaps(t) for t in taken):
            return want
    for block in net.subnets(new_prefix=prefix):
        if not any(block.overlaps(t) for t in taken):
            return block
    raise NetworkError(
        f"no free /{prefix} left in the subnet pool {pool}; set JOBGROUP_SUBNET_POOL to another "
        "private range"
    )


def taken_networks() -> list[ipaddress.IPv4Network]:
    """Every IPv4 route destination and interface network on this machine."""
    out: list[ipaddress.IPv4Network] = []
    routes = _ip_json(["-4", "route", "show", "table", "all"])
    for r in routes:
        dst = r.get("dst")
        if dst and dst != "default" and ":" not in dst:
            try:
                out.append(ipaddress.ip_network(dst, strict=False))
            except ValueError:
                pass
    for link in _ip_json(["-4", "addr"]):
        for a in link.get("addr_info", []):
            try:
                out.append(ipaddress.ip_network(f"{a['local']}/{a['prefixlen']}", strict=False))
            except (KeyError, ValueError):
                pass
    return out


def _ip_json(args: list[str]) -> list[dict]:
    p = subprocess.run(["ip", "-j", *args], capture_output=True, text=True, timeout=10)
    if p.returncode != 0 or not p.stdout.strip():
        return []
    try:
        return json.loads(p.stdout)
    except json.JSONDecodeError:
        return []


def _batch(lines: list[str], netns: str | None = None,
           keep: tuple[int, ...] = ()) -> subprocess.Popen[str]:
    """Start `ip -batch` on `lines`. `keep`: lock fds the `ip` process inherits, so a lock stays
    held until it has finished, even when the controller is killed meanwhile."""
    cmd = ["ip"] + (["-n", netns] if netns else []) + ["-batch", "-"]
    p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True, pass_fds=keep)
    assert p.stdin is not None
    p.stdin.write("\n".join(lines) + "\n")
    p.stdin.close()
    return p


def _finish(p: subprocess.Popen[str], what: str) -> None:
    assert p.stderr is not None
    err = p.stderr.read()
    p.stderr.close()
    if p.wait(timeout=30) != 0:
        raise NetworkError(f"could not {what}: {err.strip()}")


# ---- locks --------------------------------------------------------------------------------------
#
# Machine-wide: RUN_DIR/subnets.lock is held while a subnet is chosen AND claimed (the bridge made
# with its address), by every controller of every state directory, so no two groups ever get the
# same subnet. The claim itself is the kernel's: once the bridge has its address, every other
# allocator sees it in `taken_networks()`.
# Per group: RUN_DIR/net-<netid>.lock is held while the group's network is made or removed, and
# removed once that is done: a lock file that exists means a create or teardown was begun and
# may not have finished. Both locks are inherited by the `ip` processes that do the work: if the
# controller is killed, the lock stays held until its last `ip` has exited, so a restarted
# controller never races with the leftovers of its predecessor. /run is emptied at boot, as
# the networks are.

RUN_DIR = Path("/run/jobgroup")


def check_private_dir(path: Path) -> None:
    """Refuse a lock directory another user could write to, or that is a symlink: a lock
    there would exclude nothing (anyone could replace the file)."""
    import stat

    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise NetworkError(f"{path} is not a directory; remove it (jobgroup keeps its "
                           "machine-wide network lock there)")
    if st.st_uid != os.geteuid() or st.st_mode & 0o077:
        raise NetworkError(
            f"{path} must be a directory private to uid {os.geteuid()} (mode 0700); it is "
            f"owned by uid {st.st_uid} with mode {stat.S_IMODE(st.st_mode):04o}: remove it or "
            f"fix it (chown {os.geteuid()} {path}; chmod 700 {path})")


def _lock(path: Path, what: str) -> int:
    """An fd holding an exclusive flock on `path` (created 0600), waiting for it."""
    import fcntl

    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    except OSError as e:
        raise NetworkError(f"cannot open the {what} lock {path}: {e.strerror}") from e
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _run_dir() -> Path:
    """RUN_DIR, created 0700 if needed, and refused unless private to this user."""
    try:
        os.makedirs(RUN_DIR.parent, exist_ok=True)
        os.mkdir(RUN_DIR, 0o700)
    except FileExistsError:
        pass
    except OSError as e:
        raise NetworkError(f"cannot create {RUN_DIR} for jobgroup's network locks: "
                           f"{e.strerror}") from e
    check_private_dir(RUN_DIR)
    return RUN_DIR


def _machine_lock() -> int:
    return _lock(_run_dir() / "subnets.lock", "machine-wide subnet")


def group_lock_path(home: Path, job_id: int) -> Path:
    return RUN_DIR / f"net-{net_id(home, job_id)}.lock"


def _group_lock(home: Path, job_id: int) -> tuple[Path, int]:
    _run_dir()
    path = group_lock_path(home, job_id)
    return path, _lock(path, "group network")


def record_path(home: Path, job_id: int) -> Path:
    """Where a group's network is recorded (written once complete, under the group's lock)."""
    return home / "jobs" / str(job_id) / "network.json"


def read_record(home: Path, job_id: int) -> GroupNet | None:
    """The recorded network of a group; None when absent or unreadable (it is written
    atomically, so a torn file means a damaged disk: the network is made anew)."""
    try:
        return GroupNet.from_json(record_path(home, job_id).read_text())
    except (OSError, ValueError, KeyError, TypeError):
        return None


def complete(net: GroupNet) -> bool:
    """Whether every part of `net` exists (bridge, and each node's namespace and veth)."""
    nodes = range(len(net.addresses))
    return (os.path.exists(f"/sys/class/net/{net.bridge}")
            and all(os.path.exists(f"/run/netns/{net.netns(i)}") for i in nodes)
            and all(os.path.exists(f"/sys/class/net/{veth_name(net.netid, i)}") for i in nodes))


def _any_part(netid: str, nodes: int) -> bool:
    return (os.path.exists(f"/sys/class/net/{bridge_name(netid)}")
            or any(os.path.exists(f"/run/netns/{netns_name(netid, i)}") for i in range(nodes))
            or any(os.path.exists(f"/sys/class/net/{veth_name(netid, i)}")
                   for i in range(nodes)))


def _usable(net: GroupNet | None, netid: str, nodes: int) -> bool:
    return (net is not None and net.netid == netid and len(net.addresses) == nodes
            and complete(net))


def ensure(home: Path, job_id: int, nodes: int, pool: str | None = None, *,
           egress: bool = False, dns: tuple[str, ...] = ()) -> GroupNet:
    """The group's network, complete and recorded (`record_path`). Idempotent, and safe after a
    crash at any point of an earlier call: the recorded network is returned when all of it
    exists; otherwise whatever exists of it is removed and it is made anew (on the recorded
    subnet when that is still free, so addresses stay), then recorded. Nodes start only once
    this has returned, so nothing runs in a network that is removed here.

    `egress`: the nodes reach the outside through NAT on the bridge (`egress.enable`; `dns`:
    the DNS servers they use, whose routes need forwarding too). A recorded network whose
    table is missing gets it again without being remade (its nodes may be running). Where
    nft is missing or refuses, the network is made without egress (said in the controller's
    log; the record says `egress: false`)."""
    netid = net_id(home, job_id)
    saved = read_record(home, job_id)
    if _usable(saved, netid, nodes) and not (egress and saved.egress  # type: ignore[union-attr]
                                             and not _egress_mod().has_table(netid)):
        return saved  # type: ignore[return-value]
    lock_path, group_fd = _group_lock(home, job_id)
    try:
        saved = read_record(home, job_id)
        if _usable(saved, netid, nodes):
            assert saved is not None
            if saved.egress:
                _enable_egress(saved, dns)  # idempotent: the table is made anew
            return saved
        net = _create_locked(netid, job_id, nodes, group_fd, pool,
                             saved.subnet if saved else None)
        if egress and _enable_egress(net, dns):
            net = GroupNet(netid=net.netid, subnet=net.subnet, gateway=net.gateway,
                           addresses=net.addresses, egress=True)
        record = record_path(home, job_id)
        record.parent.mkdir(parents=True, exist_ok=True)
        tmp = record.with_suffix(".tmp")
        tmp.write_text(net.to_json())
        os.replace(tmp, record)
        lock_path.unlink(missing_ok=True)  # done: the record now says what exists
        return net
    finally:
        os.close(group_fd)


def _egress_mod():  # type: ignore[no-untyped-def]
    from jobgroup.backends.local import egress

    return egress


def _enable_egress(net: GroupNet, dns: tuple[str, ...]) -> bool:
    """NAT for the group; False (and a line in the controller's log) when it cannot be had."""
    egress = _egress_mod()
    why = egress.problem()
    if why is None:
        try:
            egress.enable(net.netid, net.subnet, net.bridge, list(dns))
            return True
        except (OSError, subprocess.SubprocessError) as e:
            why = str(e)
    import logging

    logging.getLogger(__name__).warning("group network %s has no egress: %s", net.netid, why)
    return False


def create(home: Path, job_id: int, nodes: int, pool: str | None = None) -> GroupNet:
    """Make a group's network anew, unrecorded (for tools and tests that play a crashed run:
    the backend calls `ensure`). Writes nothing in `home`."""
    lock_path, group_fd = _group_lock(home, job_id)
    try:
        net = _create_locked(net_id(home, job_id), job_id, nodes, group_fd, pool, None)
        lock_path.unlink(missing_ok=True)
        return net
    finally:
        os.close(group_fd)


def _create_locked(netid: str, job_id: int, nodes: int, group_fd: int, pool: str | None,
                   prefer: str | None) -> GroupNet:
    return _create(netid, job_id, nodes, group_fd,
                   pool or os.environ.get("JOBGROUP_SUBNET_POOL", DEFAULT_POOL), prefer)


def _create(netid: str, job_id: int, nodes: int, group_fd: int, pool: str,
            prefer: str | None) -> GroupNet:
    bridge = bridge_name(netid)
    machine_fd = _machine_lock()
    try:
        # What an interrupted create left goes under the machine-wide lock too: its bridge is
        # the claim on the recorded subnet, and no other allocator may take that subnet
        # between its removal and its claim again here (addresses must stay).
        if _any_part(netid, nodes):
            destroy(netid, nodes)
        subnet = pick_subnet(nodes, taken_networks(), pool, prefer)
        hosts = list(subnet.hosts())
        gateway, addresses = str(hosts[0]), [str(h) for h in hosts[1 : nodes + 1]]
        net = GroupNet(netid=netid, subnet=str(subnet), gateway=gateway, addresses=addresses)
        claim = [f"link add {bridge} type bridge",
                 f"addr add {gateway}/{subnet.prefixlen} dev {bridge}",
                 f"link set {bridge} up"]
        try:
            _finish(_batch(claim, keep=(group_fd, machine_fd)),
                    f"create the network of job {job_id}")
        except Exception:
            destroy(netid, nodes)
            raise
    finally:
        os.close(machine_fd)
    faults.hit("network.claimed")
    host = []
    for i in range(nodes):
        v, ns = veth_name(netid, i), net.netns(i)
        host += [
            f"netns add {ns}",
            f"link add {v} type veth peer name eth0 netns {ns}",
            f"link set {v} master {bridge}",
            f"link set {v} up",
        ]
    try:
        if host:
            _finish(_batch(host, keep=(group_fd,)), f"create the network of job {job_id}")
        faults.hit("network.host")
        inside = [
            _batch([f"addr add {addresses[i]}/{subnet.prefixlen} dev eth0", "link set eth0 up",
                    "link set lo up", f"route add default via {gateway}"], net.netns(i),
                   keep=(group_fd,))
            for i in range(nodes)
        ]
        for p in inside:
            _finish(p, f"configure a node of job {job_id}")
        faults.hit("network.created")
    except Exception:
        destroy(net.netid, nodes)
        raise
    return net


def teardown(home: Path, job_id: int) -> None:
    """Remove the group's network — whatever of it exists, recorded or not — then its record
    and lock file. Quiet when nothing is there (so doing it twice is quiet). Waits for an
    interrupted create's `ip` processes (they hold the group's lock) before removing."""
    lock_path = group_lock_path(home, job_id)
    record = record_path(home, job_id)
    if not os.path.exists(lock_path) and not os.path.exists(record):
        return  # no network was begun for this group, or it was removed already
    lock_path, fd = _group_lock(home, job_id)
    try:
        saved = read_record(home, job_id)
        destroy(net_id(home, job_id), len(saved.addresses) if saved else None,
                egress_table=saved.egress if saved else None)
        record.unlink(missing_ok=True)
        record.with_suffix(".tmp").unlink(missing_ok=True)
    finally:
        lock_path.unlink(missing_ok=True)
        os.close(fd)


def destroy(netid: str, nodes: int | None = None, egress_table: bool | None = None) -> None:
    """Remove a group's veths, bridge, namespaces and NAT table; quiet about what is already
    gone. `egress_table=False`: the group is known to have none (saves an nft exec).
    With `nodes` known, the names are computed (no listing of the machine's interfaces, which
    costs ~10 ms more per call with hundreds of groups running)."""
    if nodes is not None:
        names = {
            "netns": [netns_name(netid, i) for i in range(nodes)
                      if os.path.exists(f"/run/netns/{netns_name(netid, i)}")],
            "bridges": [bridge_name(netid)] if os.path.exists(
                f"/sys/class/net/{bridge_name(netid)}") else [],
            "veths": [veth_name(netid, i) for i in range(nodes)
                      if os.path.exists(f"/sys/class/net/{veth_name(netid, i)}")],
        }
    else:
        names = existing(netid)
    # Deleting a namespace destroys the veth end inside it, and with it the pair: deleting the
    # namespaces first and the bridge last is ~3x faster than deleting each host-side veth.
    lines = [f"netns del {ns}" for ns in names["netns"]]
    lines += [f"link del {b}" for b in names["bridges"]]
    if not names["netns"]:  # veths whose namespace is already gone
        lines += [f"link del {v}" for v in names["veths"]]
    if lines:
        # -force: go on after an error (something vanished meanwhile)
        subprocess.run(["ip", "-force", "-batch", "-"], input="\n".join(lines) + "\n",
                       capture_output=True, text=True, timeout=30)
    if egress_table is not False:
        _egress_mod().disable(netid)  # the group's NAT table; forwarding when it was the last
    # The kernel tears namespaces down asynchronously: wait (briefly) until their veths are
    # gone, so "the group has ended" means its interfaces have too; delete stragglers.
    import time

    deadline = time.monotonic() + 2.0
    while names["netns"]:
        left = [v for v in names["veths"] if os.path.exists(f"/sys/class/net/{v}")] \
            if nodes is not None else existing(netid)["veths"]
        if not left:
            break
        if time.monotonic() > deadline:
            subprocess.run(["ip", "-force", "-batch", "-"],
                           input="".join(f"link del {v}\n" for v in left),
                           capture_output=True, text=True, timeout=30)
            break
        time.sleep(0.01)


def existing(netid_prefix: str = "") -> dict[str, list[str]]:
    """Bridges, veths and namespaces on this machine that jobgroup made, optionally only those
    whose net id starts with `netid_prefix` (a full net id: one group; a home tag: one state
    directory)."""
    bridges, veths = [], []
    for link in _ip_json(["-d", "link"]):
        name = link.get("ifname", "")
        if not name.startswith(f"jg{netid_prefix}") or name.startswith("jg-"):
            continue
        kind = (link.get("linkinfo") or {}).get("info_kind")
        (bridges if kind == "bridge" else veths).append(name)
    try:
        ns = sorted(n for n in os.listdir("/run/netns") if n.startswith(f"jg-{netid_prefix}"))
    except FileNotFoundError:
        ns = []
    return {"bridges": sorted(bridges), "veths": sorted(veths), "netns": ns}
