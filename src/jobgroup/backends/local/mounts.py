"""volumes and file_mounts of a task, as local bind mounts.

`volumes:` takes SkyPilot's three forms (`sky/task.py`, `resolve_and_validate_volumes`):
- `/ckpt: NAME`: the named volume, a directory under the state directory (`volumes/NAME`),
  created on first use and kept after the job; every node naming it sees the same directory
  (read-write) at that path.
- `/ckpt: {name: NAME, sub_path: DIR}`: the folder DIR of volume NAME (SkyPilot mounts the
  claim's subPath), created in the volume on first use. DIR is relative, of letters, digits,
  '.', '/', '_' and '-' (SkyPilot's SUB_PATH_PATTERN), without '..'; it must stay inside the
  volume also through what is there already (a symbolic link a node left in the volume is not
  followed out of it). Launch refuses any other with the task and mount point.
- `/ckpt: {size: 10Gi, labels: ..., type: ..., config: ...}`: a volume made for the job
  (SkyPilot: `is_ephemeral`). SkyPilot makes one PersistentVolumeClaim per cluster and mount
  path (`sky/provision/volume.py`, named after both in `backend_utils`), mounts it in every pod
  of that cluster and deletes it when the cluster is torn down; in a job group each task is a
  cluster. Here: one fresh directory per job, task and mount path
  (`jobs/<id>/ephemeral/<task>/<path>`), shared by the task's nodes like that claim (SkyPilot's
  default access mode ReadWriteOnce refuses a multi-node task, ReadWriteMany shares it: sharing
  is the form that runs), created when the task's first node starts and removed at the job's
  end (`release`, from the backend's cleanup). Not a tmpfs: a node's setup and run are two
  mount namespaces, so a tmpfs would lose what setup wrote before run (and count against RAM,
  where a claim is disk). `size` is not enforced (an ordinary file system has no per-directory
  quota; the claim's size is a request, not a promise that less is refused); `labels`, `type`
  and `config` describe the Kubernetes claim and mean nothing here.

`file_mounts:` destinations:
- `/abs/path` as written; `~/path` in the node's home (`$HOME` of the node: at level
  `namespaces` in its own root, so what it writes there stays with it; at level `user`
  bubblewrap makes a missing mount point inside the node's view only);
- a relative destination (`relative_dir: ./src`, `./bench.py: ...`) is where SkyPilot puts it:
  under `~/sky_workdir`, the remote workdir `run` starts in (`cloud_vm_ray_backend.py`: `if not
  os.path.isabs(dst) and not dst.startswith('~/'): dst = f'{SKY_REMOTE_WORKDIR}/{dst}'`; its
  `examples/using_file_mounts.yaml`), so `ls relative_dir` works in `run`. Locally that is the
  node's working directory: the task's workdir (your folder itself, shared with the host, not
  a copy), else the node's own directory in the state directory. `~/sky_workdir/...`
  destinations land there too. A bind needs an existing mount point: where the destination is
  missing, jobgroup creates it (an empty folder, or an empty file for a file) just before the
  node starts, records it (`jobs/<id>/mountpoints`) and removes it at the job's end when it is
  still empty and no other job of this state directory mounts there: your folder is left as it
  was. One that leads up out of it lands where SkyPilot puts it: `../x` in the home (`~/x`);
  one that is the working directory itself (`.`) or leaves the home is refused at launch;
- the source: a local file or directory (made absolute at launch, against the current directory
  as SkyPilot does: `relpaths.py`) mounted read-only; the mapping form `{name: NAME}` (a bucket
  by name) maps to the local volume NAME; a `source` that is a cloud URL (s3://, gs://, ...)
  cannot be honoured on this machine and is refused at launch.

At level `none` (no mount namespaces) volumes and file_mounts are refused at launch: a bind
cannot be made without changing the machine's own directories (`/ckpt`, your home).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from jobgroup.backends.local.isolation import NONE, Bind
from jobgroup.spec import destinations
from jobgroup.spec.destinations import home_part, relative_part
from jobgroup.spec.models import JobGroup, Task

VOLUME_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
SUB_PATH = re.compile(r"^[a-zA-Z0-9._-][a-zA-Z0-9./_-]*$")  # SkyPilot's SUB_PATH_PATTERN
_URL = re.compile(r"^[a-z][a-z0-9+.-]*://", re.I)


def volumes_root(home: Path) -> Path:
    return home / "volumes"


def volume_dir(home: Path, name: str) -> Path:
    if not VOLUME_NAME.match(name) or name in (".", ".."):
        raise ValueError(f"invalid volume name {name!r}")
    return volumes_root(home) / name


def ephemeral_root(home: Path, job_id: int) -> Path:
    """Where the volumes made for job `job_id` live (removed at its end)."""
    return home / "jobs" / str(job_id) / "ephemeral"


def ephemeral_dir(home: Path, job_id: int, task: str, dst: str) -> Path:
    """The directory of the volume made for `task` of job `job_id` at mount path `dst`."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", dst).strip("-.")[:60] or "root"
    digest = hashlib.sha256(dst.encode()).hexdigest()[:8]
    return ephemeral_root(home, job_id) / (task or "task") / f"{slug}-{digest}"


