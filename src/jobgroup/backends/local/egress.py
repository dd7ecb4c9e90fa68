"""A group's way out: DNS and NAT for its nodes (issue 15), and nothing else of the host's.

DNS. A node's /etc/resolv.conf names the DNS servers the machine itself uses, after the group's
own names (those come from the node's /etc/hosts, which the machine's nsswitch reads first).
Servers are taken from the host's /etc/resolv.conf; a loopback server (127.0.0.53 of
systemd-resolved, 127.0.0.1 of dnsmasq) cannot be reached from a node's network namespace, so
— as Docker and Podman do — the upstream servers it forwards to are used instead, read from
/run/systemd/resolve/resolv.conf or /run/NetworkManager/no-stub-resolv.conf. IPv6 servers are
left out (nodes have IPv4 addresses only). `search`, `domain` and `options` lines are kept.

NAT. Each group with egress gets one nftables table of its own, `ip jg<netid>` (the netid of
its bridge, so `jobgroup doctor` traces a leftover to its state directory and group), made in
one atomic `nft -f` transaction with the group's network and deleted with it:
    postrouting (nat): packets from the group's subnet leaving by another interface than its
                       bridge are masqueraded to that interface's address;
    forward (filter):  into the bridge from elsewhere only replies (conntrack established or
                       related) pass: nothing outside — another group, the LAN — can open a
                       connection to a node, as before egress existed.
No other table, chain or rule of the host's firewall is read or changed. A host firewall that
drops forwarded packets itself (e.g. an iptables FORWARD policy of DROP, as Docker sets) still
wins: jobgroup does not override it, and nodes then have no egress.

Forwarding. IPv4 forwarding is enabled per interface, only where needed: on the group's bridge
(it goes with the bridge) and on the interfaces the machine reaches the outside and its DNS
servers by (its default routes, `uplinks`); `net.ipv4.ip_forward` (all interfaces) is not
touched. What was turned on is recorded in /run/jobgroup/forwarding.json and turned off again
when the last jobgroup NAT table on the machine (of any state directory) is removed; the
controller says so once in its log. Both happen under /run/jobgroup/forwarding.lock, with the
table's creation or removal, so two controllers never undo each other's setting.

Cost (bench/bench_isolation.py): one `nft` exec to add a group's table (~3 ms), one to delete
it (~16 ms: the kernel unregisters the base chains' hooks and waits for an RCU grace period;
nothing of the group's nodes waits for it, only the group's terminal status), one to list
tables when forwarding may be restored (~2 ms); routes come from /proc/net/route (no exec).
One table per state directory with per-group set elements would make the delete ~3 ms too,
at the price of a table shared by groups whose lifetimes overlap; not needed within budget.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import shutil
import subprocess
from pathlib import Path

log = logging.getLogger(__name__)

TABLE_PREFIX = "jg"
UPSTREAM_FILES = ("/run/systemd/resolve/resolv.conf", "/run/NetworkManager/no-stub-resolv.conf")
NO_DNS = ("# written by jobgroup: nodes of a group resolve each other through /etc/hosts;\n"
          "# this group has no egress (--no-egress): no DNS server is reachable\n"
          "options timeout:1 attempts:1\n")
_said: set[str] = set()


def table_name(netid: str) -> str:
    return f"{TABLE_PREFIX}{netid}"


def nft() -> str | None:
    return shutil.which("nft") or next(
        (p for p in ("/usr/sbin/nft", "/sbin/nft") if os.access(p, os.X_OK)), None)


def problem() -> str | None:
    """Why groups cannot get egress here (None: they can)."""
    if os.geteuid() != 0:
        return "needs root (nftables, forwarding)"
    if nft() is None:
        return "nft (Debian package nftables) is not installed: nodes have no way out"
    return None


# ---- DNS ------------------------------------------------------------------------------------

def _parse(text: str) -> tuple[list[str], list[str]]:
    """(nameservers, other kept lines: search/domain/options) of a resolv.conf."""
    servers, other = [], []
    for line in text.splitlines():
        words = line.split("#", 1)[0].split(";", 1)[0].split()
        if not words:
            continue
        if words[0] == "nameserver" and len(words) > 1:
            servers.append(words[1])
        elif words[0] in ("search", "domain", "options"):
            other.append(" ".join(words))
    return servers, other


def _usable(server: str) -> bool:
    try:
        addr = ipaddress.ip_address(server.split("%", 1)[0])
    except ValueError:
        return False
    return addr.version == 4 and not addr.is_loopback and not addr.is_unspecified


def resolv_for_nodes(host_text: str | None = None,
                     upstream: dict[str, str] | None = None) -> tuple[str, list[str], str]:
    """(resolv.conf text for the nodes, the servers in it, a note when the host's could not be
    followed as it is). `host_text` defaults to /etc/resolv.conf, `upstream` (path -> text) to
    the stub resolvers' upstream files (UPSTREAM_FILES)."""
    if host_text is None:
        try:
            host_text = Path("/etc/resolv.conf").read_text()
        except OSError:
            host_text = ""
    servers, other = _parse(host_text)
    usable = [s for s in servers if _usable(s)]
    note = ""
    source = "/etc/resolv.conf"
    if not usable and any(_is_loopback(s) for s in servers):
        for path in UPSTREAM_FILES:
            text = upstream.get(path) if upstream is not None else _read(path)
            if text is None:
                continue
            up, up_other = _parse(text)
            usable = [s for s in up if _usable(s)]
            if usable:
                source = f"{path} (upstream of the local stub {servers[0]})"
                other = other or up_other
                break
        if not usable:
            note = (f"the machine resolves through a local stub ({servers[0]}) whose upstream "
                    "servers are unknown: nodes cannot resolve public names")
    elif len(usable) < len(servers):
        left = [s for s in servers if s not in usable]
        note = f"DNS servers nodes cannot use left out: {', '.join(left)}"
    if not usable and not note:
        note = "the machine names no DNS server: nodes cannot resolve public names"
    lines = ["# written by jobgroup: the group's names come from /etc/hosts (read first);",
             f"# other names through the machine's DNS servers, from {source}"]
    lines += [f"nameserver {s}" for s in usable[:3]]  # glibc reads three
    lines += other
    if not usable:
        lines.append("options timeout:1 attempts:1")
    return "\n".join(lines) + "\n", usable[:3], note


