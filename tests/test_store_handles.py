"""A node's handle in the store: the backend's opaque JSON, kept as it was given; a state
directory made by a jobgroup that stored a local shim's pid/pid_start reads on as local
handles, and a restarted controller adopts what such a row names."""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
import textwrap

from conftest import wait_for
from jobgroup.state.store import SCHEMA, Store

# The nodes table as jobgroup created it before handles (pid, pid_start; no handle).
OLD_NODES = """
CREATE TABLE nodes (
    job_id INTEGER NOT NULL, task_idx INTEGER NOT NULL, rank INTEGER NOT NULL,
    phase TEXT NOT NULL DEFAULT 'waiting', pid INTEGER, pid_start INTEGER, exit_code INTEGER,
    signal INTEGER, stopped INTEGER NOT NULL DEFAULT 0, stop_requested_at REAL,
    started_at REAL, ended_at REAL, address TEXT NOT NULL DEFAULT '',
    hostname TEXT NOT NULL DEFAULT '', attempt INTEGER NOT NULL DEFAULT 1, ended_phase TEXT,
    ready_at REAL, probe_failed TEXT, note TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (job_id, task_idx, rank)
);
"""


def _old_store(home, rows):
    """A state directory whose nodes table is the old one, holding `rows` (task, pid, start)."""
    home.mkdir(mode=0o700)
    db = sqlite3.connect(home / "state.db")
    db.executescript(re.sub(r"CREATE TABLE IF NOT EXISTS nodes \(.*?\n\);", OLD_NODES, SCHEMA,
                            flags=re.S))
    db.executemany("INSERT INTO nodes(job_id, task_idx, rank, phase, pid, pid_start) "
                   "VALUES (1, ?, 0, 'run', ?, ?)", rows)
    db.commit()
    db.close()


def test_handles_round_trip_as_given(tmp_path):
    store = Store(tmp_path / "home")
    job = store.create_job(name="g", execution="parallel", spec="", base_dir="/",
                           options={}, tasks=[("a", 1, True)])
    handle = {"pod": "g-a-0", "nested": {"n": [1, 2]}}
    store.update_node(job, 0, 0, handle=handle)
    assert store.nodes(job)[0].handle == handle
    store.update_node(job, 0, 0, handle=None)
    assert store.nodes(job)[0].handle is None
    store.close()


def test_pid_rows_of_an_older_jobgroup_become_local_handles(tmp_path):
    home = tmp_path / "home"
    _old_store(home, [(0, 4242, 99), (1, None, None)])
    store = Store(home)  # adds the handle column, converts the rows
    nodes = {n.task_idx: n for n in store.nodes(1)}
    assert nodes[0].handle == {"pid": 4242, "start": 99}
    assert nodes[1].handle is None
    # an older controller still running writes a pid: read as the local handle too ...
    store.conn.execute("UPDATE nodes SET pid=7, pid_start=8 WHERE task_idx=1")
    assert store.nodes(1)[1].handle == {"pid": 7, "start": 8}
    # ... and writing a handle (none: the phase ended) clears it for good
    store.update_node(1, 1, 0, handle=None)
    assert store.nodes(1)[1].handle is None
    store.close()


def test_a_phase_recorded_by_pid_is_adopted_after_an_upgrade(jenv):
    """A running group whose node rows carry the old pid columns only (a controller of an
    older jobgroup was stopped): the new controller adopts the shim by that pid, settles its
    real exit code, and the group ends as it would have."""
    shared = jenv.tmp / "shared"  # the workdir: shared with the node (its /tmp is its own)
    shared.mkdir()
    flag = shared / "go"
    job = jenv.launch_d(f"""
        name: up
        ---
        name: a
        workdir: {shared}
        run: until [ -e {flag} ]; do sleep 0.05; done; exit 5
        """)
    wait_for(lambda: jenv.job(job)["status"] == "RUNNING")
    jenv.stop_controller()
    # Make the state directory look like an older jobgroup's: pid columns, no handle column.
    db = sqlite3.connect(jenv.home / "state.db")
    (handle,) = db.execute("SELECT handle FROM nodes WHERE job_id=?", (job,)).fetchone()
    pid, start = json.loads(handle)["pid"], json.loads(handle)["start"]
    db.executescript("ALTER TABLE nodes ADD COLUMN pid INTEGER;"
                     "ALTER TABLE nodes ADD COLUMN pid_start INTEGER;")
    db.execute("UPDATE nodes SET pid=?, pid_start=? WHERE job_id=?", (pid, start, job))
    db.executescript("ALTER TABLE nodes DROP COLUMN handle;")
    db.commit()
    db.close()
    flag.touch()
    final = jenv.wait(job)  # starts the new controller: it migrates, adopts, settles
    assert final["status"] == "FAILED", final
    events = subprocess.run([sys.executable, "-m", "jobgroup", "events", str(job)],
                            env=jenv.env, capture_output=True, text=True, timeout=30).stdout
    assert "exit code 5" in events, textwrap.shorten(events, 2000)
