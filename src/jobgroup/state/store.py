"""The SQLite store: the single source of truth for jobs, tasks, nodes and events.

Contract:
- One file `state.db` in the state directory, WAL mode, so readers (`queue`, `logs`) never wait
  for the controller and the controller never waits for readers.
- Writers use `BEGIN IMMEDIATE` and a long busy timeout: 20 concurrent `launch` commands queue up
  on the write lock instead of failing with "database is locked".
- Status columns are changed only through `jobgroup.state.transitions` (one place, with events);
  everything else here writes plain facts (handles, exit codes, timestamps, intents).
- A node's `handle` is its backend's opaque JSON (what `Backend.start` returned); the store
  keeps it as it is. State directories made before handles existed stored a local shim's
  `pid`/`pid_start`: such rows read as the local handle `{"pid": P, "start": S}`.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping
from urllib.parse import quote

import msgspec

from jobgroup.errors import StateUnwritable
from jobgroup.home import default_home  # noqa: F401  (re-exported)
from jobgroup.state.options import (
    CONTROLLER_KEYS, LAUNCH_KEYS, ControllerFields, LaunchOptions, controller_of, facts_of,
    launch_of,
)
from jobgroup.state.status import Phase, Status

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    status TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    execution TEXT NOT NULL DEFAULT 'parallel',
    submitted_at REAL NOT NULL,
    started_at REAL,
    ended_at REAL,
    spec TEXT NOT NULL,
    base_dir TEXT NOT NULL,
    options TEXT NOT NULL DEFAULT '{}',
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    outcome TEXT,
    outcome_reason TEXT NOT NULL DEFAULT '',
    primaries_done_at REAL,
    isolation TEXT NOT NULL DEFAULT '',
    group_restarts INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs(status);
CREATE TABLE IF NOT EXISTS tasks (
    job_id INTEGER NOT NULL REFERENCES jobs(id),
    idx INTEGER NOT NULL,
    name TEXT NOT NULL,
    status TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    num_nodes INTEGER NOT NULL,
    is_primary INTEGER NOT NULL,
    restarts INTEGER NOT NULL DEFAULT 0,
    error_restarts INTEGER NOT NULL DEFAULT 0,
    started_at REAL,
    ended_at REAL,
    PRIMARY KEY (job_id, idx)
);
CREATE TABLE IF NOT EXISTS nodes (
    job_id INTEGER NOT NULL,
    task_idx INTEGER NOT NULL,
    rank INTEGER NOT NULL,
    phase TEXT NOT NULL DEFAULT 'waiting',
    handle TEXT,
    exit_code INTEGER,
    signal INTEGER,
    stopped INTEGER NOT NULL DEFAULT 0,
    stop_requested_at REAL,
    started_at REAL,
    ended_at REAL,
    address TEXT NOT NULL DEFAULT '',
    hostname TEXT NOT NULL DEFAULT '',
    attempt INTEGER NOT NULL DEFAULT 1,
    ended_phase TEXT,
    ready_at REAL,
    probe_failed TEXT,
    note TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (job_id, task_idx, rank)
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id INTEGER NOT NULL,
    task_idx INTEGER,
    rank INTEGER,
    at REAL NOT NULL,
    kind TEXT NOT NULL,
    message TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS events_job ON events(job_id, id);
"""


class JobRec(msgspec.Struct, kw_only=True):
    id: int
    name: str
    status: Status
    reason: str
    execution: str
    submitted_at: float
    started_at: float | None
    ended_at: float | None
    spec: str
    base_dir: str
    options: dict[str, Any]
    cancel_requested: bool
    outcome: Status | None
    outcome_reason: str
    primaries_done_at: float | None
    isolation: str = ""
    group_restarts: int = 0

    # `options` in its typed parts, each with one owner (`state.options`).
    @property
    def launch(self) -> LaunchOptions:
        return launch_of(self.options)

    @property
    def controller(self) -> ControllerFields:
        return controller_of(self.options)

    @property
    def facts(self) -> dict[str, Any]:
        return facts_of(self.options)


class TaskRec(msgspec.Struct, kw_only=True):
    job_id: int
    idx: int
    name: str
    status: Status
    reason: str
    num_nodes: int
    is_primary: bool
    restarts: int
    started_at: float | None
    ended_at: float | None
    error_restarts: int = 0