def _is_loopback(server: str) -> bool:
    try:
        return ipaddress.ip_address(server.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text()
    except OSError:
        return None


# ---- routes and forwarding --------------------------------------------------------------------

def _routes(text: str | None = None) -> list[tuple[str, ipaddress.IPv4Network]]:
    """(interface, destination) of the main IPv4 routing table (/proc/net/route)."""
    if text is None:
        text = _read("/proc/net/route") or ""
    out = []
    for line in text.splitlines()[1:]:
        f = line.split()
        if len(f) < 8:
            continue
        try:
            dest = ipaddress.IPv4Address(int(f[1], 16).to_bytes(4, "little"))
            mask = ipaddress.IPv4Address(int(f[7], 16).to_bytes(4, "little"))
            out.append((f[0], ipaddress.IPv4Network(f"{dest}/{mask}", strict=False)))
        except ValueError:
            continue
    return out


def uplinks(servers: list[str], routes_text: str | None = None) -> list[str]:
    """The interfaces by which this machine reaches the outside (its default routes) and the
    DNS `servers` (longest prefix match), jobgroup's own and `lo` excluded."""
    routes = _routes(routes_text)
    out = {ifname for ifname, net in routes if net.prefixlen == 0}
    for s in servers:
        try:
            addr = ipaddress.IPv4Address(s)
        except ValueError:
            continue
        best = max((r for r in routes if addr in r[1]), key=lambda r: r[1].prefixlen,
                   default=None)
        if best is not None:
            out.add(best[0])
    return sorted(i for i in out if i != "lo" and not i.startswith(TABLE_PREFIX))


def _forwarding_path(ifname: str) -> str:
    return f"/proc/sys/net/ipv4/conf/{ifname}/forwarding"


def _get(ifname: str) -> str | None:
    value = _read(_forwarding_path(ifname))
    return value.strip() if value is not None else None


def _set(ifname: str, value: str) -> bool:
    try:
        with open(_forwarding_path(ifname), "w") as f:
            f.write(value)
        return True
    except OSError as e:
        log.warning("could not set IPv4 forwarding of %s to %s: %s", ifname, value, e)
        return False


def _record_path() -> Path:
    from jobgroup.backends.local import network

    return network.RUN_DIR / "forwarding.json"


def _read_record() -> dict[str, str]:
    try:
        data = json.loads(_record_path().read_text())
        return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_record(data: dict[str, str]) -> None:
    path = _record_path()
    if not data:
        path.unlink(missing_ok=True)
        return
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, sort_keys=True))
    os.replace(tmp, path)


def _forwarding_lock() -> int:
    from jobgroup.backends.local import network

    return network._lock(network._run_dir() / "forwarding.lock", "forwarding")


# ---- a group's table ----------------------------------------------------------------------------

def ruleset(netid: str, subnet: str, bridge: str, *, replace: bool = False) -> str:
    """The group's table as one nft transaction: made only if absent (`create` fails the
    whole transaction when it exists), or with `replace` made anew (emptied first, so that a
    rerun after a crash never doubles a rule). Measured: ~3 ms to create; the replacing
    transaction ~16 ms (deleting base chains waits for the kernel's RCU grace period), so
    it is the fallback."""
    t = table_name(netid)
    head = f"table ip {t}\ndelete table ip {t}\n" if replace else f"create table ip {t}\n"
    return (head +
            f"table ip {t} {{\n"
            f"  chain postrouting {{\n"
            f"    type nat hook postrouting priority srcnat; policy accept;\n"
            f"    ip saddr {subnet} oifname != \"{bridge}\" masquerade\n"
            f"  }}\n"
            f"  chain forward {{\n"
            f"    type filter hook forward priority filter; policy accept;\n"
            f"    oifname \"{bridge}\" iifname != \"{bridge}\" ct state established,related "
            f"accept\n"
            f"    oifname \"{bridge}\" iifname != \"{bridge}\" drop\n"
            f"  }}\n"
            f"}}\n")