# ---- what a `volumes` entry is ------------------------------------------------------------------

@dataclass(frozen=True)
class Named:
    """A named volume, or the folder `sub_path` of it."""

    name: str
    sub_path: str | None = None


@dataclass(frozen=True)
class Ephemeral:
    """A volume made for the job (SkyPilot's `{size: ...}` form)."""

    size: str


def volume_entry(task: Task, dst: str, spec: object) -> Named | Ephemeral | str:
    """What `volumes: {dst: spec}` of `task` is, or why it cannot be mounted (a message that
    names the task and the mount point). SkyPilot's rule: a mapping with `size` is a volume
    made for the job (a `name` beside it is ignored), one with `name` an existing volume."""
    where = f"task '{task.name}': volumes {dst}"
    if isinstance(spec, str):
        if not VOLUME_NAME.match(spec) or spec in (".", ".."):
            return (f"{where}: {spec!r} cannot name a local volume (letters, digits, '.', '_', "
                    "'-'; starting with a letter or digit)")
        return Named(spec)
    if not isinstance(spec, dict):
        return f"{where}: expected a volume name or a mapping, not {spec!r}"
    if "size" in spec:
        size = spec["size"]
        from jobgroup.spec.resources import parse_memory

        try:
            q = parse_memory(size)
        except ValueError:
            q = None
        if q is None or q.at_least or q.value <= 0:
            return f"{where}: size {size!r}: give a size such as 10Gi, 100GB or 1TB"
        return Ephemeral(str(size))
    if "name" not in spec:
        return (f"{where}: a volume mapping needs 'name' (an existing volume, with an optional "
                "'sub_path') or 'size' (a volume made for this job)")
    name = spec["name"]
    if not isinstance(name, str) or not VOLUME_NAME.match(name) or name in (".", ".."):
        return (f"{where}: name {name!r} cannot name a local volume (letters, digits, '.', '_', "
                "'-'; starting with a letter or digit)")
    sub = spec.get("sub_path")
    if sub is None:
        return Named(name)
    if not isinstance(sub, str) or not SUB_PATH.match(sub) or ".." in sub.split("/"):
        return (f"{where}: sub_path {sub!r} must be a relative path inside the volume (letters, "
                "digits, '.', '/', '_' and '-'; not starting with '/', no '..')")
    sub = os.path.normpath(sub)
    return Named(name, None if sub == "." else sub)


def _inside(path: str, top: str) -> bool:
    return path == top or path.startswith(top.rstrip("/") + "/")


def named_dir(home: Path, vol: Named) -> Path:
    """The directory a Named entry mounts, created (with its volume) when missing. Raises
    ValueError when `sub_path` leads out of the volume through a symbolic link in it."""
    vdir = volume_dir(home, vol.name)
    vdir.mkdir(parents=True, exist_ok=True)
    if vol.sub_path is None:
        return vdir
    target = vdir / vol.sub_path
    top = os.path.realpath(vdir)
    if not _inside(os.path.realpath(target), top):
        raise ValueError(f"sub_path {vol.sub_path!r} leads out of volume {vol.name!r} "
                         "(through a symbolic link in it)")
    target.mkdir(parents=True, exist_ok=True)
    if not _inside(os.path.realpath(target), top):  # changed meanwhile: refuse still
        raise ValueError(f"sub_path {vol.sub_path!r} leads out of volume {vol.name!r}")
    return target


def volume_names(task: Task) -> set[str]:
    """The named volumes `task` mounts (`volumes` and bucket-by-name `file_mounts`)."""
    names: set[str] = set()
    for dst, spec in task.volumes.items():
        got = volume_entry(task, dst, spec)
        if isinstance(got, Named):
            names.add(got.name)
    for spec in task.file_mounts.values():
        if isinstance(spec, dict) and not spec.get("source") and isinstance(spec.get("name"), str):
            names.add(spec["name"])
    return names


# ---- file_mounts ------------------------------------------------------------------------------

