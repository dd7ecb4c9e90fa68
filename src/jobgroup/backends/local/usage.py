"""What a local node uses now, for `jobgroup top` (`Backend.usage`): read, never changed.

Where the figures come from:
- the node's processes: the cgroup(s) its phase runs in (recorded by the shim runner in
  `STATUS.cgroup`: the tracking cgroup on cgroup v2, the limit cgroups); where no cgroup could
  be made, the processes that carry the phase's marker (`JOBGROUP_PHASE=STATUS` in their
  environment: `runner.marked_processes`, which `rootfs.running_pid` and stopping use too);
- CPU time: the cgroup v2 `cpu.stat` `usage_usec` (every process the node ever ran, exited ones
  included); without one, the sum of the live processes' user+system time from /proc
  (`approximate` is then said in the note);
- memory: the memory cgroup's `memory.current` (v2) / `memory.usage_in_bytes` (v1) where the
  node has a memory limit (the kernel's own figure, page cache included, as `kubectl top`
  shows a container's working set); else the sum of the processes' resident sets;
- GPUs: NVML's per-process memory through `nvidia-smi --query-compute-apps` where it is
  installed, for the node's processes only.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import msgspec

from jobgroup.backends.base import Proc, Usage
from jobgroup.backends.local.runner import marked_processes

_PAGE = os.sysconf("SC_PAGE_SIZE")
_TICKS = os.sysconf("SC_CLK_TCK")


def node_usage(status_path: Path) -> Usage | None:
    """The usage of the phase whose status file is `status_path` (`state.layout.status_path`),
    or None when it is not running (its status file says it ended, or nothing of it lives)."""
    if status_path.exists():
        return None  # the phase has ended
    from jobgroup.resources import cgroups

    cg = None
    try:
        cg = msgspec.json.decode(Path(f"{status_path}.cgroup").read_bytes(),
                                 type=cgroups.NodeCgroup)
    except (OSError, msgspec.DecodeError, msgspec.ValidationError):
        pass
    notes: list[str] = []
    pids = cgroups.pids(cg) if cg is not None and cg.paths else []
    if not pids:
        pids = _marked(status_path)
    if not pids:
        return None
    procs = tuple(p for p in (_proc(pid) for pid in pids) if p is not None)
    cpu = _cgroup_cpu(cg)
    if cpu is None:
        cpu = sum(_cpu_seconds(p.pid) for p in procs)
        notes.append("CPU time approximate (no cgroup v2: live processes only)")
    memory, limit = _cgroup_memory(cg)
    if memory is None:
        memory = sum(p.rss_bytes for p in procs)
    gpus, why = _gpu_memory({p.pid for p in procs})
    if why:
        notes.append(why)
    return Usage(cpu_seconds=cpu, memory_bytes=memory, memory_limit_bytes=limit,
                 processes=procs, gpus=gpus, source="cgroup" if cg is not None else "/proc",
                 note="; ".join(notes))


def _marked(status_path: Path) -> list[int]:
    """Live processes carrying the phase's marker, outside the controller's own view."""
    # The shim carries the marker too but is the supervisor, not the node: it is the parent of
    # the node's first process and runs `jobgroup-shim`.
    return [p for p in marked_processes(status_path)
            if not _comm(p).startswith("jobgroup-shim")]


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _proc(pid: int) -> Proc | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        rss = int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return None
    command = " ".join(a.decode(errors="replace") for a in raw.split(b"\0") if a)[:300]
    return Proc(pid=pid, command=command or f"[{_comm(pid)}]", rss_bytes=rss)


def _cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _TICKS
    except (OSError, ValueError, IndexError):
        return 0.0


def _v2_paths(cg: object) -> list[str]:
    if cg is None:
        return []
    return [p for p in getattr(cg, "paths", ()) if os.path.exists(os.path.join(p, "cpu.stat"))
            and os.path.exists(os.path.join(p, "cgroup.type"))]


def _cgroup_cpu(cg: object) -> float | None:
    for path in _v2_paths(cg):
        try:
            for line in Path(path, "cpu.stat").read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "usage_usec":
                    return int(value) / 1e6
        except (OSError, ValueError):
            continue
    return None


def _cgroup_memory(cg: object) -> tuple[int | None, int | None]:
    path = getattr(cg, "memory_path", None)
    if not path:
        return None, None
    version = getattr(cg, "memory_version", 2)
    now, limit = (("memory.current", "memory.max") if version == 2 else
                  ("memory.usage_in_bytes", "memory.limit_in_bytes"))
    try:
        used = int(Path(path, now).read_text())
    except (OSError, ValueError):
        return None, None
    try:
        text = Path(path, limit).read_text().strip()
        cap = None if text == "max" else int(text)
    except (OSError, ValueError):
        cap = None
    return used, cap


def _gpu_memory(pids: set[int]) -> tuple[dict[int, int], str]:
    """GPU index -> bytes the given processes use on it; and why nothing is known, if so."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return {}, ""
    try:
        index = subprocess.run([smi, "--query-gpu=index,pci.bus_id",
                                "--format=csv,noheader,nounits"], capture_output=True,
                               text=True, timeout=5)
        apps = subprocess.run([smi, "--query-compute-apps=pid,gpu_bus_id,used_memory",
                               "--format=csv,noheader,nounits"], capture_output=True, text=True,
                              timeout=5)
    except (OSError, subprocess.TimeoutExpired) as e:
        return {}, f"nvidia-smi did not answer ({e})"
    if index.returncode or apps.returncode:
        return {}, "nvidia-smi failed: " + (index.stderr or apps.stderr).strip()[:200]
    bus = {}
    for line in index.stdout.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 2 and parts[0].isdigit():
            bus[parts[1].lower()] = int(parts[0])
    out: dict[int, int] = {}
    for line in apps.stdout.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 3 or not parts[0].isdigit() or int(parts[0]) not in pids:
            continue
        gpu = bus.get(parts[1].lower())
        if gpu is not None and parts[2].isdigit():
            out[gpu] = out.get(gpu, 0) + int(parts[2]) * 2**20
    return out, ""