class NodeRec(msgspec.Struct, kw_only=True):
    job_id: int
    task_idx: int
    rank: int
    phase: Phase
    handle: dict[str, Any] | None  # the backend's handle of the phase it runs (None: none yet)
    exit_code: int | None
    signal: int | None
    stopped: bool
    stop_requested_at: float | None
    started_at: float | None
    ended_at: float | None
    address: str
    hostname: str
    attempt: int
    ended_phase: Phase | None = None
    ready_at: float | None = None
    probe_failed: str | None = None
    note: str = ""

    @property
    def live(self) -> bool:
        """A shim runs (or may run) for this node."""
        return self.phase in (Phase.SETUP, Phase.RUN)

    @property
    def failed(self) -> bool:
        """Ended by itself with a non-zero code or a signal (not stopped by us)."""
        return self.phase == Phase.ENDED and not self.stopped and (
            self.signal is not None or (self.exit_code or 0) != 0
        )

    @property
    def preempted(self) -> bool:
        """Killed from outside (SIGKILL nobody here asked for: `kill -9`, the OOM killer, a
        vanished supervisor): a preemption, not an error of the program."""
        return self.failed and self.signal == 9

    @property
    def succeeded(self) -> bool:
        return (
            self.phase == Phase.ENDED and not self.stopped and self.signal is None
            and self.exit_code == 0 and self.ended_phase == Phase.RUN
        )

    @property
    def label(self) -> str:
        return f"rank {self.rank}"


class EventRec(msgspec.Struct, kw_only=True):
    id: int
    job_id: int
    task_idx: int | None
    rank: int | None
    at: float
    kind: str
    message: str


def _job(row: sqlite3.Row) -> JobRec:
    return JobRec(
        id=row["id"], name=row["name"], status=Status(row["status"]), reason=row["reason"],
        execution=row["execution"], submitted_at=row["submitted_at"],
        started_at=row["started_at"], ended_at=row["ended_at"], spec=row["spec"],
        base_dir=row["base_dir"], options=json.loads(row["options"]),
        cancel_requested=bool(row["cancel_requested"]),
        outcome=Status(row["outcome"]) if row["outcome"] else None,
        outcome_reason=row["outcome_reason"], primaries_done_at=row["primaries_done_at"],
        isolation=row["isolation"], group_restarts=row["group_restarts"],
    )


def _task(row: sqlite3.Row) -> TaskRec:
    return TaskRec(
        job_id=row["job_id"], idx=row["idx"], name=row["name"], status=Status(row["status"]),
        reason=row["reason"], num_nodes=row["num_nodes"], is_primary=bool(row["is_primary"]),
        restarts=row["restarts"], started_at=row["started_at"], ended_at=row["ended_at"],
        error_restarts=row["error_restarts"],
    )


def _handle(row: sqlite3.Row) -> dict[str, Any] | None:
    text = row["handle"]
    if text:
        return json.loads(text)
    try:  # a row of an older jobgroup (or written by one still running): a local shim's pid
        pid = row["pid"]
    except IndexError:  # a state directory made with handles: no such column
        return None
    return {"pid": pid, "start": row["pid_start"] or 0} if pid else None


def _node(row: sqlite3.Row) -> NodeRec:
    return NodeRec(
        job_id=row["job_id"], task_idx=row["task_idx"], rank=row["rank"],
        phase=Phase(row["phase"]), handle=_handle(row),
        exit_code=row["exit_code"], signal=row["signal"], stopped=bool(row["stopped"]),
        stop_requested_at=row["stop_requested_at"], started_at=row["started_at"],
        ended_at=row["ended_at"], address=row["address"], hostname=row["hostname"],
        attempt=row["attempt"],
        ended_phase=Phase(row["ended_phase"]) if row["ended_phase"] else None,
        ready_at=row["ready_at"], probe_failed=row["probe_failed"], note=row["note"],
    )


_NODE_FIELDS = frozenset(NodeRec.__struct_fields__) - {"job_id", "task_idx", "rank"}
_JOB_FACTS = frozenset({"started_at", "ended_at", "outcome", "outcome_reason",
                        "primaries_done_at", "isolation", "group_restarts"})