def _mount_source(task: Task, dst: str, spec: object, base_dir: Path) -> tuple[str, str] | str:
    """('volume', name) / ('path', abs path), or a problem (str)."""
    if isinstance(spec, str):
        if _URL.match(spec):
            return (f"task '{task.name}': file_mounts {dst}: {spec} is remote storage, which the "
                    "local backend cannot reach; use a local path")
        p = Path(os.path.expanduser(spec))
        p = p if p.is_absolute() else base_dir / p
        if not p.exists():
            return f"task '{task.name}': file_mounts {dst}: {p} does not exist"
        return ("path", str(p))
    if isinstance(spec, dict):
        source, name = spec.get("source"), spec.get("name")
        if isinstance(source, str) and source:
            if _URL.match(source):
                return (f"task '{task.name}': file_mounts {dst}: source {source} is remote "
                        "storage, which the local backend cannot reach")
            return _mount_source(task, dst, source, base_dir)
        if isinstance(name, str) and VOLUME_NAME.match(name):
            return ("volume", name)
        return (f"task '{task.name}': file_mounts {dst}: give a local `source` or a bucket "
                "`name` (letters, digits, '.', '_', '-')")
    return f"task '{task.name}': file_mounts {dst}: expected a path or a mapping"


def _destination_problem(task: Task, dst: str) -> str | None:
    why = destinations.problem(dst)
    return None if why is None else f"task '{task.name}': file_mounts {dst}: {why}"


def problems(group: JobGroup, base_dir: Path, level: str, home: Path | None = None
             ) -> list[str]:
    """What cannot be mounted for this group on this machine (empty: fine). `home`: the state
    directory, whose volumes are looked at (a `sub_path` through a symbolic link out of its
    volume); default `$JOBGROUP_HOME` or ~/.jobgroup."""
    out: list[str] = []
    from jobgroup.backends.local.rootfs import SHM_VARIABLE, shm_problem

    for t in group.tasks:
        shm = t.envs.get(SHM_VARIABLE)
        if isinstance(shm, str) and shm_problem(shm):
            out.append(f"task '{t.name}': envs {shm_problem(shm)}")
        if level == NONE and (t.volumes or t.file_mounts):
            relative = [d for d in t.file_mounts if not d.startswith("/")]
            extra = (f" (relative destinations such as {relative[0]} too: they would be "
                     "created in your own folders)") if relative else ""
            out.append(f"task '{t.name}': volumes and file_mounts need mount namespaces "
                       f"(bubblewrap), which this machine does not offer{extra}")
            continue
        for dst, spec in t.volumes.items():
            if not dst.startswith(("/", "~")):
                out.append(f"task '{t.name}': volumes {dst}: the mount path must be absolute "
                           "(start with '/' or '~')")
                continue
            got = volume_entry(t, dst, spec)
            if isinstance(got, str):
                out.append(got)
            elif isinstance(got, Named) and got.sub_path:
                vdir = volume_dir(home or _default_home(), got.name)
                if vdir.is_dir() and not _inside(os.path.realpath(vdir / got.sub_path),
                                                 os.path.realpath(vdir)):
                    out.append(f"task '{t.name}': volumes {dst}: sub_path {got.sub_path!r} "
                               f"leads out of volume {got.name!r} (through a symbolic link in "
                               "it)")
        for dst, spec in t.file_mounts.items():
            why = _destination_problem(t, dst)
            if why:
                out.append(why)
                continue
            got = _mount_source(t, dst, spec, base_dir)
            if isinstance(got, str):
                out.append(got)
    return out


def _default_home() -> Path:
    from jobgroup.home import default_home

    return default_home()


# ---- binds of a node --------------------------------------------------------------------------

