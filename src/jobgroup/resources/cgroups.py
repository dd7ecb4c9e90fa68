"""Per-node CPU and memory limits through cgroups, on whatever layout this machine has.

Layouts (detected from /proc/self/mountinfo, never assumed):

- ``v2``: one cgroup2 hierarchy (most current hosts). A node's cgroup is
  ``<v2 mount>/jobgroup/<name>``; ``cpu`` and ``memory`` are enabled in ``cgroup.subtree_control``
  of the mount root and of ``jobgroup``.
- ``v1``: one hierarchy per controller. A node's cgroup is ``<cpu mount>/jobgroup/<name>`` and
  ``<memory mount>/jobgroup/<name>`` (the process is moved into both).
- ``hybrid``: both (e.g. these dev VMs: v1 controllers, v2 at /sys/fs/cgroup/unified with only
  hugetlb). Each controller is used where it is actually available: a controller mounted in v1
  is not available in v2.
- ``none``: no cgroup filesystem (macOS, some containers).

Limits: CPU ``cpu.max`` (v2) / ``cpu.cfs_quota_us`` + ``cpu.cfs_period_us`` (v1), with a
100 ms period; memory ``memory.max`` (+ ``memory.swap.max = 0``) (v2) /
``memory.limit_in_bytes`` (+ ``memory.memsw.limit_in_bytes``, so swap cannot hide the excess)
(v1). A node over its memory limit has a process killed by the kernel's OOM killer;
`oom_kills` reads the count (``memory.events`` ``oom_kill`` on v2, ``memory.oom_control``
``oom_kill`` on v1, falling back to ``memory.failcnt`` on old kernels).

Nothing here raises for a missing controller or missing privileges: every call returns or
carries a plain ``reason`` (empty when everything asked for was applied). Only the caller decides
whether to tell the user (once per job at launch: `availability().reason`).

Names are ``<scope>-<job>-<task>-<rank>`` (`node_name`), where ``scope`` is derived from the state
directory, so two state directories on one machine never share a cgroup, and `leftovers` can
find this state directory's cgroups after a crash.
"""

from __future__ import annotations

import errno
import os
import signal
import time
from pathlib import Path

import msgspec

PARENT = "jobgroup"
CPU_PERIOD_US = 100_000
MOUNTINFO = "/proc/self/mountinfo"
_CONTROLLERS = ("cpu", "memory")


class Layout(msgspec.Struct, frozen=True):
    """Where the cgroup hierarchies are. `v1` maps a controller name (``cpu``, ``memory``, ...)
    to its v1 mount point; `v2_root` is the cgroup2 mount (None without one) and
    `v2_controllers` the controllers available there (its ``cgroup.controllers``)."""

    kind: str  # "v2" | "v1" | "hybrid" | "none"
    v1: dict[str, str] = msgspec.field(default_factory=dict)
    v2_root: str | None = None
    v2_controllers: tuple[str, ...] = ()

    def where(self, controller: str) -> tuple[int, str] | None:
        """(version, mount point) that holds `controller`, or None when it is not available."""
        if controller in self.v1:
            return 1, self.v1[controller]
        if self.v2_root is not None and controller in self.v2_controllers:
            return 2, self.v2_root
        return None


def parse_mountinfo(text: str, v2_controllers: tuple[str, ...] = ()) -> Layout:
    """The layout described by /proc/self/mountinfo `text` (pure). `v2_controllers` is the
    content of the cgroup2 root's ``cgroup.controllers`` (read by `detect`)."""
    v1: dict[str, str] = {}
    v2_root: str | None = None
    for line in text.splitlines():
        pre, sep, post = line.partition(" - ")
        if not sep:
            continue
        fields, tail = pre.split(), post.split()
        if len(fields) < 5 or len(tail) < 3:
            continue
        fstype, mount, superopts = tail[0], fields[4].replace("\\040", " "), tail[2]
        if fstype == "cgroup2" and v2_root is None:
            v2_root = mount
        elif fstype == "cgroup":
            for opt in superopts.split(","):
                if opt in ("rw", "ro") or "=" in opt:
                    continue
                v1.setdefault(opt, mount)
    has_v1 = any(c for c in v1)
    if has_v1 and v2_root is not None:
        kind = "hybrid"
    elif has_v1:
        kind = "v1"
    elif v2_root is not None:
        kind = "v2"
    else:
        kind = "none"
    return Layout(kind=kind, v1=v1, v2_root=v2_root,
                  v2_controllers=v2_controllers if v2_root else ())


