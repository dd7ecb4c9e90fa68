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


def restart_task(store: Store, job_id: int, idx: int, reason: str, *, error: bool) -> bool:
    """Move task `idx` to RECOVERING and count one more restart of it (and of its error budget
    when `error`) in one transaction, so a controller killed at any moment neither counts a
    restart twice nor loses one. True if it changed (False: already RECOVERING or terminal)."""
    return _transition(store, "tasks", "job_id=? AND idx=?", (job_id, idx), job_id, idx, "task",
                       Status.RECOVERING, reason,
                       also=("restarts=restarts+1", "error_restarts=error_restarts+?"),
                       also_vals=(int(error),))


def restart_group(store: Store, job_id: int, reason: str,
                  task_reason: str = "the group restarts") -> bool:
    """Move job `job_id` to RECOVERING counting one more group restart, and with it every task
    that is neither RECOVERING nor ended (each restart counted, not against its error budget),
    in one transaction: a controller killed at any moment neither counts the group's restart
    twice nor leaves the group RECOVERING with tasks that never restart."""
    now = time.time()
    with store.write() as c:
        if not _transition_in(c, now, "jobs", "id=?", (job_id,), job_id, None, "job",
                              Status.RECOVERING, reason, ("group_restarts=group_restarts+1",)):
            return False
        for (idx,) in c.execute("SELECT idx FROM tasks WHERE job_id=? ORDER BY idx",
                                (job_id,)).fetchall():
            _transition_in(c, now, "tasks", "job_id=? AND idx=?", (job_id, idx), job_id, idx,
                           "task", Status.RECOVERING, task_reason, ("restarts=restarts+1",))
    return True


def _transition(store: Store, table: str, where: str, key: tuple, job_id: int,
                task_idx: int | None, what: str, new: Status, reason: str,
                also: tuple[str, ...] = (), also_vals: tuple = ()) -> bool:
    with store.write() as c:
        return _transition_in(c, time.time(), table, where, key, job_id, task_idx, what, new,
                              reason, also, also_vals)


def _transition_in(c, now: float, table: str, where: str, key: tuple, job_id: int,
                   task_idx: int | None, what: str, new: Status, reason: str,
                   also: tuple[str, ...] = (), also_vals: tuple = ()) -> bool:
    """The transition inside the open write transaction `c`; `also`: more SET clauses applied
    only when it happens (a count that must go with it)."""
    row = c.execute(f"SELECT status, started_at FROM {table} WHERE {where}", key).fetchone()
    if row is None:
        raise KeyError(key)
    old = Status(row["status"])
    if old.terminal or old == new:
        return False
    sets, vals = ["status=?", "reason=?", *also], [new.value, reason, *also_vals]
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
