"""What makes each local node look like its own host, and how much of it this machine allows.

Levels (detected once per controller, recorded per job and announced at launch):
- `namespaces` (root): a network namespace per node on a per-group bridge (own address, both
  nodes may bind 0.0.0.0:8000; a way out through NAT unless --no-egress, egress.py), its own
  root file system view, /tmp and /dev/shm (rootfs.py), plus the view below.
- `user` (no root, but bubblewrap works through unprivileged user namespaces): every node shares
  the host's network on its own loopback address (two nodes cannot both bind 0.0.0.0:PORT), plus
  the view below.
- `none` (no usable namespaces, e.g. macOS): plain processes; names do not resolve (use the
  SKYPILOT_* variables); volumes and file_mounts cannot be mounted.

At level `namespaces` the node helper (`nodehost.c`, see rootfs.py) builds the view in one exec,
over the node's private root (a mount point the host lacks is made in the node's upper layer);
at level `user` (and where overlays cannot be had) the view is built by bubblewrap — chosen
over hand-written `unshare` + `mount` scripts because it builds a new root from bind mounts in
one exec (~18 ms), works without root, and can create mount points (`/checkpoints`) inside the
node without creating anything in the host's filesystem. Each node gets:
- its hostname `{task}-{rank}` (UTS namespace);
- the group's hosts file over /etc/hosts (`{task}-{rank}.{group}` and `{task}-{rank}` for every
  node, plus the usual localhost lines); the machine's /etc/hosts is never modified;
- volumes (read-write binds of directories in the state directory) and file_mounts (read-only
  binds of the user's files: like SkyPilot's uploaded copies, a node cannot change them);
- the rest of the host's filesystem at the same paths (the workdir, given as a host path, is
  bind-mounted, not copied: edits on either side are seen by the other); at level
  `namespaces` through the node's own overlay (reads see the host, writes stay with the node).
"""

from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

NAMESPACES, USER, NONE = "namespaces", "user", "none"

LEVEL_NOTES = {
    NAMESPACES: "every node has its own network namespace, address, hostname and /etc/hosts, "
                "its own root file system view, /tmp and /dev/shm, and a way out",
    USER: "no root: nodes share the host network on their own loopback addresses (two nodes "
          "cannot both bind 0.0.0.0 on one port); hostnames, /etc/hosts, mounts, /tmp and "
          "/dev/shm are private, the rest of the root and $HOME are the host's",
    NONE: "no namespaces available: plain processes; peer names do not resolve (use the "
          "SKYPILOT_* variables) and volumes/file_mounts cannot be mounted",
}

_level_cache: str | None = None


def recorded_level(home: Path) -> str:
    """The isolation the local backend gives nodes here: what the controller recorded when it
    started (`HOME/isolation`), else detected the same way now."""
    try:
        level = (home / "isolation").read_text().strip()
        if level:
            return level
    except OSError:
        pass
    return detect_level()


def detect_level() -> str:
    """The best isolation level this process can give nodes (cached)."""
    global _level_cache
    if _level_cache is None:
        forced = os.environ.get("JOBGROUP_ISOLATION")
        if forced in (NAMESPACES, USER, NONE):
            _level_cache = forced
        else:
            _level_cache = _probe()
    return _level_cache


