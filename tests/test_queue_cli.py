"""`jobgroup queue` as a user sees it (issue 21): recent ended jobs with why, where each job
runs, SkyPilot's filters and output flags."""

from __future__ import annotations

import json
import sqlite3

from conftest import wait_for

FAILING = """
    name: broken
    run: echo about to fail; exit 3
    """


def _rows(out: str) -> list[str]:
    return out.splitlines()


def test_a_job_that_failed_a_second_ago_is_listed_with_its_reason(jenv):
    job = jenv.launch_d(FAILING)
    assert jenv.wait(job)["status"] == "FAILED"
    p = jenv.jg("queue", check=True)
    head, row = _rows(p.stdout)[:2]
    assert head.split() == ["ID", "TASK", "NAME", "SUBMITTED", "DURATION", "NODES", "RESTARTS",
                            "INFRA", "STATUS", "REASON"]
    assert row.split()[0] == str(job)
    assert row[head.index("INFRA"):].split()[0] == "local"
    assert row[head.index("STATUS"):].startswith("FAILED")
    assert row[head.index("REASON"):] == "task 'broken' run exited with code 3"
    # --skip-finished, a bare -s (SkyPilot's old spelling), --recent 0 and the variable hide it
    for args, env in ((["--skip-finished"], {}), (["-s"], {}), (["--recent", "0"], {}),
                      ([], {"JOBGROUP_QUEUE_RECENT": "0"})):
        p = jenv.jg("queue", *args) if not env else _jg_env(jenv, env, "queue")
        assert p.returncode == 0 and p.stdout.startswith("No active jobs"), (args, p.stdout)
    # an ended job stays listed for the window only: a job ended 7 hours ago is not (default 6h)
    _age(jenv, job, hours=7)
    assert jenv.jg("queue", check=True).stdout.startswith("No active jobs, none ended in the "
                                                          "last 6h")
    assert str(job) in jenv.jg("queue", "--recent", "8h", check=True).stdout
    assert str(job) in _jg_env(jenv, {"JOBGROUP_QUEUE_RECENT": "1d"}, "queue").stdout
    assert str(job) in jenv.jg("queue", "--all", check=True).stdout
    bad = jenv.jg("queue", "--recent", "soon")
    assert bad.returncode == 2 and "--recent" in bad.stderr and "Traceback" not in bad.stderr


def _jg_env(jenv, extra: dict, *args: str):
    saved = dict(jenv.env)
    jenv.env.update(extra)
    try:
        return jenv.jg(*args)
    finally:
        jenv.env = saved


def _age(jenv, job: int, hours: float) -> None:
    db = sqlite3.connect(jenv.home / "state.db", timeout=60)
    with db:
        db.execute("UPDATE jobs SET submitted_at=submitted_at-?, started_at=started_at-?, "
                   "ended_at=ended_at-? WHERE id=?", (hours * 3600,) * 3 + (job,))
    db.close()


def test_status_filter_json_alias_and_reason_cut_to_the_width(jenv):
    bad = jenv.launch_d(FAILING)
    jenv.wait(bad)
    good = jenv.launch_d("""
        name: fine
        run: echo ok
        """)
    jenv.wait(good)
    running = jenv.launch_d("""
        name: sleeper
        run: sleep 1000
        """)
    wait_for(lambda: jenv.job(running)["status"] == "RUNNING")

    def ids(*args: str) -> list[int]:
        return [j["id"] for j in json.loads(jenv.jg("queue", *args, check=True).stdout)]

    assert ids("--json") == [running, good, bad]
    assert ids("-o", "json") == ids("--json") == ids("--output=JSON")
    assert ids("-o", "json", "-s", "FAILED") == [bad]
    assert ids("-o", "json", "-s", "failed,succeeded") == [good, bad]  # any case, commas
    assert ids("-o", "json", "--status", "RUNNING", "-s", "FAILED") == [running, bad]
    assert ids("-o", "json", "--skip-finished") == [running]
    table = jenv.jg("queue", "-s", "RUNNING", check=True).stdout
    assert "sleeper" in table and "broken" not in table
    none = jenv.jg("queue", "-s", "CANCELLED", check=True).stdout
    assert none.startswith("No jobs in CANCELLED")
    wrong = jenv.jg("queue", "-s", "DONE")
    assert wrong.returncode == 2 and "'DONE' is not one of" in wrong.stderr \
        and "'SUCCEEDED'" in wrong.stderr
    # JSON keeps the reason whole; the table cuts it to the terminal ($COLUMNS here)
    data = json.loads(jenv.jg("queue", "--json", check=True).stdout)
    assert next(j for j in data if j["id"] == bad)["reason"] == \
        "task 'broken' run exited with code 3"
    assert {j["infra"] for j in data} == {"local"}
    narrow = _jg_env(jenv, {"COLUMNS": "100"}, "queue").stdout.splitlines()
    assert all(len(ln) <= 100 for ln in narrow)
    row = next(ln for ln in narrow if ln.split()[:1] == [str(bad)])
    assert row.endswith("…") and "task 'bro" in row