def _expected_columns() -> dict[str, list[tuple[str, str]]]:
    """{table: [(column, declaration)]} parsed from SCHEMA (constraints skipped)."""
    out: dict[str, list[tuple[str, str]]] = {}
    table = None
    for line in SCHEMA.splitlines():
        line = line.strip().rstrip(",")
        if line.startswith("CREATE TABLE"):
            table = line.split()[5]
            out[table] = []
        elif line.startswith(")"):
            table = None
        elif table and line and not line.startswith("PRIMARY KEY"):
            name, _, decl = line.partition(" ")
            # ALTER TABLE cannot add PRIMARY KEY/UNIQUE columns; new columns never are.
            out[table].append((name, decl.replace("PRIMARY KEY AUTOINCREMENT", "").strip()))
    return out




_UNWRITABLE = ("readonly", "read-only", "disk is full", "disk i/o error",
               "unable to open database file")


def unwritable_reason(home: Path, error: BaseException) -> str | None:
    """In the user's words, why `error` (from SQLite or the OS) means the state directory
    cannot be written — "disk full", "read-only file system", ... — or None when it is another
    kind of error."""
    import errno as E

    # The OS error may be the cause of a clearer one (e.g. a NetworkError "cannot open the
    # group network lock"): look down the chain.
    cause: BaseException | None = error
    while cause is not None and getattr(cause, "errno", None) is None:
        cause = cause.__cause__ or cause.__context__
    text = str(error).lower()
    errno_ = getattr(cause, "errno", None)

    if errno_ not in (E.ENOSPC, E.EDQUOT, E.EROFS, E.EIO) and not any(
            k in text for k in _UNWRITABLE):
        return None
    from jobgroup.home import state_problem

    problem = state_problem(home)
    if problem is not None:
        return problem
    if errno_ == E.EROFS:
        return "read-only file system"
    if errno_ in (E.ENOSPC, E.EDQUOT) or "full" in text:
        return "disk full"
    if errno_ == E.EIO or "i/o" in text:
        return "I/O error"
    return str(error)


def _tighten(db: Path) -> None:
    """The store's files are 0600 (they hold specs and environments), whatever umask made them
    (SQLite gives its -wal and -shm files the database file's mode)."""
    for path in (db, Path(f"{db}-wal"), Path(f"{db}-shm")):
        try:
            if os.stat(path).st_mode & 0o077:
                os.chmod(path, 0o600)
        except FileNotFoundError:
            pass