def _probe() -> str:
    import shutil
    import subprocess

    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return NONE
    try:
        ok = subprocess.run([bwrap, "--ro-bind", "/", "/", "--unshare-uts", "true"],
                            capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        ok = False
    if not ok:
        return NONE
    if os.geteuid() == 0 and shutil.which("ip") and shutil.which("nsenter"):
        return NAMESPACES
    return USER


@dataclass(frozen=True)
class Bind:
    src: str
    dst: str
    readonly: bool = False


@dataclass(frozen=True)
class NodeView:
    hostname: str
    hosts_file: str
    binds: list[Bind] = field(default_factory=list)
    netns: str | None = None  # join this named network namespace first
    chdir: str | None = None
    resolv_file: str | None = None  # mounted over /etc/resolv.conf when set
    # Issue 15 (rootfs.py). The node's own directory (roots/<task>-<rank>): at level
    # `namespaces` its private root's upper layers; at level `user` its /tmp and /var/tmp.
    root_dir: str | None = None
    private_root: bool = False  # the overlay root (root only; rootfs.private_root_problem)
    shm_size: str | None = None  # /dev/shm of its own (rootfs.shm_size); None: the host's
    state_dir: str | None = None  # shared with the node at its own path (logs, workdirs)
    keep_own: tuple[str, ...] = ()  # inside shared binds, yet the node's own (a venv)
    hide: tuple[str, ...] = ()  # not shown in the node (the job's roots directory)


def hosts_text(entries: list[tuple[str, list[str]]], host_hosts: str) -> str:
    """A hosts file: the machine's localhost lines, then `address name...` for every node."""
    keep = []
    for line in host_hosts.splitlines():
        words = line.split("#", 1)[0].split()
        if len(words) >= 2 and any("localhost" in w for w in words[1:]):
            keep.append(line)
    if not any(line.split()[0] == "127.0.0.1" for line in keep if line.split()):
        keep.insert(0, "127.0.0.1\tlocalhost")
    lines = ["# written by jobgroup for one job group; the machine's /etc/hosts is untouched",
             *keep, *(f"{addr}\t{' '.join(names)}" for addr, names in entries)]
    return "\n".join(lines) + "\n"


def write_hosts(path: Path, entries: list[tuple[str, list[str]]]) -> None:
    """Write a group's hosts file at `path` atomically (readers never see half of it): this
    machine's localhost lines, then `address name...` for every node (`hosts_text`). The one
    writer of hosts files, for the local and the Slurm backend."""
    try:
        machine_hosts = Path("/etc/hosts").read_text()
    except OSError:
        machine_hosts = ""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(hosts_text(entries, machine_hosts))
    os.chmod(tmp, 0o644)  # read by every user of the node (nothing secret in it)
    os.replace(tmp, path)


# In a node's own network namespace no DNS server is reachable (nodes talk only to each other).
# Without a nameserver line glibc tries 127.0.0.1, which refuses at once: a name that is not in
# the hosts file fails in milliseconds instead of after two 5 s time-outs (getent hosts asks for
# IPv6 first, misses the IPv4-only hosts file and would fall through to DNS).
NO_DNS = ("# written by jobgroup: nodes of a group resolve each other through /etc/hosts;\n"
          "# no DNS server is reachable from a node's network namespace\n"
          "options timeout:1 attempts:1\n")


def bwrap_args(
    view: NodeView,
    *,
    exists: Callable[[str], bool] = os.path.lexists,
    listdir: Callable[[str], list[str]] = os.listdir,
    islink: Callable[[str], bool] = os.path.islink,
    readlink: Callable[[str], str] = os.readlink,
) -> list[str]:
    """bubblewrap arguments that build the node's view (pure, given the host's filesystem).

    The new root is a tmpfs holding binds of every entry of the host's /. A mount point that
    does not exist on the host is created inside the node only: the deepest existing directory
    above it is rebuilt the same way (a tmpfs with binds of its entries), so nothing is ever
    created on the host.
    """
    shadows = {"/"}
    if exists("/run/netns"):
        # /run/netns holds a mount per network namespace, which other groups create and delete
        # at any moment: a recursive bind of /run would race with them ("Can't bind mount
        # /oldroot/run"). Nodes do not need it (they join their namespace before bwrap).
        shadows.add("/run")
    for b in view.binds:
        if exists(b.dst):
            continue
        parent = posixpath.dirname(b.dst)
        while parent != "/" and not exists(parent):
            parent = posixpath.dirname(parent)
        shadows.add(parent)
    args: list[str] = []
    for d in sorted(shadows, key=lambda p: (p.count("/"), p)):
        if d != "/":
            args += ["--tmpfs", d]
        for entry in sorted(listdir(d)):
            full = posixpath.join(d, entry)
            if full in shadows or full in _HIDDEN:
                continue  # rebuilt below (or not shown at all)
            entry_args = _entry(full, islink, readlink)
            if d != "/" and entry_args[0] == "--bind":
                # Below / entries come and go (a dev cluster's /run/jobgroup-slurm-*, another
                # group's files) between this listing and bwrap's start: one gone is skipped.
                entry_args[0] = "--bind-try"
            args += entry_args
    if view.root_dir and not view.private_root:  # level `user`: /tmp and /var/tmp its own
        for path in PRIVATE_DIRS:
            args += ["--bind", posixpath.join(view.root_dir, PRIVATE_DIRS[path]), path]
        if view.state_dir:
            args += ["--bind", view.state_dir, view.state_dir]
        if view.chdir and not _below(view.chdir, view.state_dir):
            args += ["--bind", view.chdir, view.chdir]
    if view.shm_size:
        from jobgroup.backends.local.rootfs import shm_bytes

        size = shm_bytes(view.shm_size)
        args += [*(["--size", str(size)] if size else []), "--tmpfs", "/dev/shm"]
    for b in view.binds:
        args += ["--ro-bind" if b.readonly else "--bind", b.src, b.dst]
    args += ["--bind", view.hosts_file, "/etc/hosts"]
    if view.resolv_file:
        args += ["--ro-bind", view.resolv_file, "/etc/resolv.conf"]
    # No --die-with-parent: when a node is stopped, the shim sends SIGTERM to bwrap and to the
    # node's processes alike; bwrap dies at once, and with that flag the kernel would SIGKILL the
    # node's shell before its TERM trap ran. Orphans re-parent to the shim (a subreaper), which
    # waits for them (SIGKILL after the grace period).
    args += ["--unshare-uts", "--hostname", view.hostname]
    if view.chdir:
        args += ["--chdir", view.chdir]
    return args


_HIDDEN = frozenset({"/run/netns"})
# Level `user`: paths that are per-node directories of the node's root_dir (path -> name).
PRIVATE_DIRS = {"/tmp": "tmp", "/var/tmp": "var-tmp"}


def _below(path: str, top: str | None) -> bool:
    if not top:
        return False
    return path == top or path.startswith(top.rstrip("/") + "/")


def helper_args(view: NodeView) -> list[str]:
    """Arguments of the node helper (`nodehost.c`, see rootfs.py) that make the node's view:
    its network, hostname, root (private with `view.private_root`), /dev/shm, then the shared
    binds — the state directory, the workdir when outside it, volumes, file_mounts — parents
    before children, its own /etc/hosts and /etc/resolv.conf, the venvs it keeps its own
    inside shared directories, and what it must not see."""
    args: list[str] = []
    if view.netns:
        args += ["-n", f"/run/netns/{view.netns}"]
    args += ["-h", view.hostname]
    if view.private_root and view.root_dir:
        args += ["-r", view.root_dir]
    if view.shm_size:
        args += ["-s", view.shm_size]
    shared: list[Bind] = []
    if view.private_root and view.state_dir:
        shared.append(Bind(view.state_dir, view.state_dir))
    if view.private_root and view.chdir and not _below(view.chdir, view.state_dir):
        shared.append(Bind(view.chdir, view.chdir))
    for b in sorted([*shared, *view.binds], key=lambda b: b.dst.rstrip("/").count("/")):
        args += ["-B" if b.readonly else "-b", b.src, b.dst]
    args += ["-f", view.hosts_file, "/etc/hosts"]
    if view.resolv_file:
        args += ["-F", view.resolv_file, "/etc/resolv.conf"]
    if view.private_root:
        for path in view.keep_own:
            args += ["-o", path]
    for path in view.hide:
        args += ["-x", path]
    if view.chdir:
        args += ["-C", view.chdir]
    return args


def _entry(full: str, islink: Callable[[str], bool], readlink: Callable[[str], str]) -> list[str]:
    if full == "/proc":
        return ["--proc", "/proc"]
    if full == "/dev":
        return ["--dev-bind", "/dev", "/dev"]
    if islink(full):
        return ["--symlink", readlink(full), full]
    return ["--bind", full, full]


def uses_bwrap(argv: list[str]) -> bool:
    """Whether `wrap` put bubblewrap between the shim and the node (bubblewrap reports a child
    killed by signal N as exit code 128+N)."""
    return any(os.path.basename(a) == "bwrap" for a in argv[:4])


def wrap(argv: list[str], view: NodeView | None) -> list[str]:
    """`argv` run inside the node's view (unchanged when there is no view). As root the node
    helper makes it in one exec (with a private root when `view.private_root`; without one
    only when nothing must be mounted where the host has no such path and /tmp need not be
    replaced); otherwise bubblewrap rebuilds a root from binds of the host's (level `user`,
    or a machine where overlays cannot be had: /tmp and /var/tmp are per-node directories)."""
    if view is None:
        return argv
    import shutil

    if os.geteuid() == 0 and (view.private_root or not (view.binds or view.root_dir)):
        from jobgroup.backends.local.rootfs import helper_path

        return [helper_path(), *helper_args(view), "--", *argv]
    bwrap = shutil.which("bwrap") or "bwrap"
    inner = [bwrap, *bwrap_args(view), "--", *argv]
    if view.netns:
        # nsenter switches only the network namespace (`ip netns exec` would remount /sys).
        nsenter = shutil.which("nsenter") or "nsenter"
        return [nsenter, f"--net=/run/netns/{view.netns}", "--", *inner]
    return inner


def join_argv(pid: int, argv: list[str], cwd: str | None = None) -> list[str]:
    """`argv` run in the namespaces (network, hostname, IPC, mounts) of a node's running
    process `pid` (in `cwd` there, when given): a probe sees the node's own files, not a view
    made afresh."""
    from jobgroup.backends.local.rootfs import helper_path

    return [helper_path(), "-j", str(pid), *(["-C", cwd] if cwd else []), "--", *argv]
