"""`jobgroup logs [JOB] [TASK] [--tail N] [--since DURATION|TIME] [--timestamps]` (issue 21): the
latest job by default, when each line came (the shim's side index, NAME.log.times: the log itself
stays untouched), --since that enters the files where the index says, tails merged in time
order, the final status line, the TASK hint said once."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from datetime import datetime, timezone

import jobgroup

STAMP = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z) (.*)$")

TWO = """
    name: two
    execution: parallel
    ---
    name: early
    run: |
      echo early-1
      sleep 1.5
      echo early-2
    ---
    name: late
    run: |
      sleep 0.75
      echo late-1
    """


def _at(stamp: str) -> float:
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=timezone.utc).timestamp()


def test_latest_job_timestamps_merge_final_line_and_hint_once(jenv):
    p = jenv.jg("logs")
    assert p.returncode != 0 and "there are no jobs yet" in p.stderr \
        and "Traceback" not in p.stderr
    job = jenv.launch_d(TWO)
    assert jenv.wait(job)["status"] == "SUCCEEDED"

    # no JOB: the latest job; the hint about TASK comes the first time only
    first = jenv.jg("logs", "--no-follow", check=True)
    assert "Hint: This job has 2 tasks" in first.stderr
    second = jenv.jg("logs", "--no-follow", check=True)
    assert "Hint" not in second.stderr and second.stdout == first.stdout
    assert second.stderr.strip().endswith(f"Job {job} (two) SUCCEEDED: all tasks succeeded")
    # a first argument that is not a number: a TASK of the latest job
    assert jenv.jg("logs", "late", "--no-follow", check=True).stdout == "(late, rank=0) late-1\n"

    # --timestamps: when each line came (the log file itself has no time in it)
    stamped = jenv.jg("logs", str(job), "--timestamps", "--tail", "10", check=True).stdout
    rows = [STAMP.match(ln).groups() for ln in stamped.splitlines()]
    assert [r[1] for r in rows] == ["(early, rank=0) early-1", "(late, rank=0)  late-1",
                                    "(early, rank=0) early-2"]  # merged in time order
    t = [_at(r[0]) for r in rows]
    assert 0.5 < t[1] - t[0] < 1.5 and 0.5 < t[2] - t[1] < 1.5, t  # the sleeps, not read time
    submitted = jenv.job(job)["submitted_at"]
    assert submitted <= t[0] < submitted + 30
    log = jenv.home / "jobs" / str(job) / "logs" / "early-0.log"
    assert log.read_text() == "early-1\nearly-2\n"
    assert (log.parent / "early-0.log.times").exists()

    # --since: an age, or an ISO time (local time without an offset)
    mid = datetime.fromtimestamp((t[0] + t[1]) / 2).isoformat(timespec="milliseconds")
    since = jenv.jg("logs", str(job), "--since", mid, "--no-follow", check=True).stdout
    assert since.splitlines() == ["(late, rank=0)  late-1", "(early, rank=0) early-2"]
    utc = datetime.fromtimestamp((t[1] + t[2]) / 2, timezone.utc).isoformat()
    assert jenv.jg("logs", str(job), "--since", utc, "--no-follow",
                   check=True).stdout == "(early, rank=0) early-2\n"
    assert len(jenv.jg("logs", str(job), "--since", "10m", "--no-follow",
                       check=True).stdout.splitlines()) == 3
    assert jenv.jg("logs", str(job), "--since", "2099-01-01", "--no-follow",
                   check=True).stdout == ""
    bad = jenv.jg("logs", str(job), "--since", "yesterday")
    assert bad.returncode == 2 and "--since" in bad.stderr and "ISO 8601" in bad.stderr


def test_since_does_not_read_the_file_from_its_start(jenv):
    """64 MiB written first, a line later: --since enters the file at the index's offset."""
    job = jenv.launch_d("""
        name: big
        run: |
          head -c 67108864 /dev/zero | tr '\\0' 'x' | fold -w 1023; echo
          sleep 1.2
          echo the-late-line
        """)
    assert jenv.wait(job, timeout=120)["status"] == "SUCCEEDED"
    stamped = jenv.jg("logs", str(job), "--tail", "1", "--timestamps", check=True).stdout
    late = _at(STAMP.match(stamped.strip()).group(1))
    since = datetime.fromtimestamp(late - 0.6).isoformat()
    code = ("import sys\nfrom jobgroup.cli.main import main\ntry:\n    main(sys.argv[1:])\n"
            "except SystemExit:\n    pass\n"
            "print('RCHAR', [l for l in open('/proc/self/io') if l.startswith('rchar')][0],"
            " file=sys.stderr)\n")
    p = subprocess.run([sys.executable, "-c", code, "logs", str(job), "--since", since,
                        "--no-follow"], env=jenv.env, capture_output=True, text=True,
                       timeout=120, cwd=jenv.tmp)
    assert p.stdout == "(big, rank=0) the-late-line\n", p.stdout[-300:]
    rchar = int(p.stderr.split("rchar:")[1].split()[0])
    assert rchar < 16 << 20, rchar  # Python's own start-up and a few blocks, not 64 MiB


def test_api_lines_carry_their_time(jenv):
    job = jenv.launch_d(TWO)
    jenv.wait(job)
    plain = list(jobgroup.logs(job, home=jenv.home))
    assert [ln.at for ln in plain] == [None, None, None]  # asked for nothing: no time read
    timed = list(jobgroup.logs(job, home=jenv.home, timestamps=True))
    assert all(isinstance(ln.at, float) for ln in timed)
    tail = list(jobgroup.logs(job, home=jenv.home, tail=5))
    assert [ln.text for ln in tail] == ["early-1", "late-1", "early-2"]
    assert [ln.at for ln in tail] == sorted(ln.at for ln in tail)
    data = json.loads(jenv.jg("queue", "--all", "--json", check=True).stdout)
    assert data[0]["id"] == job


def test_following_a_running_task_prints_its_end(jenv):
    job = jenv.launch_d("""
        name: pair
        execution: parallel
        primary_tasks: [short]
        termination_delay: 30s
        ---
        name: short
        run: echo short done
        ---
        name: long
        run: sleep 1000
        """)
    t0 = time.monotonic()
    p = jenv.jg("logs", str(job), "short", timeout=60, check=True)
    assert time.monotonic() - t0 < 30
    assert p.stdout == "(short, rank=0) short done\n"
    assert p.stderr.strip().endswith(f"Task 'short' of job {job} SUCCEEDED (the job is "
                                     "RUNNING)")
