"""A node's own root file system, /tmp and /dev/shm (issue 15), and the helper that makes them.

What a node gets at isolation level `namespaces` (root), when this machine can mount overlays
with their writable layer in the state directory (`private_root_problem` says why not):
- **its own view of the machine's root**: reads see the host (its Python, CUDA, caches, your
  files), writes stay with the node. The root is an overlay: lower layer the host's root file
  system, upper layer `jobs/<id>/roots/<task>-<rank>/upper` in the state directory; every other
  writable data file system (a separate /home, an NFS share, a tmpfs /run) gets an overlay of
  its own (`.../m/<mount point>/upper`). `pip install` (into the system's Python, the user's
  site, or the launching venv), `apt-get install`, `~/.bashrc` edits all stay in the node.
- **/tmp and /var/tmp the node's own** like the rest: the host's files as they were, what the
  node writes stays in its upper layer (two ranks writing /tmp/x each keep their own; nothing
  lands in the host's /tmp). Like any path of the root, a file the host creates or changes
  after the node started may or may not be seen by it (overlayfs caches lookups): share such
  paths on purpose (workdir, volumes, the state directory);
- **its own /dev/shm** (`SHM_DEFAULT`), and its own SysV IPC and POSIX message queues;
- **shared on purpose** (binds over the overlay, so results land on the host): volumes,
  file_mounts (read-only), the workdir, and the state directory (the node's default working
  directory, topology file and logs are there). A launching venv or conda prefix that lies
  inside one of those shared directories gets an overlay of its own again (`-o`), so
  `pip install` in a node never changes it.

Mechanism: overlayfs mounted by `nodehost.c` in the node's own mount namespace, one exec per
node phase. Chosen over
- bubblewrap's `--overlay` options: they appeared in bubblewrap 0.9; Debian bookworm ships
  0.8, and bubblewrap rebuilds the root from ~25 binds (~25 ms a node, measured for issue 4);
- a copy of the root or a container image: no image here, and a copy costs seconds and GBs;
- `unshare` + `mount` in a shell: six execs, ~4.3 ms before any overlay (measured: issue 4's
  light view); the helper does it all in one: 2.8 ms with the root (`true` alone: 0.8 ms);
- a tmpfs upper layer: lost at the node's end, and counted against RAM (pip installs of GBs).
The upper layer is the node's disk: kept when the node ends (its setup's installs are there for
its run, and for a restart), measured at the group's end (`usage`), removed with the job's
files. Overlays and tmpfs live in the node's mount namespace and vanish with its last process:
no unmount is ever needed, so no crash can leave one mounted on the host.

Without root (level `user`) nodes keep bubblewrap's view of the host's root (shared) and get
only a private /tmp and /var/tmp (per-node directories under `roots/`) and /dev/shm (tmpfs).
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
import threading
from pathlib import Path

from jobgroup.backends.local import runner, shim

HELPER_SOURCE = Path(__file__).with_name("nodehost.c")
# /dev/shm's size when the task names no memory limit: tmpfs's own default, half of the
# machine's RAM — what the host's /dev/shm has, and unlike Docker's 64 MiB, which NCCL and
# PyTorch's DataLoader outgrow (they then fail with "No space left on device" / bus errors).
# With a memory limit: half of it (tmpfs pages are charged to the node's memory cgroup).
# JOBGROUP_SHM_SIZE in the task's envs (or --env) overrides: bytes with k/m/g, or a percent.
SHM_DEFAULT = "-"
SHM_VARIABLE = "JOBGROUP_SHM_SIZE"
_SIZE = re.compile(r"^(\d+[kKmMgG]?|\d{1,3}%)$")

_lock = threading.Lock()
_helper: str | None = None
_problem: dict[str, str | None] = {}


def helper_path() -> str:
    """The compiled helper (`nodehost.c`), built on first use next to the shim's binary."""
    global _helper
    with _lock:
        if _helper and os.access(_helper, os.X_OK):
            return _helper
    source, headers = HELPER_SOURCE.read_bytes(), shim.c_headers()
    compiler = shim._compiler()
    name = shim._binary_name(source, compiler, headers).replace("jobgroup-shim-",
                                                                "jobgroup-nodehost-")
    target = shim.cache_dir() / name
    if not os.access(target, os.X_OK):
        try:
            shim._build(source, compiler, target, headers)
        except OSError as e:
            raise shim.ShimBuildError(f"could not build jobgroup's node helper in "
                                      f"{target.parent}: {e}") from e
    with _lock:
        _helper = str(target)
    return _helper


def roots_dir(home: Path, job_id: int) -> Path:
    """Where the job's nodes keep what they write (kept until the job's files are removed)."""
    return home / "jobs" / str(job_id) / "roots"


def node_root(home: Path, job_id: int, task: str, rank: int) -> Path:
    return roots_dir(home, job_id) / f"{task}-{rank}"