def test_infra_names_the_slurm_job_and_the_kubernetes_namespace(jenv):
    """Where a job runs comes from what its backend recorded at admission (Slurm's job id, the
    namespace): rows as those backends leave them, read by the real command."""
    job = jenv.launch_d("""
        name: here
        run: echo here
        """)
    jenv.wait(job)
    db = sqlite3.connect(jenv.home / "state.db", timeout=60)
    row = db.execute("SELECT * FROM jobs WHERE id=?", (job,)).fetchone()
    cols = [d[0] for d in db.execute("SELECT * FROM jobs").description]
    opts = json.loads(row[cols.index("options")])
    made = {}
    for name, extra in (("on-slurm", {"infra": "slurm", "slurm_job_id": "4242"}),
                        ("slurm-waiting", {"infra": "slurm"}),
                        ("on-k8s", {"infra": "kubernetes", "k8s_namespace": "ml-team"})):
        values = dict(zip(cols, row))
        values.update(id=None, name=name, options=json.dumps({**opts, **extra}))
        with db:
            cur = db.execute(f"INSERT INTO jobs({','.join(cols)}) VALUES "
                             f"({','.join('?' * len(cols))})", [values[c] for c in cols])
            made[name] = cur.lastrowid
            db.execute("INSERT INTO tasks SELECT ?, idx, name, status, reason, num_nodes, "
                       "is_primary, restarts, error_restarts, started_at, ended_at FROM tasks "
                       "WHERE job_id=?", (cur.lastrowid, job))
    db.close()
    data = {j["name"]: j["infra"] for j in json.loads(jenv.jg("queue", "--json").stdout)}
    assert data == {"here": "local", "on-slurm": "slurm:4242", "slurm-waiting": "slurm",
                    "on-k8s": "k8s:ml-team"}
    table = jenv.jg("queue", check=True).stdout
    assert "slurm:4242" in table and "k8s:ml-team" in table
    # every backend of the registry has its label (backends/where.py is kept light on purpose)
    from jobgroup.backends import registry, where

    assert set(where.LABELS) == set(registry.BACKENDS)


def test_a_pending_job_says_why_it_waits(jenv):
    (jenv.home).mkdir(mode=0o700, exist_ok=True)
    (jenv.home / "resources.yaml").write_text("cpus: 2\n")
    hog = jenv.launch_d("""
        name: hog
        resources:
          cpus: 2
        run: sleep 1000
        """)
    wait_for(lambda: jenv.job(hog)["status"] == "RUNNING")
    waiting = jenv.launch_d("""
        name: waiter
        resources:
          cpus: 2
        run: echo finally
        """)
    wait_for(lambda: jenv.job(waiting)["reason"])
    rows = jenv.jg("queue", check=True).stdout.splitlines()
    row = next(ln for ln in rows if ln.split()[:1] == [str(waiting)])
    assert "PENDING" in row and f"held by job {hog}" in row and "waiting for 2 CPU(s)" in row