def detect(mountinfo: str = MOUNTINFO) -> Layout:
    """This machine's layout (reads mountinfo and the v2 root's cgroup.controllers)."""
    try:
        text = Path(mountinfo).read_text()
    except OSError:
        return Layout(kind="none")
    layout = parse_mountinfo(text)
    if layout.v2_root is not None:
        try:
            ctrls = tuple(Path(layout.v2_root, "cgroup.controllers").read_text().split())
        except OSError:
            ctrls = ()
        layout = msgspec.structs.replace(layout, v2_controllers=ctrls)
    return layout


class Availability(msgspec.Struct, frozen=True):
    """Whether per-node limits can be applied here; `reason` says why not (empty if both can)."""

    cpu: bool
    memory: bool
    layout: str
    reason: str = ""


def _writable_dir(path: str) -> bool:
    p = Path(path)
    while not p.exists():
        p = p.parent
    return os.access(p, os.W_OK)


def availability(layout: Layout | None = None) -> Availability:
    """Can CPU and memory limits be applied (controller present, parent writable)? Cheap: creates
    nothing. Show `reason` once at launch when limits were asked for and it is not empty."""
    layout = layout or detect()
    ok: dict[str, bool] = {}
    why: list[str] = []
    for c in _CONTROLLERS:
        w = layout.where(c)
        if w is None:
            ok[c] = False
            why.append(f"no {c} controller" + (" (no cgroup filesystem)" if layout.kind == "none"
                                               else f" in this {layout.kind} cgroup layout"))
        elif not _writable_dir(os.path.join(w[1], PARENT)):
            ok[c] = False
            why.append(f"cannot write under {w[1]} (not root, and no delegated cgroup)")
        else:
            ok[c] = True
    reason = ""
    if why:
        missing = " and ".join(c.upper() if c == "cpu" else c for c in _CONTROLLERS if not ok[c])
        reason = f"{missing} limits per node are not applied: " + "; ".join(dict.fromkeys(why))
    return Availability(cpu=ok["cpu"], memory=ok["memory"], layout=layout.kind, reason=reason)


def scope_of(home: str | os.PathLike[str]) -> str:
    """A short stable tag for a state directory (8 hex digits)."""
    import zlib

    return f"{zlib.crc32(os.path.abspath(os.fspath(home)).encode()) & 0xFFFFFFFF:08x}"


def node_name(home: str | os.PathLike[str], job_id: int, task: str, rank: int) -> str:
    """The cgroup name of a node: ``<scope>-<job>-<task>-<rank>`` (task names are already
    restricted to letters, digits, '-' and '_')."""
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in task)
    return f"{scope_of(home)}-{job_id}-{safe}-{rank}"


class NodeCgroup(msgspec.Struct, frozen=True):
    """A node's cgroup: the directories created (one per hierarchy used), which limits were
    applied (``cpu``, ``memory``) and, when something asked for was not applied, why.
    Encodable with msgspec, so the controller may store it and remove it after a restart."""

    name: str
    paths: tuple[str, ...] = ()
    applied: tuple[str, ...] = ()
    memory_path: str | None = None
    memory_version: int = 0
    reason: str = ""