def node_binds(task: Task, base_dir: Path, home: Path, user_home: str, *,
               job_id: int | None = None, cwd: str | None = None) -> list[Bind]:
    """The binds of one node of `task` of job `job_id` whose working directory is `cwd`
    (volume directories and missing mount points below `cwd` are created here). Relative
    destinations need `cwd` (default: the task's workdir); without one they are left out (a
    readiness probe's view). Volumes made for the job need `job_id`. Raises ValueError with
    the task and mount point for what cannot be mounted."""
    binds: list[Bind] = []
    for dst, spec in task.volumes.items():
        got = volume_entry(task, dst, spec)
        if isinstance(got, str):
            raise ValueError(got)
        if isinstance(got, Named):
            try:
                vdir = named_dir(home, got)
            except ValueError as e:
                raise ValueError(f"task '{task.name}': volumes {dst}: {e}") from None
        else:
            if job_id is None:
                raise ValueError(f"task '{task.name}': volumes {dst}: a volume made for the job "
                                 "is not supported here")
            vdir = ephemeral_dir(home, job_id, task.name or "", dst)
            vdir.mkdir(parents=True, exist_ok=True)
        binds.append(Bind(str(vdir), _dst(dst, user_home)))
    if cwd is None and isinstance(task.workdir, str) and os.path.isabs(task.workdir):
        cwd = task.workdir
    for dst, spec in task.file_mounts.items():
        why = _destination_problem(task, dst)
        if why:
            raise ValueError(why)
        got = _mount_source(task, dst, spec, base_dir)
        if isinstance(got, str):
            raise ValueError(got)
        kind, value = got
        if kind == "volume":
            src = volume_dir(home, value)
            src.mkdir(parents=True, exist_ok=True)
            bind = Bind(str(src), "")
        else:
            bind = Bind(value, "", readonly=True)
        rel = relative_part(dst)
        if rel is None:
            target = _dst(home_part(dst) or dst, user_home)
        elif cwd is None:
            continue  # a view without a working directory (see above)
        else:
            target = os.path.join(os.path.normpath(cwd), rel)
            _mount_point(home, job_id, target, is_dir=os.path.isdir(bind.src))
        binds.append(Bind(bind.src, target, bind.readonly))
    # Parents before children, so a mount inside another mount lands on top of it.
    return sorted(binds, key=lambda b: b.dst.count("/"))


def _dst(dst: str, user_home: str) -> str:
    if dst.startswith("~"):
        dst = user_home + dst[1:]
    return os.path.normpath(dst)


# ---- mount points made in a working directory, and what a job leaves ---------------------------

def _records(home: Path) -> Path:
    return home / "jobs"


def _record_path(home: Path, job_id: int) -> Path:
    return _records(home) / str(job_id) / "mountpoints"


def _locked(home: Path):
    _records(home).mkdir(parents=True, exist_ok=True)
    fd = os.open(_records(home) / ".mountpoints.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
                 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def _mount_point(home: Path, job_id: int | None, target: str, *, is_dir: bool) -> None:
    """Make `target` exist (an empty folder or file, and its missing parents) and record, for
    job `job_id`, what was created (`C path`) and what is mounted on (`U path`)."""
    fd = _locked(home)
    try:
        made: list[str] = []
        missing: list[str] = []
        p = target
        while not os.path.lexists(p):
            missing.append(p)
            p = os.path.dirname(p)
        for i, path in enumerate(reversed(missing)):
            last = i == len(missing) - 1
            if last and not is_dir:
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                                 0o644))
            else:
                os.mkdir(path, 0o755)
            made.append(path)
        if job_id is None:
            return
        lines = [f"C\t{p}\n" for p in made] + ([f"U\t{target}\n"] if target not in made else [])
        record = _record_path(home, job_id)
        known = set(_read(record))
        with open(record, "a") as f:
            f.writelines(line for line in lines if tuple(line.rstrip("\n").split("\t", 1))
                         not in known)
    except OSError as e:
        raise ValueError(f"cannot create the mount point {target}: {e.strerror}") from None
    finally:
        os.close(fd)


def _read(record: Path) -> list[tuple[str, str]]:
    try:
        text = record.read_text()
    except OSError:
        return []
    return [tuple(line.split("\t", 1)) for line in text.splitlines()  # type: ignore[misc]
            if line[:2] in ("C\t", "U\t")]


def release(home: Path, job_id: int) -> None:
    """At the end of job `job_id`: remove its volumes made for the job, and the mount points
    it created in working directories that are still empty and that no other job of this state
    directory mounts on (those are handed to that job, which removes them at its end).
    Idempotent."""
    shutil.rmtree(ephemeral_root(home, job_id), ignore_errors=True)
    record = _record_path(home, job_id)
    if not record.exists():
        return
    fd = _locked(home)
    try:
        mine = [p for kind, p in _read(record) if kind == "C"]
        others: dict[Path, list[str]] = {}
        for other in _records(home).glob("*/mountpoints"):
            if other != record:
                others[other] = [p for _, p in _read(other)]
        for path in sorted(set(mine), key=lambda p: p.count("/"), reverse=True):
            heir = next((r for r, paths in others.items()
                         if any(_inside(p, path) for p in paths)), None)
            if heir is not None:
                with open(heir, "a") as f:
                    f.write(f"C\t{path}\n")
                continue
            try:
                st = os.lstat(path)
                if os.path.isdir(path) and not os.path.islink(path):
                    os.rmdir(path)  # fails when not empty: then kept
                elif st.st_size == 0 and os.path.isfile(path):
                    os.unlink(path)
            except OSError:
                pass
        record.unlink(missing_ok=True)
    finally:
        os.close(fd)
