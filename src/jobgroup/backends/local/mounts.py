"""volumes and file_mounts of a task, as local bind mounts.

- `volumes: {/checkpoints: my-volume}`: a named volume is a directory under the state directory
  (`volumes/<name>`), created on first use and kept after the job; every node naming it sees the
  same directory (read-write) at that path.
- `file_mounts: {/code: ./src}`: a local file or directory (relative to the YAML file's folder)
  mounted read-only at that path. The mapping form `{name: NAME, mode: MOUNT}` (a bucket by
  name) maps to the local volume NAME; a `source` that is a cloud URL (s3://, gs://, ...) cannot
  be honoured on this machine and is rejected at launch.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from jobgroup.backends.local.isolation import NONE, Bind
from jobgroup.spec.models import JobGroup, Task

VOLUME_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_URL = re.compile(r"^[a-z][a-z0-9+.-]*://", re.I)


def volumes_root(home: Path) -> Path:
    return home / "volumes"


def volume_dir(home: Path, name: str) -> Path:
    if not VOLUME_NAME.match(name) or name in (".", ".."):
        raise ValueError(f"invalid volume name {name!r}")
    return volumes_root(home) / name


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


def problems(group: JobGroup, base_dir: Path, level: str) -> list[str]:
    """What cannot be mounted for this group on this machine (empty: fine)."""
    out: list[str] = []
    from jobgroup.backends.local.rootfs import SHM_VARIABLE, shm_problem

    for t in group.tasks:
        shm = t.envs.get(SHM_VARIABLE)
        if isinstance(shm, str) and shm_problem(shm):
            out.append(f"task '{t.name}': envs {shm_problem(shm)}")
        if level == NONE and (t.volumes or t.file_mounts):
            out.append(f"task '{t.name}': volumes and file_mounts need mount namespaces "
                       "(bubblewrap), which this machine does not offer")
            continue
        for dst, spec in t.volumes.items():
            if not isinstance(spec, str) or not VOLUME_NAME.match(spec) or spec in (".", ".."):
                out.append(f"task '{t.name}': volumes {dst}: expected a volume name (letters, "
                           "digits, '.', '_', '-')")
            elif not dst.startswith("/"):
                out.append(f"task '{t.name}': volumes {dst}: the mount path must be absolute")
        for dst, spec in t.file_mounts.items():
            if not dst.startswith("/") and not dst.startswith("~"):
                out.append(f"task '{t.name}': file_mounts {dst}: the mount path must be absolute")
                continue
            got = _mount_source(t, dst, spec, base_dir)
            if isinstance(got, str):
                out.append(got)
    return out


def node_binds(task: Task, base_dir: Path, home: Path, user_home: str) -> list[Bind]:
    """The binds of one node of `task` (volume directories are created here)."""
    binds: list[Bind] = []
    for dst, name in task.volumes.items():
        vdir = volume_dir(home, str(name))
        vdir.mkdir(parents=True, exist_ok=True)
        binds.append(Bind(str(vdir), _dst(dst, user_home)))
    for dst, spec in task.file_mounts.items():
        got = _mount_source(task, dst, spec, base_dir)
        if isinstance(got, str):
            raise ValueError(got)
        kind, value = got
        if kind == "volume":
            vdir = volume_dir(home, value)
            vdir.mkdir(parents=True, exist_ok=True)
            binds.append(Bind(str(vdir), _dst(dst, user_home)))
        else:
            binds.append(Bind(value, _dst(dst, user_home), readonly=True))
    # Parents before children, so a mount inside another mount lands on top of it.
    return sorted(binds, key=lambda b: b.dst.count("/"))


def _dst(dst: str, user_home: str) -> str:
    if dst.startswith("~"):
        dst = user_home + dst[1:]
    return os.path.normpath(dst)
