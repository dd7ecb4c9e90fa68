"""Dashboard benchmarks (issues 10 and 21): figures for bench/RESULTS.md.

usage: .venv/bin/python bench/bench_dashboard.py [--jobs 1000] [--runs 30] [--no-browser]
       .venv/bin/python bench/bench_dashboard.py --compare [REV] [--seconds 5] [--clients 8]

`--compare`: the dashboard of commit REV (default: the last one on the standard library's
`http.server`, before issue 21) and this tree's, each in a process of its own, serving the same
state directory one after the other, measured by the same client in the same run: start-up (spawn
to the first answer), memory (RSS idle, and the peak after the load), the jobs list (every job:
latency on fresh connections, then requests/s and latency with `--clients` keep-alive
connections for `--seconds`), the log stream (open to first line; the delay from a line written
to a node's file to its arrival, with `--clients` streams open while 3 nodes write 50 lines/s
each). REV's tree comes from `git archive` (nothing of the working tree changes).

A temporary state directory gets `--jobs` jobs written straight into the store (3 tasks and 4
nodes each, ~14 events each, statuses mixed: 85% ended, the rest PENDING/RUNNING; no controller,
no processes: the dashboard only reads), and one job's node logs (3 x 2,000 lines). The
dashboard serves it on 127.0.0.1 from a thread of this process; requests come from a plain
http.client connection (a fresh connection per request, like a browser's first visit) with the
token (`Authorization: Bearer`); the browser signs in once through the token URL.

Measured (medians [p90] of `--runs` runs):
  - the server: GET / (the jobs page with every job), the poll of its rows (200 and 304 with
    If-None-Match), GET /api/jobs, a group page, its poll, /api/jobs/{id}, /events, /logs, the
    first line of a log stream;
  - the browser (Debian's chromium through Playwright, when present): navigation start to the
    `load` event of the jobs page with every job (HTML, CSS, JS, rows rendered), and of a group
    page; its first live update.
The budget: the jobs page with 1,000 jobs loads in under 1 s.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from jobgroup.state import layout as paths
from jobgroup.dashboard.server import make_server, serve_in_thread
from jobgroup.state.store import Store

TERMINAL = ["SUCCEEDED"] * 6 + ["FAILED", "CANCELLED"]


def populate(home: Path, n: int) -> int:
    """`n` jobs with tasks, nodes and events; returns the id of the job with logs."""
    st = Store(home)
    rnd = random.Random(10)
    now = time.time()
    spec = "name: bench\nexecution: parallel\n---\nname: trainer\nrun: x\n---\nname: rollout\n" \
           "num_nodes: 2\nrun: x\n---\nname: reward\nrun: x\n"
    for i in range(n):
        jid = st.create_job(name=f"bench-{i}", execution="parallel", spec=spec, base_dir="/",
                            options={}, tasks=[("trainer", 1, True), ("rollout", 2, True),
                                               ("reward", 1, False)])
        t0 = now - (n - i) * 60
        status = rnd.choice(TERMINAL) if i < n * 0.85 else rnd.choice(["PENDING", "RUNNING"])
        status = "SUCCEEDED" if i == 0 else "RUNNING" if i == n - 1 else status
        ended = t0 + 50 if status not in ("PENDING", "RUNNING") else None
        started = t0 + 1 if status != "PENDING" else None
        with st.write() as c:
            c.execute("UPDATE jobs SET status=?, reason=?, submitted_at=?, started_at=?, "
                      "ended_at=? WHERE id=?", (status, f"bench {status.lower()}", t0, started,
                                                ended, jid))
            c.execute("UPDATE tasks SET status=?, started_at=?, ended_at=?, restarts=? "
                      "WHERE job_id=?", (status, started, ended, rnd.choice([0, 0, 0, 1]), jid))
            for k, (t, r) in enumerate([(0, 0), (1, 0), (1, 1), (2, 0)]):
                c.execute("UPDATE nodes SET phase=?, address=?, hostname=?, started_at=?, "
                          "ended_at=?, exit_code=? WHERE job_id=? AND task_idx=? AND rank=?",
                          ("ended" if ended else "run", f"10.213.{i % 250}.{k + 2}",
                           ["trainer", "rollout", "rollout", "reward"][k] + f"-{r}", started,
                           ended, 0 if ended else None, jid, t, r))
            evs = [(None, None, t0 + 1, "job PENDING -> STARTING", "admitted")]
            for k, (t, r) in enumerate([(0, 0), (1, 0), (1, 1), (2, 0)]):
                evs += [(t, r, t0 + 1.1, "setup-started", "pid 1"),
                        (t, r, t0 + 2, "setup-ended", "exit code 0"),
                        (t, r, t0 + 2.1, "run-started", "pid 2")]
                if ended:
                    evs.append((t, r, t0 + 40 + k, "run-ended", "exit code 0"))
            c.executemany("INSERT INTO events(job_id, task_idx, rank, at, kind, message) "
                          "VALUES (?,?,?,?,?,?)", [(jid, *e) for e in evs])
    st.close()
    log_job = n  # the newest job: give it logs
    for task, rank in (("trainer", 0), ("rollout", 0), ("rollout", 1)):
        p = paths.log_path(home, log_job, task, rank)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("".join(f"{task} {rank}: step {i} loss=0.{i % 97:02d}\n" for i in range(2000)))
    return log_job


TOKEN = ""  # the dashboard's token, set in main()


def get(port: int, path: str, headers: dict[str, str] | None = None,
        first_line: bool = False) -> tuple[float, int, bytes, str]:
    t = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", path, headers={"Authorization": f"Bearer {TOKEN}", **(headers or {})})
    r = conn.getresponse()
    body = r.readline() + r.readline() + r.readline() if first_line else r.read()
    dt = time.perf_counter() - t
    conn.close()
    return dt, r.status, body, r.headers.get("ETag") or ""


def stats(xs: list[float]) -> str:
    xs = sorted(xs)
    p90 = xs[min(len(xs) - 1, int(round(0.9 * (len(xs) - 1))))]
    return f"{statistics.median(xs) * 1000:.1f} ms [{p90 * 1000:.1f}]"


def bench_server(port: int, job: int, runs: int) -> list[tuple[str, str, str]]:
    _, _, rows, rows_tag = get(port, "/fragments/jobs?status=all")
    ended = 1  # the oldest jobs have ended (see populate)
    _, _, _, ended_tag = get(port, f"/fragments/jobs/{ended}")
    cases = [
        ("GET / (jobs page: the first 100 jobs)", "/", None, False),
        ("GET /?limit=1000 (jobs page, every job)", "/?limit=1000", None, False),
        ("poll of its rows, changed (200)", "/fragments/jobs?status=all", None, False),
        ("poll of its rows, unchanged (304)", "/fragments/jobs?status=all",
         {"If-None-Match": rows_tag}, False),
        ("GET /api/v1/jobs (the first 100 jobs with their tasks, JSON)", "/api/v1/jobs", None,
         False),
        ("GET /api/v1/jobs?limit=1000 (every job)", "/api/v1/jobs?limit=1000", None, False),
        ("GET /api/v1/jobs?status=RUNNING", "/api/v1/jobs?status=RUNNING", None, False),
        ("GET /api/v1/jobs?q=bench-99 (search)", "/api/v1/jobs?q=bench-99", None, False),
        ("GET /jobs/{id} (group page)", f"/jobs/{job}", None, False),
        ("poll of the group page (running: the timeline grows)", f"/fragments/jobs/{job}",
         None, False),
        ("poll of an ended group's page, unchanged (304)", f"/fragments/jobs/{ended}",
         {"If-None-Match": ended_tag}, False),
        ("GET /api/v1/jobs/{id}", f"/api/v1/jobs/{job}", None, False),
        ("GET /api/v1/jobs/{id}/events", f"/api/v1/jobs/{job}/events", None, False),
        ("GET /api/v1/jobs/{id}/logs (6,000 lines, merged)", f"/api/v1/jobs/{job}/logs", None,
         False),
        ("log stream: first line", f"/api/v1/jobs/{job}/logs/stream", None, True),
    ]
    times: dict[str, list[float]] = {c[0]: [] for c in cases}
    sizes: dict[str, int] = {}
    for i in range(runs):
        order = cases[i % len(cases):] + cases[:i % len(cases)]  # interleaved
        for name, path, headers, first in order:
            dt, status, body, _ = get(port, path, headers, first)
            assert status in (200, 304), (path, status)
            times[name].append(dt)
            sizes[name] = len(body)
    return [(name, stats(times[name]), f"{sizes[name] / 1024:.0f} KiB" if sizes[name] > 2048
             else f"{sizes[name]} B") for name, *_ in cases]


def bench_browser(url: str, login_url: str, job: int, runs: int,
                  bare: str) -> list[tuple[str, str, str]]:
    chromium = shutil.which("chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return [("browser", "skipped: playwright not installed", "")]
    if not chromium:
        return [("browser", "skipped: no chromium", "")]
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync"]
    out = []
    profile = tempfile.mkdtemp(prefix="bench-chromium-")
    try:
        with sync_playwright() as p:
            ctx = p.chromium.launch_persistent_context(profile, executable_path=chromium,
                                                       headless=True, args=flags)
            page = ctx.new_page()
            page.goto(login_url)  # the session cookie, once
            page.wait_for_selector("#jobs-rows tr[data-id]")
            for label, target, check in [
                ("jobs page (first 100 of 1,000 jobs): navigation to `load`", url,
                 "#jobs-rows tr[data-id]"),
                ("jobs page, every job (?limit=1000): navigation to `load`",
                 f"{url}?limit=1000", "#jobs-rows tr[data-id]"),
                ("group page: navigation to `load`", f"{url}jobs/{job}", "svg.timeline"),
                ("baseline: the every-job page's HTML as a static file, no CSS/JS: to `load`", bare,
                 "tr[data-id]"),
            ]:
                loads, doms = [], []
                for _ in range(runs):
                    page.goto("about:blank")
                    page.goto(target, wait_until="load")
                    page.wait_for_selector(check)
                    nav = page.evaluate("JSON.stringify(performance.getEntriesByType("
                                        "'navigation')[0])")
                    nav = json.loads(nav)
                    loads.append(nav["loadEventEnd"] / 1000)
                    doms.append(nav["domContentLoadedEventEnd"] / 1000)
                rows = page.locator("#jobs-rows tr[data-id]").count() if "jobs page" in label \
                    else ""
                out.append((label, stats(loads), f"{rows} rows" if rows else ""))
                if not label.startswith("baseline"):
                    out.append((label.replace("`load`", "DOMContentLoaded"), stats(doms), ""))
            ctx.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    return out


def bare_copy(port: int, home: Path) -> str:
    """A file: URL of the jobs page's HTML without its stylesheet and script (the browser's
    own cost of 1,000 table rows, for comparison)."""
    _, _, body, _ = get(port, "/?limit=1000")
    html = body.decode().replace('<link rel="stylesheet" href="/static/style.css">', "")
    html = html.replace('<script src="/static/app.js" defer></script>', "")
    path = home / "bare.html"
    path.write_text(html)
    return path.as_uri()


# ---- --compare: two servers, one client ---------------------------------------------------------

OLD_REV = "e1cb00e^"  # the last commit whose dashboard is hand-written on http.server
SERVE = """
import sys
from jobgroup.dashboard.server import make_server
server = make_server(sys.argv[1], "127.0.0.1", 0)
print(server.port, flush=True)
server.serve_forever()
"""
NEW_LIST = "/api/v1/jobs?limit=1000"  # every job (the old API had no pages)


def _kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))] if xs else float("nan")


def start_server(src: Path, home: Path) -> tuple["subprocess.Popen[str]", int, float]:
    """A dashboard of `home` from the source tree `src`; (process, port, seconds from spawn to
    its first answer)."""
    import subprocess

    t = time.perf_counter()
    p = subprocess.Popen([sys.executable, "-c", SERVE, str(home)], stdout=subprocess.PIPE,
                         text=True, env={**os.environ, "PYTHONPATH": str(src)})
    port = int(p.stdout.readline())
    while True:
        try:
            if get(port, "/favicon.ico")[1] in (200, 204):
                break
        except OSError:
            time.sleep(0.005)
    return p, port, time.perf_counter() - t


def load(port: int, path: str, clients: int, seconds: float) -> tuple[float, list[float]]:
    """`clients` threads, each on its own keep-alive connection, GET `path` for `seconds`:
    (requests/s, latencies)."""
    import threading

    lat: list[float] = []
    done = [0]
    stop = time.perf_counter() + seconds

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        mine = []
        while time.perf_counter() < stop:
            t = time.perf_counter()
            conn.request("GET", path, headers={"Authorization": f"Bearer {TOKEN}"})
            r = conn.getresponse()
            r.read()
            assert r.status == 200, r.status
            mine.append(time.perf_counter() - t)
        conn.close()
        lat.extend(mine)
        done[0] += len(mine)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    t0 = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return done[0] / (time.perf_counter() - t0), lat


def stream_delays(port: int, path: str, files: list[Path], clients: int,
                  seconds: float) -> tuple[float, list[float]]:
    """`clients` SSE streams of `path` open while a writer appends 50 lines/s to each of
    `files` (each line carries the time it was written): (lines/s received, delays)."""
    import threading

    delays: list[float] = []
    got = [0]
    stop = threading.Event()
    ready = threading.Barrier(clients + 1)

    def reader() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        conn.request("GET", path, headers={"Authorization": f"Bearer {TOKEN}"})
        r = conn.getresponse()
        r.read1(65536)  # the start event (then what the tail holds: none, tail=0)
        ready.wait()
        mine = []
        buf = b""
        while not stop.is_set():
            chunk = r.read1(65536)
            if not chunk:
                break
            now = time.time()
            buf += chunk
            *events, buf = buf.split(b"\n\n")
            for ev in events:
                i = ev.find(b"t=")
                if ev.startswith(b"data: ") and i > 0:
                    mine.append(now - float(ev[i + 2:ev.index(b" ", i)]))
        conn.close()
        delays.extend(mine)
        got[0] += len(mine)

    threads = [threading.Thread(target=reader, daemon=True) for _ in range(clients)]
    for th in threads:
        th.start()
    ready.wait()
    handles = [open(f, "a", buffering=1) for f in files]
    t0 = time.perf_counter()
    k = 0
    while time.perf_counter() - t0 < seconds:
        for h in handles:
            h.write(f"t={time.time():.6f} step {k}\n")
        k += 1
        time.sleep(0.02)
    time.sleep(0.5)  # the last lines' way through
    stop.set()
    for h in handles:
        h.close()
    for th in threads:
        th.join(timeout=5)
    return got[0] / (time.perf_counter() - t0), delays


def compare(rev: str, jobs: int, runs: int, clients: int, seconds: float) -> None:
    import subprocess

    global TOKEN
    root = Path(__file__).resolve().parent.parent
    work = Path(tempfile.mkdtemp(prefix="bench-dashboard-compare-"))
    home = work / "home"
    old_src = work / "old"
    old_src.mkdir()
    archive = subprocess.run(["git", "-C", str(root), "archive", rev, "src/jobgroup"],
                             capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(old_src)], input=archive, check=True)
    commit = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", rev],
                            capture_output=True, text=True, check=True).stdout.strip()
    job = populate(home, jobs)
    from jobgroup.dashboard.auth import load_or_create_token

    TOKEN = load_or_create_token(home)
    files = [paths.log_path(home, job, task, rank)
             for task, rank in (("trainer", 0), ("rollout", 0), ("rollout", 1))]
    rows: dict[str, dict[str, str]] = {}
    servers = [(f"before ({commit}, http.server)", old_src / "src", "/api/jobs"),
               ("after (Litestar + Hypercorn)", root / "src", NEW_LIST)]
    try:
        for label, src, list_path in servers:
            p, port, started = start_server(src, home)
            col = rows.setdefault(label, {})
            try:
                col["start-up: spawn to first answer"] = f"{started * 1000:.0f} ms"
                col["RSS idle"] = f"{_kb(p.pid, 'VmRSS') / 1024:.0f} MB"
                fresh = [get(port, list_path)[0] for _ in range(runs)]
                body = get(port, list_path)[2]
                col["jobs list, every job: size"] = f"{len(body) / 1024:.0f} KiB"
                col["… fresh connection: p50 / p99"] = \
                    f"{pct(fresh, .5) * 1000:.1f} / {pct(fresh, .99) * 1000:.1f} ms"
                rps, lat = load(port, list_path, clients, seconds)
                col[f"… {clients} keep-alive clients: requests/s"] = f"{rps:.1f}"
                col["… p50 / p99"] = f"{pct(lat, .5) * 1000:.1f} / {pct(lat, .99) * 1000:.1f} ms"
                if list_path == NEW_LIST:
                    rps, lat = load(port, "/api/v1/jobs", clients, seconds)
                    col["jobs list, first page (100, the default): requests/s"] = f"{rps:.1f}"
                    col["… p50 / p99 "] = \
                        f"{pct(lat, .5) * 1000:.1f} / {pct(lat, .99) * 1000:.1f} ms"
                stream = f"/api/jobs/{job}/logs/stream"
                first = [get(port, stream, first_line=True)[0] for _ in range(runs)]
                col["log stream: open to first line, p50 / p99"] = \
                    f"{pct(first, .5) * 1000:.1f} / {pct(first, .99) * 1000:.1f} ms"
                lps, delays = stream_delays(port, stream + "?tail=0", files, clients, seconds)
                col[f"live log, {clients} streams × 3 nodes × 50 lines/s: lines/s received"] = \
                    f"{lps:.0f}"
                col["… write to arrival, p50 / p99"] = \
                    f"{pct(delays, .5) * 1000:.0f} / {pct(delays, .99) * 1000:.0f} ms"
                col["peak RSS (VmHWM) after all this"] = f"{_kb(p.pid, 'VmHWM') / 1024:.0f} MB"
            finally:
                p.terminate()
                p.wait(timeout=30)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"# {jobs} jobs; CPython {platform.python_version()}, {os.cpu_count()} CPUs; "
          f"{runs} runs, {clients} clients, {seconds:g} s of load", file=sys.stderr)
    labels = list(rows)
    print("| measure | " + " | ".join(labels) + " |")
    print("|---" * (len(labels) + 1) + "|")
    for name in rows[labels[-1]]:
        print(f"| {name.strip()} | " + " | ".join(rows[lb].get(name, "-") for lb in labels)
              + " |")


def main() -> None:
    global TOKEN
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--no-browser", action="store_true")
    ap.add_argument("--compare", nargs="?", const=OLD_REV, metavar="REV",
                    help="the dashboard of REV against this tree's (see above)")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=5.0)
    args = ap.parse_args()
    if args.compare:
        compare(args.compare, args.jobs, args.runs, args.clients, args.seconds)
        return
    home = Path(tempfile.mkdtemp(prefix="bench-dashboard-"))
    try:
        t = time.perf_counter()
        job = populate(home, args.jobs)
        print(f"# {args.jobs} jobs written in {time.perf_counter() - t:.1f} s; "
              f"CPython {platform.python_version()}, {os.cpu_count()} CPUs", file=sys.stderr)
        server = make_server(home, "127.0.0.1", 0)
        serve_in_thread(server)
        TOKEN = server.token or ""
        try:
            rows = bench_server(server.port, job, args.runs)
            if not args.no_browser:
                bare = bare_copy(server.port, home)
                rows += bench_browser(server.url, server.login_url, job, max(5, args.runs // 3),
                                      bare)
        finally:
            server.shutdown()
            server.server_close()
    finally:
        shutil.rmtree(home, ignore_errors=True)
    print("| measure | median [p90] | size |")
    print("|---|---|---|")
    for name, value, size in rows:
        print(f"| {name} | {value} | {size} |")


if __name__ == "__main__":
    main()
