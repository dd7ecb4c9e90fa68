"""Where things live in a state directory (one function per kind of file, nothing else).

The floor every other part stands on: the controller, the backends, the log readers and the
doctor all find files through here, and this imports nothing of them."""

from __future__ import annotations

from pathlib import Path


def job_dir(home: Path, job_id: int) -> Path:
    return home / "jobs" / str(job_id)


def log_path(home: Path, job_id: int, task: str, rank: int, attempt: int = 1) -> Path:
    """One file per node (setup then run output, in order); later attempts get their own."""
    suffix = "" if attempt == 1 else f".attempt{attempt}"
    return job_dir(home, job_id) / "logs" / f"{task}-{rank}{suffix}.log"


def node_dir(home: Path, job_id: int, task: str, rank: int) -> Path:
    """A node's own working directory when its task has no workdir (like a fresh VM's home)."""
    return job_dir(home, job_id) / "work" / f"{task}-{rank}"


def status_path(home: Path, job_id: int, task_idx: int, rank: int, phase: str, attempt: int) -> Path:
    return job_dir(home, job_id) / "nodes" / f"{task_idx}-{rank}.{phase}.{attempt}.status"


def topology_path(home: Path, job_id: int) -> Path:
    return job_dir(home, job_id) / "topology.json"


def lock_path(home: Path) -> Path:
    return home / "controller.lock"


def socket_path(home: Path) -> Path:
    return home / "controller.sock"


def pid_path(home: Path) -> Path:
    return home / "controller.pid"


def controller_log(home: Path) -> Path:
    return home / "controller.log"
