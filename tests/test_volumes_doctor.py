"""`jobgroup volume` and `jobgroup doctor` against real state, namespaces and processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess

import pytest

from conftest import wait_for

from jobgroup.backends.local import network

root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)")


def test_volume_ls_and_rm_refuses_while_in_use(jenv):
    job = jenv.launch_d("""
        name: vol
        volumes: {/data: shared-data}
        run: head -c 5000 /dev/zero > /data/blob; echo written; sleep 1000
        """)
    wait_for(lambda: "written" in jenv.log(job, "vol"))
    vols = json.loads(jenv.jg("volume", "ls", "--json", check=True).stdout)
    assert [(v["name"], v["used_by"]) for v in vols] == [("shared-data", [job])]
    assert vols[0]["size_bytes"] == 5000, (vols, jenv.log(job, "vol"), list((jenv.home / "volumes").rglob("*")))
    assert "shared-data" in jenv.jg("volume", "ls", check=True).stdout
    busy = jenv.jg("volume", "rm", "shared-data")
    assert busy.returncode == 1 and f"in use by job(s) {job}" in busy.stderr
    jenv.jg("cancel", str(job), check=True)
    jenv.wait(job)
    assert (jenv.home / "volumes" / "shared-data" / "blob").exists()  # kept after the job
    assert jenv.jg("volume", "rm", "shared-data", check=True).returncode == 0
    assert not (jenv.home / "volumes" / "shared-data").exists()
    gone = jenv.jg("volume", "rm", "shared-data")
    assert gone.returncode == 2 and "no volume" in gone.stderr
    bad = jenv.jg("volume", "rm", "../etc")
    assert bad.returncode == 2 and "invalid volume name" in bad.stderr


@root
def test_doctor_finds_and_fixes_leftovers_of_this_state_dir_only(jenv, tmp_path):
    jenv.jg("queue", check=True)  # creates the store
    mine = network.create(jenv.home, 4242, 2)
    other = network.create(tmp_path / "someone-else", 4242, 1)
    marker = f"JOBGROUP_PHASE={jenv.home}/jobs/4242/nodes/0-0.run.1.status"
    orphan = subprocess.Popen(["sleep", "1000"], env={**os.environ, "JOBGROUP_PHASE": marker[15:]},
                              start_new_session=True)
    try:
        p = jenv.jg("doctor", "--json")
        assert p.returncode == 1
        found = json.loads(p.stdout)["found"]
        assert found["netns"] == [mine.netns(0), mine.netns(1)]
        assert mine.bridge in found["links"] and other.bridge not in found["links"]
        assert found["processes"] == [orphan.pid]
        fixed = jenv.jg("doctor", "--fix")
        assert fixed.returncode == 0 and "Removed." in fixed.stdout
        assert orphan.wait(timeout=10) == -signal.SIGKILL
        assert network.existing(mine.netid) == {"bridges": [], "veths": [], "netns": []}
        assert network.existing(other.netid)["netns"] == [other.netns(0)]  # not ours: kept
        assert jenv.jg("doctor").stdout.strip() == "Nothing left behind."
    finally:
        if orphan.poll() is None:
            orphan.kill()
            orphan.wait()
        network.destroy(mine.netid)
        network.destroy(other.netid)


@root
def test_doctor_finds_a_mount_in_the_state_dir_and_a_lock_of_an_interrupted_create(jenv, tmp_path):
    """Leftovers of kinds `doctor` did not look for: a mount point inside the state directory
    (nodes mount only in their own mount namespaces) and the group lock an interrupted network
    create leaves in /run/jobgroup."""
    jenv.jg("queue", check=True)  # creates the store
    src = tmp_path / "src"
    src.mkdir()
    point = jenv.home / "jobs" / "4243" / "work" / "data"
    point.mkdir(parents=True)
    lock = network.group_lock_path(jenv.home, 4243)
    subprocess.run(["mount", "--bind", str(src), str(point)], check=True)
    try:
        lock.parent.mkdir(mode=0o700, exist_ok=True)
        lock.touch(mode=0o600)
        p = jenv.jg("doctor", "--json")
        assert p.returncode == 1
        found = json.loads(p.stdout)["found"]
        assert found["mounts"] == [str(point)]
        assert found["files"] == [str(lock)]
        assert f"mounts: {point}" in jenv.jg("doctor").stdout
        fixed = jenv.jg("doctor", "--fix")
        assert fixed.returncode == 0 and "Removed." in fixed.stdout, fixed.stdout
        assert not os.path.ismount(point) and not lock.exists()
    finally:
        if os.path.ismount(point):
            subprocess.run(["umount", "-l", str(point)])
        lock.unlink(missing_ok=True)


def test_store_of_an_older_version_gains_the_new_columns(tmp_path):
    import sqlite3

    from jobgroup.state.store import Store

    home = tmp_path / "old"
    home.mkdir()
    old = sqlite3.connect(home / "state.db")
    old.executescript("""
        CREATE TABLE jobs (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL,
            status TEXT NOT NULL, reason TEXT NOT NULL DEFAULT '', execution TEXT NOT NULL
            DEFAULT 'parallel', submitted_at REAL NOT NULL, started_at REAL, ended_at REAL,
            spec TEXT NOT NULL, base_dir TEXT NOT NULL, options TEXT NOT NULL DEFAULT '{}',
            cancel_requested INTEGER NOT NULL DEFAULT 0, outcome TEXT,
            outcome_reason TEXT NOT NULL DEFAULT '', primaries_done_at REAL);
        INSERT INTO jobs(name, status, submitted_at, spec, base_dir)
            VALUES ('before', 'SUCCEEDED', 1.0, 'name: x', '/');
        CREATE TABLE events (id INTEGER PRIMARY KEY AUTOINCREMENT, job_id INTEGER NOT NULL,
            task_idx INTEGER, rank INTEGER, at REAL NOT NULL, kind TEXT NOT NULL,
            message TEXT NOT NULL DEFAULT '');
    """)
    old.close()
    store = Store(home)
    try:
        job = store.jobs()[0]
        assert job.name == "before" and job.isolation == "" and job.group_restarts == 0
    finally:
        store.close()
