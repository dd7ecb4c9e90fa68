"""Reading node logs in bounded memory and linear work: `jobgroup logs` (following or not),
`jobgroup.logs` and the dashboard's log endpoints on logs of hundreds of MiB, a 64 MiB line
without newline, and `--tail` / `?tail=` that read from the end of the files.

Memory is observed as the reader process's peak resident set (getrusage of a waited child, or
VmHWM of /proc/PID/status while it is alive); "reads from the end" as the bytes the reader
process read (rchar of /proc/PID/io). The big files are written for real (1 MiB blocks) and
removed at the end of each test."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import jobgroup
from conftest import wait_for

MIB = 1 << 20
RSS_LIMIT_KB = 100 * 1000  # 100 MB, whatever the size of the logs
LINE = 200  # bytes per generated line, newline included

# Runs argv, counts what it prints, and reports the child's peak RSS: a fresh process whose
# only child is the reader, so RUSAGE_CHILDREN is the reader's alone.
MEASURE = textwrap.dedent("""
    import json, resource, subprocess, sys
    p = subprocess.Popen(sys.argv[1:], stdout=subprocess.PIPE)
    lines = size = 0
    last = b""
    while True:
        block = p.stdout.read(1 << 20)
        if not block:
            break
        lines += block.count(b"\\n")
        size += len(block)
        last = (last + block)[-4096:]
    rc = p.wait()
    print(json.dumps({"rc": rc, "lines": lines, "bytes": size, "tail": last.decode(errors="replace"),
                      "maxrss_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))
""")


def measure(jenv, *args: str) -> dict:
    """`jobgroup ARGS` run to its end: exit code, lines and bytes printed, the last 4 KiB
    printed, and its peak RSS in kB."""
    p = subprocess.run([sys.executable, "-c", MEASURE, sys.executable, "-m", "jobgroup", *args],
                       env=jenv.env, capture_output=True, text=True, timeout=600, cwd=jenv.tmp)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def fill(path: Path, mib: int, width: int = LINE, start: int = 0) -> int:
    """Append `mib` MiB of numbered lines of `width` bytes (`%010d xxx...`); returns how many."""
    per_block = MIB // width
    pad = b"x" * (width - 12)
    n = start
    with open(path, "ab") as f:
        for _ in range(mib):
            f.write(b"".join(b"%010d %s\n" % (i, pad) for i in range(n, n + per_block)))
            n += per_block
    return n - start


def numbered(i: int, width: int = LINE) -> str:
    return "%010d %s" % (i, "x" * (width - 12))


def log_path(jenv, job: int, task: str, rank: int = 0) -> Path:
    return jenv.home / "jobs" / str(job) / "logs" / f"{task}-{rank}.log"


def running_job(jenv, name: str = "big", nodes: int = 1) -> int:
    """A job whose nodes print `started` and then sleep (cancelled by the fixture)."""
    job = jenv.launch_d(f"""
        name: {name}
        num_nodes: {nodes}
        run: echo started; sleep 300
        """)
    for r in range(nodes):
        wait_for(lambda r=r: "started" in jenv.log(job, name, r), timeout=60)
    return job


def finished_job(jenv, run: str, name: str = "t", nodes: int = 1) -> int:
    script = textwrap.indent(textwrap.dedent(run).strip("\n") + "\n", "  ")
    job = jenv.launch_d(f"name: {name}\nnum_nodes: {nodes}\nrun: |\n{script}")
    assert jenv.wait(job)["status"] == "SUCCEEDED"
    return job


def proc_status(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {key} in /proc/{pid}/status")


def proc_io(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/io") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key + ":"))


def count_lines(path: Path) -> int:
    n = 0
    with open(path, "rb") as f:
        while block := f.read(MIB):
            n += block.count(b"\n")
    return n


def test_logs_of_hundreds_of_mib_are_read_in_bounded_memory(jenv):
    job = running_job(jenv, nodes=2)
    big = log_path(jenv, job, "big", 0)
    try:
        n = fill(big, 256)
        other = fill(log_path(jenv, job, "big", 1), 16)
        expected = 2 + n + other  # each node's "started" too

        once = measure(jenv, "logs", str(job), "--no-follow")
        assert once["rc"] == 0 and once["lines"] == expected
        assert once["tail"].endswith(f"(big, rank=1) {numbered(other - 1)}\n")
        assert once["maxrss_kb"] < RSS_LIMIT_KB, once["maxrss_kb"]

        # Following a running job: everything arrives, and the peak stays as low.
        out = jenv.tmp / "followed.txt"
        with open(out, "wb") as f:
            p = subprocess.Popen([sys.executable, "-m", "jobgroup", "logs", str(job)],
                                 stdout=f, env=jenv.env, cwd=jenv.tmp)
        try:
            wait_for(lambda: out.stat().st_size >= once["bytes"], timeout=300, interval=0.2)
            peak = proc_status(p.pid, "VmHWM")
        finally:
            p.send_signal(signal.SIGINT)
            assert p.wait(timeout=30) == 130
        assert count_lines(out) == expected
        assert peak < RSS_LIMIT_KB, peak
    finally:
        big.unlink()
        (jenv.tmp / "followed.txt").unlink(missing_ok=True)


def test_a_64_mib_line_without_newline_is_delivered_whole(jenv):
    job = finished_job(jenv, "echo hi")
    path = log_path(jenv, job, "t")
    try:
        with open(path, "ab") as f:
            for _ in range(64):
                f.write(b"y" * MIB)
        got = measure(jenv, "logs", str(job), "--no-follow")
        # One output line: printed whole, after one prefix, with its newline added at the end.
        assert got["lines"] == 2
        assert got["bytes"] == len("(t, rank=0) hi\n") + len("(t, rank=0) ") + 64 * MIB + 1
        assert got["tail"].endswith("y" * 1000 + "\n")
        assert got["maxrss_kb"] < RSS_LIMIT_KB, got["maxrss_kb"]

        # The API hands it over in pieces of at most 1 MiB; joined, they are the line.
        pieces = list(jobgroup.logs(job, home=jenv.home))[1:]
        assert [p.more for p in pieces] == [True] * 63 + [False]
        assert all(len(p.text) == MIB for p in pieces)
        assert sum(len(p.text) for p in pieces) == 64 * MIB
    finally:
        path.unlink()


def test_long_lines_are_cut_between_characters(jenv):
    # 3-byte characters: 1 MiB is not a multiple of 3, so a cut at 1 MiB would split one.
    job = finished_job(jenv, "echo hi")
    path = log_path(jenv, job, "t")
    line = "€" * 1_000_000 + "end"
    with open(path, "a", encoding="utf-8") as f:
        f.write(line + "\nafter\n")
    pieces = list(jobgroup.logs(job, home=jenv.home))[1:]
    assert [p.more for p in pieces] == [True, True, False, False]
    assert all(len(p.text.encode()) <= MIB for p in pieces)
    assert "".join(p.text for p in pieces[:3]) == line and pieces[3].text == "after"
    assert "\ufffd" not in "".join(p.text for p in pieces)
    # The CLI prints the line whole again.
    out = jenv.jg("logs", str(job), "--no-follow", check=True).stdout
    assert out == f"(t, rank=0) hi\n(t, rank=0) {line}\n(t, rank=0) after\n"


RANKS = """
    for i in $(seq 1 50); do echo "r$SKYPILOT_NODE_RANK-$i"; done
    printf "r$SKYPILOT_NODE_RANK-end"
    """


def test_tail_prints_exactly_the_last_n_lines_of_each_node(jenv):
    job = finished_job(jenv, RANKS, name="w", nodes=2)

    def shown(*extra: str) -> list[str]:
        return jenv.jg("logs", str(job), *extra, check=True).stdout.splitlines()

    def node(lines: list[str], rank: int) -> list[str]:
        return [ln for ln in lines if f"(w, rank={rank})" in ln]

    # the last 3 lines of each node, merged across nodes in the order they came
    three = shown("--tail", "3", "--no-follow")
    assert node(three, 0) == ["(w, rank=0) r0-49", "(w, rank=0) r0-50", "(w, rank=0) r0-end"]
    assert node(three, 1) == ["(w, rank=1) r1-49", "(w, rank=1) r1-50", "(w, rank=1) r1-end"]
    stamped = shown("--tail", "3", "--no-follow", "--timestamps")
    assert [ln.split(" ", 1)[1] for ln in stamped] == three
    assert [ln.split()[0] for ln in stamped] == sorted(ln.split()[0] for ln in stamped)
    assert shown("--tail", "1", "--node", "1") == ["(w, rank=1) r1-end"]
    assert shown("--tail", "0", "--no-follow") == []
    everything = shown("--no-follow")
    assert len(everything) == 102
    for n in ("51", "1000"):
        merged = shown("--tail", n, "--no-follow")
        assert sorted(merged) == sorted(everything)
        assert node(merged, 0) == node(everything, 0) and node(merged, 1) == node(everything, 1)
    bad = jenv.jg("logs", str(job), "--tail", "-1")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and "--tail" in bad.stderr

    got = list(jobgroup.logs(job, "w", rank=0, tail=2, home=jenv.home))
    assert [ln.text for ln in got] == ["r0-50", "r0-end"]


def test_tail_reads_from_the_end_of_the_files(jenv):
    job = running_job(jenv)
    big = log_path(jenv, job, "big")
    try:
        n = fill(big, 256)
        out = jenv.tmp / "tail.txt"
        with open(out, "wb") as f:
            p = subprocess.Popen([sys.executable, "-m", "jobgroup", "logs", str(job), "--tail",
                                  "5"], stdout=f, env=jenv.env, cwd=jenv.tmp)
        try:
            wait_for(lambda: out.read_bytes().count(b"\n") >= 5, timeout=60)
            read = proc_io(p.pid, "rchar")  # it now waits for more: all it read is counted
            with open(big, "ab") as f:
                f.write(b"one more\n")
            wait_for(lambda: out.read_bytes().count(b"\n") >= 6, timeout=60)
        finally:
            p.send_signal(signal.SIGINT)
            assert p.wait(timeout=30) == 130
        assert out.read_text().splitlines() == [
            f"(big, rank=0) {numbered(i)}" for i in range(n - 5, n)] + ["(big, rank=0) one more"]
        assert read < 32 * MIB, read  # a Python start-up and a few blocks, not 256 MiB
    finally:
        big.unlink()


DASHBOARD = textwrap.dedent("""
    import sys
    from jobgroup.dashboard.server import make_server
    server = make_server(sys.argv[1], "127.0.0.1", 0)
    print(server.port, getattr(server, "token", None) or "", flush=True)
    server.serve_forever()
""")


@pytest.fixture
def dashboard_process(jenv):
    """A dashboard of the test's state directory in a process of its own: (pid, port, token)."""
    p = subprocess.Popen([sys.executable, "-c", DASHBOARD, str(jenv.home)], stdout=subprocess.PIPE,
                         text=True, env=jenv.env, cwd=jenv.tmp)
    port, _, token = p.stdout.readline().strip().partition(" ")
    yield p.pid, int(port), token
    p.terminate()
    p.wait(timeout=30)


def _get(port: int, token: str, path: str):
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    conn.request("GET", path, headers={"Authorization": f"Bearer {token}"} if token else {})
    return conn, conn.getresponse()


def test_dashboard_log_endpoints_read_in_bounded_memory(jenv, dashboard_process):
    pid, port, token = dashboard_process
    job = running_job(jenv)
    big = log_path(jenv, job, "big")
    width = 4096
    try:
        n = fill(big, 256, width=width)
        conn, r = _get(port, token, f"/api/jobs/{job}/logs?tail=100")
        body = json.loads(r.read())
        conn.close()
        assert r.status == 200 and body["truncated"]
        assert [ln["text"] for ln in body["lines"]] == [numbered(i, width)
                                                        for i in range(n - 100, n)]
        conn, r = _get(port, token, f"/api/jobs/{job}/logs")  # the default tail: capped reply
        body = json.loads(r.read())
        conn.close()
        assert r.status == 200 and body["truncated"]
        assert body["lines"][-1]["text"] == numbered(n - 1, width)
        assert 100 < len(body["lines"]) < 10_000

        # The stream, from the very start: every line arrives, through a bounded queue.
        conn, r = _get(port, token, f"/api/jobs/{job}/logs/stream?tail=999999999")
        assert r.status == 200
        seen, last = 0, ""
        pending = b""
        while seen < n + 1:
            block = r.read1(MIB)
            assert block, "the stream ended early"
            pending += block
            *events, pending = pending.split(b"\n\n")
            for ev in events:
                if ev.startswith(b"data: "):
                    seen += 1
                    last = ev
        conn.close()
        assert json.loads(last[len(b"data: "):])["text"] == numbered(n - 1, width)

        # 64 MiB of NUL bytes (a sparse hole: \u0000 is 6 bytes of JSON each): still capped.
        os.truncate(big, big.stat().st_size + 64 * MIB)
        conn, r = _get(port, token, f"/api/jobs/{job}/logs?tail=1")
        body = r.read()
        conn.close()
        assert r.status == 200 and json.loads(body)["truncated"]
        assert len(body) < 7 * MIB  # its last piece: 1 MiB of NULs, 6 MiB as JSON
        assert proc_status(pid, "VmHWM") < RSS_LIMIT_KB
    finally:
        big.unlink()
