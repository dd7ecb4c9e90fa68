"""A foreground `jobgroup launch` while its group waits (issue 21): why it waits and for how long,
as a spinner line on a terminal and as plain lines otherwise, then where it runs; and `cancel`
during a group's termination_delay."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time

from conftest import wait_for

HOG = """
    name: hog
    resources:
      cpus: 2
    run: sleep 1000
    """
NEXT = """
    name: next
    resources:
      cpus: 2
    run: echo next ran
    """


def _hog(jenv) -> int:
    jenv.home.mkdir(mode=0o700, exist_ok=True)
    (jenv.home / "resources.yaml").write_text("cpus: 2\n")
    hog = jenv.launch_d(HOG)
    wait_for(lambda: jenv.job(hog)["status"] == "RUNNING")
    return hog


def test_plain_lines_when_not_a_terminal(jenv):
    hog = _hog(jenv)
    spec = jenv.spec(NEXT, "next.yaml")
    p = subprocess.Popen([sys.executable, "-m", "jobgroup", "launch", str(spec)], env=jenv.env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=jenv.tmp)
    wait_for(lambda: len(jenv.jg("queue", "--json", check=True).stdout) and
             any(j["name"] == "next" and j["reason"] for j in
                 __import__("json").loads(jenv.jg("queue", "--json").stdout)))
    time.sleep(1.0)  # it waits a while: still one line for one reason
    jenv.jg("cancel", str(hog), check=True)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    assert "\r" not in err and "\x1b" not in err
    lines = err.splitlines()
    pending = [ln for ln in lines if " PENDING " in ln]
    assert len(pending) == 1, err  # one line per reason, not one per poll
    assert f"held by job {hog}" in pending[0] and "waiting for 2 CPU(s)" in pending[0]
    running = [ln for ln in lines if " started on " in ln]
    assert len(running) == 1 and running[0].split(" on ")[1].startswith("local (")
    assert running[0].endswith(" after submission).")
    assert lines.index(pending[0]) < lines.index(running[0])
    assert "(next, rank=0) next ran" in out
    assert lines[-1].endswith("SUCCEEDED: all tasks succeeded")


def test_a_spinner_line_on_a_terminal(jenv):
    hog = _hog(jenv)
    spec = jenv.spec(NEXT, "next.yaml")
    main, sub = pty.openpty()
    p = subprocess.Popen([sys.executable, "-m", "jobgroup", "launch", str(spec)], stdin=sub,
                         stdout=sub, stderr=sub, cwd=jenv.tmp,
                         env={**jenv.env, "COLUMNS": "70", "LC_ALL": "C.UTF-8"})
    os.close(sub)
    seen = b""
    try:
        deadline = time.monotonic() + 60
        while b"PENDING 1." not in seen and time.monotonic() < deadline:
            if select.select([main], [], [], 1)[0]:
                seen += os.read(main, 65536)
        jenv.jg("cancel", str(hog), check=True)
        while time.monotonic() < deadline:
            if not select.select([main], [], [], 1)[0]:
                if p.poll() is not None:
                    break
                continue
            try:
                chunk = os.read(main, 65536)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
    finally:
        p.wait(timeout=60)
        os.close(main)
    text = seen.decode(errors="replace")
    assert p.returncode == 0, text
    frames = [f for f in text.split("\r\x1b[K") if " PENDING " in f]
    assert len(frames) >= 5, text  # redrawn in place, with the time it has waited
    assert all(len(f.replace("\x1b[2m", "").replace("\x1b[0m", "")) <= 70 for f in frames)
    assert "waiting for 2 CPU(s)" in frames[0]
    # the line is wiped before what follows, which says where the group runs
    assert "\r\x1b[KJob " in text and " started on local (" in text
    assert "next ran" in text


def test_the_detached_road_stays_light(jenv):
    """`launch -d` on the short road (a controller already serves): neither click nor the
    foreground's status line nor the log reader is imported."""
    jenv.launch_d("name: first\nrun: 'true'\n")
    spec = jenv.spec("name: light\nrun: 'true'\n", "light.yaml")
    code = ("import sys\nfrom jobgroup.cli.main import main\ntry:\n    main(sys.argv[1:])\n"
            "except SystemExit as e:\n    rc = e.code\n"
            "heavy = [m for m in ('click', 'jobgroup.cli.attach', 'jobgroup.logfiles.follow',"
            " 'sqlite3', 'yaml', 'msgspec') if m in sys.modules]\n"
            "print('HEAVY', heavy, file=sys.stderr)\nsys.exit(rc)\n")
    for extra in (["-d"], ["--detach-run", "-y"]):
        p = subprocess.run([sys.executable, "-c", code, "launch", str(spec), *extra],
                           env=jenv.env, capture_output=True, text=True, timeout=60,
                           cwd=jenv.tmp)
        assert p.returncode == 0 and "HEAVY []" in p.stderr, p.stderr
        assert "Follow: jobgroup logs" in p.stdout


DELAYED = """
    name: rl
    execution: parallel
    primary_tasks: [trainer]
    termination_delay: 120s
    ---
    name: trainer
    run: echo trained
    ---
    name: server
    run: |
      trap 'echo server stopped; exit 0' TERM
      echo serving
      while true; do sleep 0.1; done
    """


def test_cancel_during_termination_delay_stops_auxiliaries_now(jenv):
    job = jenv.launch_d(DELAYED)

    def delaying() -> bool:
        j = jenv.job(job)
        return j["tasks"][0]["status"] == "SUCCEEDED" and j["outcome"] == "SUCCEEDED"

    wait_for(delaying)
    row = next(ln for ln in jenv.jg("queue", check=True).stdout.splitlines()
               if ln.split()[:1] == [str(job)])
    assert "RUNNING" in row and row.endswith("stopping (SUCCEEDED): all primary tasks "
                                             "succeeded")
    t0 = time.monotonic()
    p = jenv.jg("cancel", str(job), check=True)
    assert p.stdout.strip() == (f"Job {job}: its primary tasks already succeeded: stopping its "
                                "auxiliaries now (no termination_delay); it stays SUCCEEDED.")
    final = jenv.wait(job, timeout=60)
    took = time.monotonic() - t0
    assert final["status"] == "SUCCEEDED" and took < 15, (final, took)  # not the 120 s delay
    server = final["tasks"][1]
    assert server["status"] == "CANCELLED"
    assert server["reason"] == ("auxiliary stopped by the user's cancel: primary tasks had "
                                "finished")
    assert "server stopped" in jenv.log(job, "server")
    events = jenv.jg("events", str(job), check=True).stdout
    assert "cancel" in events and "before its termination_delay ended" in events
    again = jenv.jg("cancel", str(job), check=True)
    assert again.stdout.strip() == f"Job {job}: already ended (SUCCEEDED)."
