"""Refresh the dashboard's screenshots in docs/ from real groups, in headless Chromium.

usage: .venv/bin/python docs/screenshots.py   (as root for the per-node use: cgroups)

A temporary state directory gets a few real groups through the Python API: an RL-shaped group
that runs while the pictures are taken (trainer, 2 rollout nodes, reward; CPU and memory
requests), one that succeeded, one that failed, one waiting for the CPUs the first holds, and
one that asks more than this machine has (its nodes never start). The dashboard serves it on
127.0.0.1; Debian's `chromium`, driven by Playwright's client (no browser download), signs in
through the printed URL and takes:

- docs/dashboard-jobs.png     the jobs page (status filter, search, infra, reasons with links)
- docs/dashboard-group.png    the running group: tasks and nodes with resources and use, timeline,
                              logs of every task merged in time order
- docs/dashboard-waiting.png  the waiting group: the jobs that hold what it needs, linked
- docs/dashboard-never.png    the group that can never start here: its nodes say so
- docs/dashboard-signin.png   the page shown without the token
Everything it started is cancelled and its controller stopped at the end.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import textwrap
import time
from pathlib import Path

DOCS = Path(__file__).resolve().parent
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage"]

RL = """
    name: rl-post-training
    execution: parallel
    ---
    name: trainer
    resources: {cpus: 0.5, memory: 1}
    run: |
      python3 - <<'EOF'
      import time
      held = bytearray(96 << 20)
      t0 = time.time()
      step = 0
      while time.time() - t0 < 120:
          x = sum(i * i for i in range(200_000))
          step += 1
          if step % 15 == 0:
              print(f"step {step}: loss={1 / step:.4f} reward=0.{step % 97:02d}", flush=True)
      EOF
    ---
    name: rollout
    num_nodes: 2
    resources: {cpus: 0.25, memory: 0.5}
    run: |
      for i in $(seq 1 200); do echo "rollout batch $i from $(hostname)"; sleep 0.7; done
    ---
    name: reward
    resources: {cpus: 0.25}
    run: |
      for i in $(seq 1 200); do echo "scored $((i * 64)) samples"; sleep 1.1; done
    """


def main() -> None:
    chromium = shutil.which("chromium")
    if chromium is None:
        sys.exit("needs Debian's chromium (apt-get install chromium)")
    from playwright.sync_api import expect, sync_playwright

    work = Path(tempfile.mkdtemp(prefix="jobgroup-screens-"))
    home = work / "home"
    os.environ["JOBGROUP_HOME"] = str(home)
    from jobgroup import api
    from jobgroup.dashboard.server import make_server, serve_in_thread

    def launch(text: str, **kw) -> int:
        return api.launch(textwrap.dedent(text), home=home, **kw).id

    ok = launch("name: preprocess\nrun: echo tokenized 1200 shards\n")
    bad = launch("name: eval-sweep\nrun: echo loading checkpoint; exit 3\n")
    api.wait(ok, timeout=60, home=home)
    api.wait(bad, timeout=60, home=home)
    rl = launch(RL)
    waiting = launch("name: big-eval\nresources: {cpus: 2}\nrun: echo evaluating\n")
    never = launch("name: pretrain-70b\nnum_nodes: 2\nresources: {cpus: 64, memory: 512}\n"
                   "run: python train.py\n")
    api.wait(never, timeout=60, home=home)
    server = make_server(home, "127.0.0.1", 0)
    serve_in_thread(server)
    profile = tempfile.mkdtemp(prefix="jobgroup-chromium-")
    try:
        with sync_playwright() as p:
            ctx = p.chromium.launch_persistent_context(
                profile, executable_path=chromium, headless=True, args=FLAGS,
                viewport={"width": 1280, "height": 860})
            page = ctx.new_page()
            page.goto(server.url)
            page.screenshot(path=DOCS / "dashboard-signin.png", clip={"x": 0, "y": 0,
                                                                       "width": 1280,
                                                                       "height": 240})
            page.goto(server.login_url)
            page.wait_for_selector("#jobs-rows tr[data-id]")
            time.sleep(8)  # the group runs a while: a timeline, logs, use figures
            page.goto(server.url)
            page.wait_for_selector(f'#jobs-rows tr[data-id="{never}"]')
            page.screenshot(path=DOCS / "dashboard-jobs.png", clip={"x": 0, "y": 0,
                                                                     "width": 1280, "height": 330})
            page.goto(f"{server.url}jobs/{rl}")
            page.wait_for_selector("#logs .line")
            if os.geteuid() == 0:  # (the page's CSP forbids eval: wait on a locator)
                expect(page.locator("tr.node td.use").first).to_contain_text("CPU 0",
                                                                            timeout=20_000)
            time.sleep(2)
            page.screenshot(path=DOCS / "dashboard-group.png", full_page=True)
            page.goto(f"{server.url}jobs/{waiting}")
            page.wait_for_selector("#blocked-by")
            page.screenshot(path=DOCS / "dashboard-waiting.png", clip={"x": 0, "y": 0,
                                                                        "width": 1280,
                                                                        "height": 560})
            page.goto(f"{server.url}jobs/{never}")
            page.wait_for_selector(".p-never-started")
            page.screenshot(path=DOCS / "dashboard-never.png", clip={"x": 0, "y": 0,
                                                                      "width": 1280,
                                                                      "height": 520})
            ctx.close()
    finally:
        server.shutdown()
        server.server_close()
        for job in api.queue(home=home):
            api.cancel(job.id, home=home)
            api.wait(job.id, timeout=60, home=home)
        import subprocess

        subprocess.run([sys.executable, "-m", "jobgroup", "controller", "stop"], check=False,
                       env={**os.environ, "JOBGROUP_HOME": str(home)}, capture_output=True)
        shutil.rmtree(profile, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
    print("written:", ", ".join(sorted(f.name for f in DOCS.glob("dashboard-*.png"))))


if __name__ == "__main__":
    main()