def _write(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def _enable_v2(root: str, parent: str, controllers: list[str]) -> None:
    want = " ".join(f"+{c}" for c in controllers)
    for d in (root, parent):
        current = Path(d, "cgroup.subtree_control").read_text().split()
        if not all(c in current for c in controllers):
            _write(os.path.join(d, "cgroup.subtree_control"), want)


def _os_reason(e: OSError, path: str) -> str:
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"cannot write {path}: permission denied (not root, and no delegated cgroup)"
    return f"cannot write {path}: {os.strerror(e.errno or 0) or e}"


def create(name: str, *, cpus: float | None = None, memory_bytes: int | None = None,
           layout: Layout | None = None) -> NodeCgroup:
    """Create cgroup `name` (see `node_name`) with a CPU quota of `cpus` CPUs and a memory limit
    of `memory_bytes`; None (or 0) means no limit of that kind. Never raises for a missing
    controller or missing privileges: what was applied is in `.applied`, what was not (and why)
    in `.reason`. With no limits asked for, nothing is created (best-effort nodes).
    Call at node start, before the node's processes start; then `add_pid` the node's shim."""
    layout = layout or detect()
    paths: list[str] = []
    applied: list[str] = []
    why: list[str] = []
    mem_path, mem_version = None, 0
    wanted = [c for c, v in (("cpu", cpus), ("memory", memory_bytes)) if v]
    groups: dict[tuple[int, str], list[str]] = {}
    for c in wanted:
        w = layout.where(c)
        if w is None:
            why.append(f"no {c} controller in this {layout.kind} cgroup layout")
        else:
            groups.setdefault(w, []).append(c)
    for (version, root), ctrls in groups.items():
        parent = os.path.join(root, PARENT)
        path = os.path.join(parent, name)
        try:
            os.makedirs(parent, exist_ok=True)
            if version == 2:
                _enable_v2(root, parent, ctrls)
            os.makedirs(path, exist_ok=True)
        except OSError as e:
            why.append(_os_reason(e, e.filename or path))
            continue
        paths.append(path)
        for c in ctrls:
            try:
                if c == "cpu":
                    quota = max(1000, round(float(cpus or 0) * CPU_PERIOD_US))
                    if version == 2:
                        _write(os.path.join(path, "cpu.max"), f"{quota} {CPU_PERIOD_US}")
                    else:
                        _write(os.path.join(path, "cpu.cfs_period_us"), str(CPU_PERIOD_US))
                        _write(os.path.join(path, "cpu.cfs_quota_us"), str(quota))
                else:
                    limit = str(int(memory_bytes or 0))
                    if version == 2:
                        _write(os.path.join(path, "memory.max"), limit)
                        swap = os.path.join(path, "memory.swap.max")
                        if os.path.exists(swap):
                            _write(swap, "0")
                    else:
                        _write(os.path.join(path, "memory.limit_in_bytes"), limit)
                        memsw = os.path.join(path, "memory.memsw.limit_in_bytes")
                        if os.path.exists(memsw):
                            _write(memsw, limit)
                    mem_path, mem_version = path, version
                applied.append(c)
            except OSError as e:
                why.append(_os_reason(e, e.filename or path))
    return NodeCgroup(name=name, paths=tuple(paths), applied=tuple(applied),
                      memory_path=mem_path, memory_version=mem_version,
                      reason="; ".join(why))


def add_pid(cg: NodeCgroup, pid: int) -> str:
    """Move process `pid` into the node's cgroup(s) (its later children follow). Returns "" or
    why it could not be moved. Move the shim right after spawning it, before it starts the
    node's command (or let the child write its own pid before exec, see `procs_files`)."""
    why = []
    for f in procs_files(cg):
        try:
            _write(f, str(pid))
        except OSError as e:
            why.append(_os_reason(e, f) if e.errno != errno.ESRCH else f"process {pid} is gone")
    return "; ".join(why)


def procs_files(cg: NodeCgroup) -> tuple[str, ...]:
    """The ``cgroup.procs`` files a process writes its pid to in order to join the node."""
    return tuple(os.path.join(p, "cgroup.procs") for p in cg.paths)


def pids(cg: NodeCgroup) -> list[int]:
    """Processes still in the node's cgroup(s)."""
    out: set[int] = set()
    for f in procs_files(cg):
        try:
            out.update(int(x) for x in Path(f).read_text().split())
        except (OSError, ValueError):
            continue
    return sorted(out)


def oom_kills(cg: NodeCgroup) -> int | None:
    """How many processes of the node the OOM killer killed (0 if none); None when unknown (no
    memory limit applied, or the kernel does not say). Read it at node end, before `remove`."""
    if cg.memory_path is None:
        return None
    try:
        if cg.memory_version == 2:
            text = Path(cg.memory_path, "memory.events").read_text()
        else:
            text = Path(cg.memory_path, "memory.oom_control").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key == "oom_kill" and value.strip().isdigit():
            return int(value)
    if cg.memory_version == 1:  # kernels before 4.13: only "the limit was hit"
        try:
            return 1 if int(Path(cg.memory_path, "memory.failcnt").read_text()) > 0 else 0
        except (OSError, ValueError):
            return None
    return None


def remove(cg: NodeCgroup, *, timeout: float = 2.0) -> str:
    """Remove the node's cgroup(s): processes still inside are SIGKILLed first (``cgroup.kill``
    on v2 when present). Returns "" or why something is left (a stuck process). Removing a cgroup
    that is already gone returns "" quietly. Call at node end, after `oom_kills`."""
    why: list[str] = []
    for path in cg.paths:
        if not os.path.isdir(path):
            continue
        kill_file = os.path.join(path, "cgroup.kill")
        deadline = time.monotonic() + timeout
        while True:
            left = pids(NodeCgroup(name=cg.name, paths=(path,)))
            if not left:
                break
            if os.path.exists(kill_file):
                try:
                    _write(kill_file, "1")
                except OSError:
                    pass
            for p in left:
                try:
                    os.kill(p, signal.SIGKILL)
                except OSError:
                    pass
            if time.monotonic() > deadline:
                why.append(f"{path}: processes {', '.join(map(str, left))} did not exit")
                break
            time.sleep(0.01)
        try:
            os.rmdir(path)
        except FileNotFoundError:
            pass
        except OSError as e:
            if not why:
                why.append(f"cannot remove {path}: {os.strerror(e.errno or 0)}")
    return "; ".join(why)


def tracking_parent(layout: Layout | None = None) -> str | None:
    """Where node phases get their process-tracking cgroups: ``<v2 mount>/jobgroup`` (created
    here), or None when there is no cgroup2 hierarchy we may write (then shims walk /proc to find
    a node's processes). A tracking cgroup needs no controller: cgroup v2 lists a cgroup's
    processes (``cgroup.procs``) whatever controllers it has, so it works on hybrid layouts too."""
    layout = layout or detect()
    if layout.v2_root is None:
        return None
    parent = os.path.join(layout.v2_root, PARENT)
    try:
        os.makedirs(parent, exist_ok=True)
    except OSError:
        return None
    return parent if os.access(os.path.join(parent, "cgroup.procs"), os.W_OK) else None


def prune(layout: Layout | None = None) -> None:
    """Remove the shared ``jobgroup`` parent cgroups where they are empty (quietly keeps them
    while any node cgroup of any state directory remains)."""
    layout = layout or detect()
    roots = {w[1] for c in _CONTROLLERS if (w := layout.where(c)) is not None}
    if layout.v2_root:
        roots.add(layout.v2_root)  # tracking cgroups live there even without controllers
    for root in roots:
        try:
            os.rmdir(os.path.join(root, PARENT))
        except OSError:
            pass


def leftovers(home: str | os.PathLike[str], layout: Layout | None = None) -> list[NodeCgroup]:
    """Cgroups of state directory `home` that still exist (for `jobgroup doctor`): one
    NodeCgroup per name, with every hierarchy's directory, ready for `remove`."""
    layout = layout or detect()
    prefix = scope_of(home) + "-"
    roots = {w[1] for c in _CONTROLLERS if (w := layout.where(c)) is not None}
    if layout.v2_root:
        roots.add(layout.v2_root)  # the shims' tracking cgroups (`tracking_parent`)
    found: dict[str, list[str]] = {}
    for root in sorted(roots):
        parent = os.path.join(root, PARENT)
        try:
            names = os.listdir(parent)
        except OSError:
            continue
        for n in names:
            if n.startswith(prefix) and os.path.isdir(os.path.join(parent, n)):
                found.setdefault(n, []).append(os.path.join(parent, n))
    out = []
    for n, paths in sorted(found.items()):
        mem = next((p for p in paths if os.path.exists(os.path.join(p, "memory.events"))
                    or os.path.exists(os.path.join(p, "memory.oom_control"))), None)
        version = 0 if mem is None else (2 if os.path.exists(os.path.join(mem, "memory.events"))
                                         else 1)
        out.append(NodeCgroup(name=n, paths=tuple(paths), memory_path=mem, memory_version=version))
    return out
