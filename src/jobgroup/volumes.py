"""Named local volumes: directories under `$JOBGROUP_HOME/volumes`, created on first use by the
nodes that name them (`{name: N, sub_path: D}` mounts the folder D of volume N) and kept after
their jobs, until `jobgroup volume rm`. Volumes made for a job (`{size: ...}`) are not named
volumes: they live with their job and are not listed here (`backends/local/mounts.py`)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import msgspec

from jobgroup.backends.local.mounts import VOLUME_NAME, volume_dir, volume_names, volumes_root
from jobgroup.errors import JobGroupError, NotFound, UsageError
from jobgroup.spec import load
from jobgroup.state.store import Store


class VolumeInUse(JobGroupError):
    """A volume that running jobs still use cannot be removed (exit 1)."""

    exit_code = 1


class VolumeInfo(msgspec.Struct, kw_only=True):
    name: str
    path: str
    size_bytes: int
    used_by: list[int]  # ids of jobs that have not ended and mount it


def _size(path: Path) -> int:
    total = 0
    for root, dirs, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(root, f)).st_size
            except OSError:
                pass
    return total


def users(store: Store) -> dict[str, list[int]]:
    """Volume name -> ids of active jobs whose spec mounts it."""
    out: dict[str, list[int]] = {}
    for job in store.jobs(active_only=True):
        group = load(job.spec)
        names: set[str] = set()
        for t in group.tasks:  # `{name: N, sub_path: D}` uses N; `{size: ...}` none of them
            names.update(volume_names(t))
        for n in names:
            out.setdefault(n, []).append(job.id)
    return out


def list_volumes(store: Store) -> list[VolumeInfo]:
    root = volumes_root(store.home)
    used = users(store)
    names = set(used)
    if root.is_dir():
        names.update(p.name for p in root.iterdir() if p.is_dir())
    out = []
    for n in sorted(names):
        path = root / n
        out.append(VolumeInfo(name=n, path=str(path),
                              size_bytes=_size(path) if path.is_dir() else 0,
                              used_by=sorted(used.get(n, []))))
    return out


def create_volume(home: Path, name: str) -> Path:
    """Create local volume `name` (an empty folder; nodes also create it on first use)."""
    if not VOLUME_NAME.match(name) or name in (".", ".."):
        raise UsageError(f"invalid volume name {name!r} (letters, digits, '.', '_', '-')")
    path = volume_dir(home, name)
    if path.is_dir():
        raise UsageError(f"volume {name!r} already exists ({path})")
    path.mkdir(parents=True)
    return path


def remove_volume(store: Store, name: str) -> Path:
    """Delete volume `name` and its data; refuses while a job that has not ended uses it."""
    if not VOLUME_NAME.match(name) or name in (".", ".."):
        raise UsageError(f"invalid volume name {name!r}")
    path = volume_dir(store.home, name)
    if not path.is_dir():
        existing = [v.name for v in list_volumes(store)]
        hint = f" Volumes: {', '.join(existing)}." if existing else " There are no volumes."
        raise NotFound(f"no volume {name!r}.{hint}")
    jobs = users(store).get(name, [])
    if jobs:
        raise VolumeInUse(
            f"volume {name!r} is in use by job(s) {', '.join(map(str, jobs))}; cancel them or "
            "wait for them to end first"
        )
    shutil.rmtree(path)
    return path
