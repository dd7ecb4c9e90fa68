"""The emulated cluster's network: a bridge whose address is the controller's, and per node a
network namespace joined to it by a veth pair. Everything goes through `ip -batch`; `ensure`
creates only what is missing, so a half-removed network is repaired in place."""

from __future__ import annotations

import ipaddress
import os
import subprocess
import time
from pathlib import Path

from jobgroup.backends.local import network
from jobgroup.devcluster.slurmconf import Layout
from jobgroup.errors import JobGroupError

DEFAULT_POOL = "10.214.0.0/16"  # the local backend's groups use 10.213.0.0/16


class DevClusterError(JobGroupError):
    """The dev cluster could not be set up or torn down (exit 1: not the user's input)."""

    exit_code = 1


def pick_subnet(nodes: int) -> ipaddress.IPv4Network:
    pool = os.environ.get("JOBGROUP_SLURM_SUBNET_POOL", DEFAULT_POOL)
    return network.pick_subnet(nodes, network.taken_networks(), pool)


def netns_path(name: str) -> Path:
    return Path("/run/netns") / name


def _links() -> set[str]:
    return {link.get("ifname", "") for link in network._ip_json(["link"])}


def missing(layout: Layout) -> list[str]:
    """What of the network is not there (empty: complete)."""
    links = _links()
    out = [] if layout.bridge in links else [layout.bridge]
    out += [n.netns for n in layout.nodes
            if not netns_path(n.netns).exists() or n.veth not in links]
    return out


def _run_batch(lines: list[str], netns: str | None = None, force: bool = False) -> str:
    cmd = ["ip", *(["-force"] if force else []), *(["-n", netns] if netns else []), "-batch", "-"]
    p = subprocess.run(cmd, input="\n".join(lines) + "\n", capture_output=True, text=True,
                       timeout=30)
    return "" if p.returncode == 0 else (p.stderr.strip() or f"ip exited with {p.returncode}")


def ensure(layout: Layout) -> list[str]:
    """Create what is missing; returns the names created."""
    links = _links()
    prefix = ipaddress.ip_network(layout.subnet).prefixlen
    host: list[str] = []
    made: list[str] = []
    if layout.bridge not in links:
        host += [f"link add {layout.bridge} type bridge",
                 f"addr add {layout.gateway}/{prefix} dev {layout.bridge}",
                 f"link set {layout.bridge} up"]
        made.append(layout.bridge)
    redo = [n for n in layout.nodes if not netns_path(n.netns).exists() or n.veth not in links]
    if layout.bridge not in links:  # veths that outlived their bridge: attach them to the new one
        host += [f"link set {n.veth} master {layout.bridge}" for n in layout.nodes
                 if n not in redo]
    for n in redo:
        if n.veth in links:
            host.append(f"link del {n.veth}")
        if netns_path(n.netns).exists():
            host.append(f"netns del {n.netns}")
        host += [f"netns add {n.netns}",
                 f"link add {n.veth} type veth peer name eth0 netns {n.netns}",
                 f"link set {n.veth} master {layout.bridge}",
                 f"link set {n.veth} up"]
        made.append(n.netns)
    if not host:
        return made
    err = _run_batch(host)
    if err:
        raise DevClusterError(f"could not create the Slurm dev cluster's network: {err}")
    for n in redo:
        err = _run_batch([f"addr add {n.address}/{prefix} dev eth0", "link set eth0 up",
                          "link set lo up", f"route add default via {layout.gateway}"], n.netns)
        if err:
            raise DevClusterError(f"could not configure {n.name}'s network namespace: {err}")
    return made


def destroy(layout: Layout) -> None:
    """Remove namespaces, veths and bridge; quiet about what is already gone."""
    remove(layout.bridge, [n.veth for n in layout.nodes], [n.netns for n in layout.nodes])


def remove(bridge: str, veths: list[str], namespaces: list[str]) -> None:
    links = _links()
    lines = [f"netns del {ns}" for ns in namespaces if netns_path(ns).exists()]
    lines += [f"link del {v}" for v in veths if v in links]
    if bridge in links:
        lines.append(f"link del {bridge}")
    if lines:
        _run_batch(lines, force=True)
    # Namespaces are torn down asynchronously: wait until their veths are gone too.
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:
        left = [v for v in veths if v in _links()]
        if not left:
            return
        time.sleep(0.02)
    _run_batch([f"link del {v}" for v in veths if v in _links()], force=True)


def leftovers(tag: str) -> tuple[str, list[str], list[str]]:
    """Bridge, veths and namespaces of the cluster tagged `tag`, found by name (for a `down`
    without cluster.json)."""
    links = _links()
    bridge = f"jg-s{tag}"
    veths = sorted(name for name in links if name.startswith(f"jg-s{tag}-"))
    try:
        ns = sorted(n for n in os.listdir("/run/netns") if n.startswith(f"jgslurm-{tag}-"))
    except FileNotFoundError:
        ns = []
    return (bridge if bridge in links else "", veths, ns)