def _nft(args: list[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([nft() or "nft", *args], input=stdin, capture_output=True, text=True,
                          timeout=30)


def enable(netid: str, subnet: str, bridge: str, servers: list[str]) -> None:
    """Give the group (its bridge `bridge`, subnet `subnet`) a way out: its table, forwarding on
    its bridge and on the uplinks toward the outside and the DNS `servers`. Idempotent.
    Raises OSError when nft refuses (the caller removes the group's network)."""
    fd = _forwarding_lock()
    try:
        p = _nft(["-f", "-"], ruleset(netid, subnet, bridge))
        if p.returncode != 0 and "exists" in p.stderr:  # a rerun: make it anew
            p = _nft(["-f", "-"], ruleset(netid, subnet, bridge, replace=True))
        if p.returncode != 0:
            raise OSError(f"nft could not add the table {table_name(netid)}: "
                          f"{p.stderr.strip()}")
        _set(bridge, "1")
        record = _read_record()
        turned = []
        for ifname in uplinks(servers):
            value = _get(ifname)
            if value == "0" and _set(ifname, "1"):
                record.setdefault(ifname, "0")
                turned.append(ifname)
        if turned:
            _write_record(record)
            key = ",".join(turned)
            if key not in _said:
                _said.add(key)
                log.warning("IPv4 forwarding turned on for %s (nodes' way out through NAT); "
                            "it is turned off again when the last group with egress on this "
                            "machine ends (net.ipv4.ip_forward itself is left as it was)", key)
    finally:
        os.close(fd)


def disable(netid: str) -> None:
    """Remove the group's table (quiet when it is gone) and, when it was the machine's last
    jobgroup table, turn forwarding off where `enable` turned it on. Idempotent."""
    if nft() is None:
        return
    fd = _forwarding_lock()
    try:
        # An absent table is an error nft reports ("No such file or directory"): quiet here.
        _nft(["delete", "table", "ip", table_name(netid)])
        restore_forwarding()
    finally:
        os.close(fd)


def restore_forwarding(force: bool = False) -> list[str]:
    """Turn forwarding off again on interfaces jobgroup turned it on for, when no jobgroup
    table is left on the machine (`force`: whatever is left; the caller holds the lock, or is
    the doctor). The interfaces restored."""
    record = _read_record()
    if not record or (not force and tables()):
        return []
    done = []
    for ifname, value in sorted(record.items()):
        if _get(ifname) == "1" and _set(ifname, value):
            done.append(ifname)
    _write_record({})
    key = "off:" + ",".join(done)
    if done and key not in _said:  # said once: groups come and go, forwarding with them
        _said.add(key)
        log.warning("IPv4 forwarding turned off again for %s (no group with egress is left)",
                    ",".join(done))
    return done


def tables(prefix: str = "") -> list[str]:
    """jobgroup's nftables tables on this machine (`ip jg<netid>`), optionally only those of
    net ids starting with `prefix` (a state directory's tag, a group's net id)."""
    if nft() is None:
        return []
    p = _nft(["list", "tables", "ip"])
    if p.returncode != 0:
        return []
    out = []
    for line in p.stdout.splitlines():
        words = line.split()
        if len(words) == 3 and words[0] == "table" and words[1] == "ip":
            name = words[2]
            if name.startswith(TABLE_PREFIX + prefix) and len(name) == len(TABLE_PREFIX) + 8:
                out.append(name)
    return sorted(out)


def has_table(netid: str) -> bool:
    return table_name(netid) in tables(netid)


def forwarding_left() -> dict[str, str]:
    """Interfaces jobgroup turned forwarding on for (interface -> value to restore)."""
    return _read_record()


# ---- what the local backend asks ----------------------------------------------------------------

def group_network(home: Path, job_id: int, nodes: int, *,  # type: ignore[no-untyped-def]
                  egress: bool = True):
    """The group's network (`network.ensure`) with a way out unless `egress` is False (the
    job was launched with --no-egress: its options, handed to the backend by the
    controller), and the text of its nodes' /etc/resolv.conf."""
    from jobgroup.backends.local import network

    on = egress
    text, servers, note = resolv_for_nodes() if on else (NO_DNS, [], "")
    if note and note not in _said:
        _said.add(note)
        log.warning("%s", note)
    net = network.ensure(home, job_id, nodes, egress=on, dns=tuple(servers))
    return net, (text if net.egress else NO_DNS)


def write_resolv(path: Path, text: str) -> None:
    """The nodes' resolv.conf, atomically, mode 0644: programs that drop privileges inside a
    node (apt's `_apt` downloader, a database's own user) must read it too."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
