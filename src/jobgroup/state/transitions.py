"""The one place where job and task statuses change.

Contract: a status never leaves a terminal state (the call is refused and returns False);
every change is recorded as an event with its time and reason; setting the status a record
already has is a quiet no-op (False). Timestamps (started_at / ended_at) follow the status.
"""

from __future__ import annotations

import time

from jobgroup.state.status import Status
from jobgroup.state.store import Store

_STARTED = frozenset({Status.STARTING, Status.RUNNING})


def set_job_status(store: Store, job_id: int, new: Status, reason: str = "") -> bool:
    """Move job `job_id` to `new`; True if it changed."""
    return _transition(store, "jobs", "id=?", (job_id,), job_id, None, "job", new, reason)


def set_task_status(store: Store, job_id: int, idx: int, new: Status, reason: str = "") -> bool:
    """Move task `idx` of job `job_id` to `new`; True if it changed."""
    return _transition(store, "tasks", "job_id=? AND idx=?", (job_id, idx), job_id, idx, "task",
                       new, reason)


def _transition(store: Store, table: str, where: str, key: tuple, job_id: int,
                task_idx: int | None, what: str, new: Status, reason: str) -> bool:
    now = time.time()
    with store.write() as c:
        row = c.execute(f"SELECT status, started_at FROM {table} WHERE {where}", key).fetchone()
        if row is None:
            raise KeyError(key)
        old = Status(row["status"])
        if old.terminal or old == new:
            return False
        sets, vals = ["status=?", "reason=?"], [new.value, reason]
        if new in _STARTED and row["started_at"] is None:
            sets.append("started_at=?")
            vals.append(now)
        if new.terminal:
            sets.append("ended_at=?")
            vals.append(now)
        c.execute(f"UPDATE {table} SET {', '.join(sets)} WHERE {where}", (*vals, *key))
        c.execute(
            "INSERT INTO events(job_id, task_idx, at, kind, message) VALUES (?,?,?,?,?)",
            (job_id, task_idx, now, f"{what} {old.value} -> {new.value}", reason),
        )
    return True


def set_pending_reason(store: Store, job_id: int, reason: str) -> bool:
    """Why a PENDING job waits (shown by `queue`); an event when the reason changes."""
    with store.write() as c:
        row = c.execute("SELECT status, reason FROM jobs WHERE id=?", (job_id,)).fetchone()
        if row is None or Status(row["status"]) != Status.PENDING or row["reason"] == reason:
            return False
        c.execute("UPDATE jobs SET reason=? WHERE id=?", (reason, job_id))
        c.execute(
            "INSERT INTO events(job_id, at, kind, message) VALUES (?,?,?,?)",
            (job_id, time.time(), "waiting", reason),
        )
    return True