class Store:
    """A connection to the store of one state directory. Not shared between threads."""

    def __init__(self, home: Path | None = None) -> None:
        from jobgroup.home import ensure_private

        self.home = (home or default_home()).absolute()
        ensure_private(self.home)
        self.path = self.home / "state.db"
        # Why this store can only be read (a read-only or full file system), else None.
        self.read_only: str | None = None
        self._legacy_pid = False  # the nodes table has the pid columns of older jobgroups
        try:
            self.conn = self._open()
        except sqlite3.OperationalError as e:
            why = unwritable_reason(self.home, e)
            if why is None or not self.path.exists():
                raise StateUnwritable(f"cannot open the store {self.path}: {why or e}") from None
            # Reading a WAL database needs its -shm file, which a read-only file system may
            # not let SQLite create: read the file as it is (nothing can change it meanwhile).
            self.conn = sqlite3.connect(f"file:{quote(str(self.path))}?immutable=1", uri=True,
                                        isolation_level=None)
            self.conn.row_factory = sqlite3.Row
            self.read_only = why

    def _open(self) -> sqlite3.Connection:
        # isolation_level=None: we issue BEGIN IMMEDIATE ourselves for every write.
        conn = sqlite3.connect(self.path, timeout=60.0, isolation_level=None)
        try:
            _tighten(self.path)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA busy_timeout=60000")
            if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                # Persistent once set; must run outside a transaction (busy_timeout covers races).
                conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            tables = {r[0] for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type='table'")}
            if not set(_expected_columns()) <= tables:
                # One script, one transaction: concurrent first users serialise on the lock.
                conn.executescript(f"BEGIN IMMEDIATE;\n{SCHEMA}\nCOMMIT;")
            self.conn = conn
            self._migrate()
            # Made by a jobgroup that stored pids: writing a handle clears them (`record`).
            self._legacy_pid = "pid" in {r[1] for r in conn.execute("PRAGMA table_info(nodes)")}
        except BaseException:
            conn.close()
            raise
        return conn

    def _migrate(self) -> None:
        """Add the columns a newer jobgroup expects to a state directory made by an older one
        (CREATE TABLE IF NOT EXISTS never changes an existing table)."""
        missing = []
        for table, columns in _expected_columns().items():
            have = {r[1] for r in self.conn.execute(f"PRAGMA table_info({table})")}
            missing += [(table, name, decl) for name, decl in columns if name not in have]
        if not missing:
            return
        with self.write() as c:
            for table, name, decl in missing:
                have = {r[1] for r in c.execute(f"PRAGMA table_info({table})")}
                if name not in have:  # another process may have just added it
                    c.execute(f"ALTER TABLE {table} ADD COLUMN {name} {decl}")
                    if (table, name) == ("nodes", "handle") and "pid" in have:
                        # pids of local shims become their handles (`_handle` reads both)
                        rows = c.execute("SELECT rowid, pid, pid_start FROM nodes "
                                         "WHERE pid IS NOT NULL").fetchall()
                        c.executemany(
                            "UPDATE nodes SET handle=?, pid=NULL, pid_start=NULL WHERE rowid=?",
                            [(json.dumps({"pid": pid, "start": start or 0}), rowid)
                             for rowid, pid, start in rows])

    def close(self) -> None:
        self.conn.close()

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction (BEGIN IMMEDIATE ... COMMIT, ROLLBACK on error). Raises
        `StateUnwritable` (nothing written) when the state directory cannot take the write:
        a full disk, a read-only file system, an I/O error."""
        if self.read_only:
            raise StateUnwritable(f"cannot write state in {self.home}: {self.read_only}")
        try:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self.conn
            except BaseException:
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
                raise
            self.conn.execute("COMMIT")
        except sqlite3.OperationalError as e:
            why = unwritable_reason(self.home, e)
            if why is None:
                raise
            if self.conn.in_transaction:
                try:
                    self.conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
            raise StateUnwritable(f"cannot write state in {self.home}: {why}") from None

    # ---- jobs -------------------------------------------------------------------------------

    def create_job(
        self,
        *,
        name: str,
        execution: str,
        spec: str,
        base_dir: str,
        options: dict[str, Any],
        tasks: list[tuple[str, int, bool]],
    ) -> int:
        """Record a new PENDING job with its tasks (name, num_nodes, primary) and their nodes."""
        now = time.time()
        with self.write() as c:
            cur = c.execute(
                "INSERT INTO jobs(name, status, execution, submitted_at, spec, base_dir, options)"
                " VALUES (?,?,?,?,?,?,?)",
                (name, Status.PENDING.value, execution, now, spec, base_dir, json.dumps(options)),
            )
            job_id = int(cur.lastrowid or 0)
            c.executemany(
                "INSERT INTO tasks(job_id, idx, name, status, num_nodes, is_primary)"
                " VALUES (?,?,?,?,?,?)",
                [(job_id, i, n, Status.PENDING.value, k, int(p)) for i, (n, k, p) in enumerate(tasks)],
            )
            c.executemany(
                "INSERT INTO nodes(job_id, task_idx, rank) VALUES (?,?,?)",
                [(job_id, i, r) for i, (_, k, _) in enumerate(tasks) for r in range(k)],
            )
            c.execute(
                "INSERT INTO events(job_id, at, kind, message) VALUES (?,?,?,?)",
                (job_id, now, "submitted", f"{len(tasks)} task(s)"),
            )
        return job_id

    def job(self, job_id: int) -> JobRec | None:
        row = self.conn.execute("SELECT * FROM jobs WHERE id=?", (job_id,)).fetchone()
        return _job(row) if row else None

    def jobs(self, *, active_only: bool = False, limit: int | None = None,
             light: bool = False, ended_after: float | None = None,
             statuses: list[Status] | None = None,
             option_keys: tuple[str, ...] = ()) -> list[JobRec]:
        """Jobs, newest first. `active_only`: those not in a terminal status, plus, with
        `ended_after`, those that ended (or, never started, were submitted) at or after that
        time. `statuses`: only jobs in one of these. `light`: without their spec and options
        (empty but for `option_keys`, read by SQLite's JSON functions), for listings: options
        carry the launcher's environment, and decoding 1,000 of them dominated `queue --all`."""
        keys = "".join(f", '{k}', json_extract(options, '$.{k}')" for k in option_keys
                       if k.isidentifier())
        cols = "*" if not light else ", ".join(
            f"'' AS {c}" if c == "spec" else
            (f"json_object({keys[2:]}) AS options" if keys else "'{}' AS options")
            if c == "options" else c
            for c, _ in _expected_columns()["jobs"])
        sql = f"SELECT {cols} FROM jobs"
        where: list[str] = []
        args: list[object] = []
        terminal = ",".join(f"'{s.value}'" for s in Status if s.terminal)
        if active_only and ended_after is not None:
            where.append(f"(status NOT IN ({terminal}) OR "
                         "COALESCE(ended_at, submitted_at) >= ?)")
            args.append(ended_after)
        elif active_only:
            where.append(f"status NOT IN ({terminal})")
        if statuses is not None:
            where.append(f"status IN ({','.join('?' * len(statuses))})" if statuses else "0")
            args.extend(Status(s).value for s in statuses)
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return [_job(r) for r in self.conn.execute(sql, args)]

    def latest_job_id(self) -> int | None:
        """The newest job's id (None: no job yet)."""
        row = self.conn.execute("SELECT max(id) FROM jobs").fetchone()
        return row[0] if row and row[0] is not None else None

    def unseen_intents(self, after_id: int) -> list[int]:
        """Ids of jobs whose intent may not have been acted on: PENDING jobs newer than
        `after_id` (never looked at), and jobs whose cancel was asked for but not yet decided
        (no outcome, not terminal). One indexed query (the controller's safety net for lost
        wake-ups)."""
        terminal = ",".join(f"'{s.value}'" for s in Status if s.terminal)
        return [r[0] for r in self.conn.execute(
            "SELECT id FROM jobs WHERE (status=? AND id > ?) OR (cancel_requested=1 AND outcome"
            f" IS NULL AND status NOT IN ({terminal})) ORDER BY id",
            (Status.PENDING.value, after_id))]

    def cancels_while_winding_down(self) -> list[int]:
        """Ids of jobs cancelled after their outcome was decided and before they ended (e.g.
        while auxiliaries wait out their termination_delay): the cancel shortens the wait."""
        terminal = ",".join(f"'{s.value}'" for s in Status if s.terminal)
        return [r[0] for r in self.conn.execute(
            "SELECT id FROM jobs WHERE cancel_requested=1 AND outcome IS NOT NULL AND status "
            f"NOT IN ({terminal}) ORDER BY id")]

    def job_ids(self) -> list[int]:
        return [r[0] for r in self.conn.execute("SELECT id FROM jobs ORDER BY id")]

    def set_job_facts(self, job_id: int, **fields: Any) -> None:
        """Write non-status facts of a job (timestamps, decided outcome)."""
        bad = set(fields) - _JOB_FACTS
        if bad:
            raise ValueError(f"not a job fact: {sorted(bad)}")
        cols = ", ".join(f"{k}=?" for k in fields)
        vals = [v.value if isinstance(v, Status) else v for v in fields.values()]
        with self.write() as c:
            c.execute(f"UPDATE jobs SET {cols} WHERE id=?", (*vals, job_id))

    def update_controller(self, job_id: int, **fields: Any) -> None:
        """Write the controller's fields of the job (`state.options.ControllerFields`: its
        placement, the step it is for, admitted); anything else is a ValueError."""
        bad = set(fields) - CONTROLLER_KEYS
        if bad:
            raise ValueError(f"not a controller field of a job: {sorted(bad)}")
        self._merge_options(job_id, fields)

    def record_facts(self, job_id: int, facts: Mapping[str, Any]) -> None:
        """Record what a backend asked to keep about the job (`Admission.facts`); a launch or
        controller field is a ValueError (a backend cannot change what was asked or decided)."""
        bad = set(facts) & (LAUNCH_KEYS | CONTROLLER_KEYS)
        if bad:
            raise ValueError(f"a backend fact may not be named like a launch or controller "
                             f"field: {sorted(bad)}")
        self._merge_options(job_id, dict(facts))

    def _merge_options(self, job_id: int, values: dict[str, Any]) -> None:
        """Merge `values` into the job's options (JSON)."""
        with self.write() as c:
            row = c.execute("SELECT options FROM jobs WHERE id=?", (job_id,)).fetchone()
            if row is None:
                return
            opts = json.loads(row[0])
            opts.update(values)
            c.execute("UPDATE jobs SET options=? WHERE id=?", (json.dumps(opts), job_id))

    def request_cancel(self, job_id: int) -> bool:
        """Record the intent to cancel. False when the job had already ended (nothing to do)."""
        terminal = ",".join(f"'{s.value}'" for s in Status if s.terminal)
        with self.write() as c:
            cur = c.execute(
                f"UPDATE jobs SET cancel_requested=1 WHERE id=? AND status NOT IN ({terminal})"
                " AND cancel_requested=0",
                (job_id,),
            )
            if cur.rowcount:
                c.execute(
                    "INSERT INTO events(job_id, at, kind, message) VALUES (?,?,?,?)",
                    (job_id, time.time(), "cancel-requested", "cancel requested by the user"),
                )
            row = c.execute("SELECT status FROM jobs WHERE id=?", (job_id,)).fetchone()
        return row is not None and not Status(row[0]).terminal

    # ---- tasks, nodes, events ---------------------------------------------------------------

    def tasks(self, job_id: int) -> list[TaskRec]:
        return [
            _task(r)
            for r in self.conn.execute("SELECT * FROM tasks WHERE job_id=? ORDER BY idx", (job_id,))
        ]

    def tasks_of(self, job_ids: list[int]) -> dict[int, list[TaskRec]]:
        """Tasks of many jobs in one query (for `queue`)."""
        out: dict[int, list[TaskRec]] = {j: [] for j in job_ids}
        if not job_ids:
            return out
        marks = ",".join("?" * len(job_ids))
        for r in self.conn.execute(
            f"SELECT * FROM tasks WHERE job_id IN ({marks}) ORDER BY job_id, idx", job_ids
        ):
            out[r["job_id"]].append(_task(r))
        return out

    def nodes(self, job_id: int) -> list[NodeRec]:
        return [
            _node(r)
            for r in self.conn.execute(
                "SELECT * FROM nodes WHERE job_id=? ORDER BY task_idx, rank", (job_id,)
            )
        ]

    def update_node(self, job_id: int, task_idx: int, rank: int, **fields: Any) -> None:
        """Write facts about one node (phase, handle, exit status, timestamps, address)."""
        self.record(job_id, nodes=[(task_idx, rank, fields)])

    def record(
        self,
        job_id: int,
        *,
        nodes: list[tuple[int, int, dict[str, Any]]] = (),  # type: ignore[assignment]
        events: list[tuple[int | None, int | None, str, str]] = (),  # type: ignore[assignment]
    ) -> None:
        """Write facts about many nodes, and events (task_idx, rank, kind, message), in one
        transaction: starting a 100-node group costs two commits, not two hundred."""
        now = time.time()
        with self.write() as c:
            for task_idx, rank, fields in nodes:
                bad = set(fields) - _NODE_FIELDS
                if bad:
                    raise ValueError(f"not a node field: {sorted(bad)}")
                cols = ", ".join(f"{k}=?" for k in fields)
                vals = [v.value if isinstance(v, (Phase, Status)) else
                        json.dumps(v) if k == "handle" and v is not None else v
                        for k, v in fields.items()]
                if "handle" in fields and self._legacy_pid:
                    cols += ", pid=NULL, pid_start=NULL"
                c.execute(
                    f"UPDATE nodes SET {cols} WHERE job_id=? AND task_idx=? AND rank=?",
                    (*vals, job_id, task_idx, rank),
                )
            c.executemany(
                "INSERT INTO events(job_id, task_idx, rank, at, kind, message) VALUES (?,?,?,?,?,?)",
                [(job_id, t, r, now, kind, msg) for t, r, kind, msg in events],
            )

    def count_restart(self, job_id: int, task_idx: int, *, error: bool) -> None:
        """One more restart of a task (and of its error budget when `error`)."""
        with self.write() as c:
            c.execute(
                "UPDATE tasks SET restarts=restarts+1, error_restarts=error_restarts+?"
                " WHERE job_id=? AND idx=?", (int(error), job_id, task_idx),
            )

    def add_event(
        self, job_id: int, kind: str, message: str = "", task_idx: int | None = None,
        rank: int | None = None,
    ) -> None:
        with self.write() as c:
            c.execute(
                "INSERT INTO events(job_id, task_idx, rank, at, kind, message) VALUES (?,?,?,?,?,?)",
                (job_id, task_idx, rank, time.time(), kind, message),
            )

    def events(self, job_id: int) -> list[EventRec]:
        return [
            EventRec(
                id=r["id"], job_id=r["job_id"], task_idx=r["task_idx"], rank=r["rank"],
                at=r["at"], kind=r["kind"], message=r["message"],
            )
            for r in self.conn.execute("SELECT * FROM events WHERE job_id=? ORDER BY id", (job_id,))
        ]