def shm_size(env: dict[str, str], memory_gb: float) -> str:
    """The size of a node's /dev/shm for the helper (`-` = tmpfs's default, see SHM_DEFAULT):
    JOBGROUP_SHM_SIZE as given (the helper refuses one tmpfs would not take, failing that
    node with the reason in its log; `launch` refuses one in the YAML: `shm_problem`), else
    half the node's memory limit, else the default."""
    asked = env.get(SHM_VARIABLE, "").strip()
    if asked:
        return asked
    if memory_gb > 0:
        return str(int(memory_gb * 2**30) // 2)
    return SHM_DEFAULT


def shm_problem(value: str) -> str | None:
    """Why `value` cannot size a /dev/shm (None: it can)."""
    if _SIZE.match(value.strip()):
        return None
    return (f"{SHM_VARIABLE}={value!r}: give bytes with an optional k/m/g suffix (e.g. 8g) or "
            "a percentage of RAM (e.g. 50%)")


def shm_bytes(size: str) -> int | None:
    """`size` in bytes for bubblewrap's --size (None: its default; a percent or a size it
    cannot take: None too)."""
    if size == SHM_DEFAULT or not _SIZE.match(size) or size.endswith("%"):
        return None
    mult = {"k": 2**10, "m": 2**20, "g": 2**30}.get(size[-1].lower(), 1)
    return int(size.rstrip("kKmMgG")) * mult


def private_root_problem(home: Path) -> str | None:
    """Why nodes of this state directory cannot get a private root here (None: they can).
    Tried once per process: the helper mounts an overlay of / with its upper layer in the
    state directory, in a throw-away mount namespace (~3 ms). It fails where the state
    directory is itself on overlayfs (inside many containers) or on a file system without
    extended attributes, and without root."""
    key = str(home)
    if key in _problem:
        return _problem[key]
    if os.geteuid() != 0:
        why: str | None = "needs root (overlay mounts)"
    else:
        why = None
        try:
            helper = helper_path()
            home.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(prefix=".rootfs-probe-", dir=home) as d:
                p = subprocess.run([helper, "-r", d, "--", "true"],
                                   capture_output=True, text=True, timeout=30)
                if p.returncode != 0:
                    why = p.stderr.strip().splitlines()[-1] if p.stderr.strip() else \
                        f"the node helper exited {p.returncode}"
        except (OSError, subprocess.TimeoutExpired, shim.ShimBuildError) as e:
            why = str(e)
    _problem[key] = why
    return why


def usage(root: Path) -> tuple[int, int]:
    """(bytes, files) the node wrote: regular files, symlinks and whiteouts of its upper
    layers (directories, such as those made for mount points, are not counted: an idle node
    reads 0; overlayfs's scratch `work` directories neither). Hard links count once. Walks
    the tree: ~2 µs a file (18 ms for 10,000, measured)."""
    tops = [root / "upper", root / "tmp", root / "var-tmp"]
    for extra in ("m", "o"):  # m/<mount point>/upper, o/<path>/upper
        try:
            tops += [Path(e.path) / "upper" for e in os.scandir(root / extra)]
        except OSError:
            pass
    total = files = 0
    seen: set[tuple[int, int]] = set()
    stack = tops
    while stack:
        try:
            it = os.scandir(stack.pop())
        except OSError:
            continue
        with it:
            for e in it:
                try:
                    if e.is_dir(follow_symlinks=False):
                        stack.append(Path(e.path))
                        continue
                    st = e.stat(follow_symlinks=False)
                except OSError:
                    continue
                if st.st_nlink > 1:
                    if (st.st_dev, st.st_ino) in seen:
                        continue
                    seen.add((st.st_dev, st.st_ino))
                total += st.st_size
                files += 1
    return total, files


def job_usage(home: Path, job_id: int) -> dict[str, tuple[int, int]]:
    """node name (`<task>-<rank>`) -> (bytes, files) for every node root of the job."""
    out = {}
    try:
        names = sorted(os.listdir(roots_dir(home, job_id)))
    except OSError:
        return {}
    for name in names:
        if not name.startswith("."):
            out[name] = usage(roots_dir(home, job_id) / name)
    return out


def human(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000  # type: ignore[assignment]
    return f"{n} B"


# ---- what the local backend asks (kept here so that backend.py stays small) ---------------------

def view_fields(home: Path, job_id: int, task: str, rank: int, level: str, *,
                env: dict[str, str] | None, memory_gb: float, shared: list[str]) -> dict:
    """The NodeView fields of issue 15 for one node: its directory, whether its root is
    private, /dev/shm, the state directory, the launching venv kept its own when it lies in a
    `shared` directory (workdir, volumes), what it must not see. `env` None: a probe's view
    (no /dev/shm of its own needed)."""
    from jobgroup.backends.local.isolation import NAMESPACES, NONE

    if level == NONE:
        return {}
    root = node_root(home, job_id, task, rank)
    private = level == NAMESPACES and private_root_problem(home) is None
    fields: dict = {"root_dir": str(root), "private_root": private, "state_dir": str(home),
                    "shm_size": shm_size(env, memory_gb) if env is not None else None}
    if not private:
        for name in ("tmp", "var-tmp"):
            (root / name).mkdir(parents=True, exist_ok=True, mode=0o700)
            os.chmod(root / name, 0o1777)
        return fields
    state = str(home).rstrip("/") + "/"
    keep = []
    for var in ("VIRTUAL_ENV", "CONDA_PREFIX"):
        prefix = os.path.normpath((env or {}).get(var, "") or "/")
        if prefix != "/" and any(prefix == s or prefix.startswith(s.rstrip("/") + "/")
                                 for s in [*shared, state]):
            keep.append(prefix)
    fields["keep_own"] = tuple(keep)
    fields["hide"] = (str(roots_dir(home, job_id)),)
    return fields


def running_pid(home: Path, job_id: int, task_idx: int, rank: int) -> int | None:
    """A live process of the node's current phase (its first process, in the node's
    namespaces), or None: read from the shims' pid files of phases not yet recorded ended."""
    nodes = home / "jobs" / str(job_id) / "nodes"
    try:
        names = [n for n in os.listdir(nodes)
                 if n.startswith(f"{task_idx}-{rank}.") and n.endswith(".status.pid")]
    except OSError:
        return None
    def order(n: str) -> tuple[int, bool]:  # latest attempt first, its run before its setup
        parts = n.split(".")
        return (int(parts[2]) if parts[2].isdigit() else 0, parts[1] == "run")

    for name in sorted(names, key=order, reverse=True):
        status = nodes / name[: -len(".pid")]
        if status.exists():
            continue  # that phase has ended
        info = shim.read_pid_file(status)
        if info is not None and _ns(str(info.child_pid)) not in (None, _ns("self")):
            return info.child_pid  # (in the host's namespaces still: not made yet)
        # Its first process has exited, others of the phase may live on (they carry the
        # phase's marker): join one of them rather than mount the node's root a second time.
        # (The shim carries the marker too, in the host's namespaces: not that one.)
        host_ns = _ns("self")
        for pid in runner.marked_processes(status):
            if _ns(str(pid)) not in (None, host_ns):
                return pid
    return None


def usage_notes(home: Path, job_id: int,
                index: dict[str, tuple[int, int]]) -> list[tuple[int | None, int | None, str]]:
    """(task_idx, rank, message) per node root of the job, for the job's events at its end:
    what the node wrote in its own root, and where (`index`: node name -> (task_idx, rank))."""
    out: list[tuple[int | None, int | None, str]] = []
    for name, (size, files) in job_usage(home, job_id).items():
        where = index.get(name, (None, None))
        out.append((*where, f"{name} wrote {human(size)} ({files} files) in its own root, "
                            f"kept in {roots_dir(home, job_id) / name}"))
    return out


# ---- leftovers (jobgroup doctor) ----------------------------------------------------------------

def node_namespaces(home: Path) -> dict[str, list[int]]:
    """Node roots of this state directory still mounted somewhere: the upper layer's path
    (`.../roots/<task>-<rank>/upper`) -> pids in the mount namespace that holds it. A node's
    overlays and /dev/shm live in its own mount namespace, which lives as long as a process
    is in it: one listed here for a node that is not running holds processes that escaped
    their node's end (a new session and a cleared environment, their shim SIGKILLed). Reads
    one mountinfo per distinct mount namespace."""
    inside = str(home.absolute()).rstrip("/") + "/jobs/"
    mine = _ns("self")
    by_ns: dict[str, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            ns = _ns(entry)
            if ns and ns != mine:
                by_ns.setdefault(ns, []).append(int(entry))
    out: dict[str, set[int]] = {}
    for pids in by_ns.values():
        for upper in _overlay_uppers(pids[0]):  # the root's, and one per other data mount
            if upper.startswith(inside) and "/roots/" in upper:
                out.setdefault(_node_of(upper), set()).update(pids)
    return {k: sorted(v) for k, v in out.items()}


def _ns(pid: str) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/mnt")
    except OSError:
        return None


def _overlay_uppers(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/mountinfo") as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        _, _, after = line.partition(" - ")
        parts = after.split(" ", 2)
        if len(parts) == 3 and parts[0] == "overlay":
            for opt in _split_opts(parts[2]):
                if opt.startswith("upperdir="):
                    out.append(_unescape(opt[len("upperdir="):]))
    return out


def _split_opts(text: str) -> list[str]:
    out, cur, esc = [], "", False
    for ch in text:
        if esc:
            cur += ch
            esc = False
        elif ch == "\\":
            cur += ch
            esc = True
        elif ch == ",":
            out.append(cur)
            cur = ""
        else:
            cur += ch
    out.append(cur)
    return out


def _unescape(value: str) -> str:
    value = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), value)
    return re.sub(r"\\(.)", r"\1", value)


def _node_of(upper: str) -> str:
    """`.../jobs/<id>/roots/<task>-<rank>` of an upper layer (its root's or a mount's)."""
    head, _, tail = upper.partition("/roots/")
    return f"{head}/roots/{tail.split('/', 1)[0]}"


def job_and_node(root: str) -> tuple[int, str] | None:
    """(job id, `<task>-<rank>`) of a node root path."""
    parts = root.rstrip("/").split("/")
    try:
        return int(parts[-3]), parts[-1]
    except (IndexError, ValueError):
        return None
