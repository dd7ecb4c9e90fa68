"""The controller may die at any moment: nothing is lost, nothing is orphaned. Many launches at
once: all succeed with unique ids."""

from __future__ import annotations

import os
import random
import signal
import time
from concurrent.futures import ThreadPoolExecutor

from conftest import _zombie, processes_of, wait_for

from jobgroup.state.status import Phase
from jobgroup.state.store import Store


def _kill_controller(jenv) -> None:
    pid = jenv.controller_pid()
    if pid:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        wait_for(lambda: not os.path.exists(f"/proc/{pid}") or _zombie(pid), timeout=10)


def test_sigkill_controller_while_groups_start_run_and_stop(jenv):
    rng = random.Random(7)
    jobs = {
        "ok": jenv.launch_d("""
            name: ok
            execution: parallel
            primary_tasks: [main]
            termination_delay: 1s
            ---
            name: main
            num_nodes: 2
            setup: sleep 0.4
            run: sleep 1.5; echo main-done
            ---
            name: aux
            run: sleep 1000
            """),
        "fails": jenv.launch_d("""
            name: fails
            execution: parallel
            ---
            name: bad
            run: sleep 1.2; exit 5
            ---
            name: peer
            num_nodes: 2
            run: setsid sleep 1000 & sleep 1000
            """),
        "cancelled": jenv.launch_d("""
            name: cancelled
            setup: sleep 0.3
            run: sleep 1000
            """),
        "quick": jenv.launch_d("name: quick\nrun: echo quick\n"),
    }
    deadline = time.monotonic() + 6
    cancelled = False
    while time.monotonic() < deadline:
        time.sleep(rng.uniform(0.1, 0.5))
        _kill_controller(jenv)
        if not cancelled and time.monotonic() > deadline - 4:
            # Cancel while no controller runs: the intent waits in the store.
            jenv.jg("cancel", str(jobs["cancelled"]), check=True)
            cancelled = True
        time.sleep(rng.uniform(0.0, 0.3))  # let things end while nobody watches
        jenv.jg("controller", "start", check=True)
    finals = {k: jenv.wait(j, timeout=60) for k, j in jobs.items()}
    assert finals["ok"]["status"] == "SUCCEEDED", finals["ok"]
    assert finals["fails"]["status"] == "FAILED"
    assert finals["fails"]["reason"] == "task 'bad' run exited with code 5"
    assert finals["cancelled"]["status"] == "CANCELLED"
    assert finals["quick"]["status"] == "SUCCEEDED"
    assert "main-done" in jenv.log(jobs["ok"], "main", 1)
    store = Store(jenv.home)
    try:
        for job in jobs.values():
            for n in store.nodes(job):
                assert n.phase == Phase.ENDED, n
                if n.started_at is not None and not n.stopped:
                    # Every node that ran by itself has its real exit status recorded.
                    assert n.exit_code is not None or n.signal is not None, n
        bad = next(n for n in store.nodes(jobs["fails"]) if n.task_idx == 0)
        assert bad.exit_code == 5
    finally:
        store.close()
    assert not processes_of(jenv.home)


def test_group_that_ends_while_the_controller_is_down_is_settled(jenv):
    job = jenv.launch_d("name: offline\nrun: sleep 0.5; exit 3\n")
    wait_for(lambda: jenv.job(job)["status"] == "RUNNING")
    _kill_controller(jenv)
    time.sleep(1.0)  # the node ends while nobody watches; its shim records the status
    assert jenv.job(job)["status"] == "RUNNING"  # the store cannot know yet
    final = jenv.wait(job)
    assert final["status"] == "FAILED" and "exited with code 3" in final["reason"]


def test_twenty_concurrent_launches(jenv):
    spec = jenv.spec("name: many\nrun: echo hi\n")

    def one(_: int):
        return jenv.jg("launch", str(spec), "-d", timeout=120)

    with ThreadPoolExecutor(max_workers=20) as pool:
        results = list(pool.map(one, range(20)))
    for p in results:
        assert p.returncode == 0, p.stderr
        assert "database is locked" not in p.stderr
    ids = [int(p.stdout.split()[1]) for p in results]
    assert len(set(ids)) == 20
    for j in ids:
        assert jenv.wait(j)["status"] == "SUCCEEDED"
    # Exactly one controller serves the state directory.
    pids = [p for p in os.listdir("/proc") if p.isdigit() and _is_controller(int(p), jenv.home)]
    assert len(pids) == 1


def _is_controller(pid: int, home) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            args = f.read().split(b"\0")
    except OSError:
        return False
    return b"jobgroup.controller.daemon" in args and str(home).encode() in args


def test_sigkill_of_a_node_shim_fails_the_group_and_leaves_nothing(jenv):
    job = jenv.launch_d("""
        name: lost
        execution: parallel
        ---
        name: victim
        run: setsid sleep 1000 & sleep 1000
        ---
        name: peer
        run: sleep 1000
        """)
    wait_for(lambda: jenv.job(job)["status"] == "RUNNING")
    store = Store(jenv.home)
    try:
        victim = next(n for n in store.nodes(job) if n.task_idx == 0)
    finally:
        store.close()
    wait_for(lambda: len(processes_of(jenv.home)) >= 5)  # 2 shims, bash, 2 sleeps (+ peer)
    os.kill(victim.handle["pid"], signal.SIGKILL)  # the local backend's handle: its shim
    final = jenv.wait(job)
    assert final["status"] == "FAILED"
    assert "task 'victim' run was killed by signal 9" in final["reason"]
    wait_for(lambda: not processes_of(jenv.home), timeout=10)
