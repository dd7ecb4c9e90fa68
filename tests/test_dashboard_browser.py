"""The dashboard in a real headless Chromium (Debian's `chromium`, driven by Playwright's client
library; Playwright's own browser downloads are never used). This module installs nothing: it
skips, saying why, where chromium or the playwright package is missing (scripts/bootstrap
installs both).

A user's view: sign in through the URL `jobgroup dashboard` prints (or the file `--open` hands the
browser), launch a group, open its page, watch its tasks turn RUNNING then SUCCEEDED and its log
lines appear; cancel a second group from its page (declining the confirmation first); filter the
jobs page by status.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
import textwrap

import pytest

from jobgroup import api
from jobgroup.dashboard import auth
from test_dashboard_helpers import dashboard, set_job, store_jobs  # noqa: F401 (fixture)

CHROMIUM = os.environ.get("JOBGROUP_TEST_CHROMIUM") or shutil.which("chromium") or ""
try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:  # pragma: no cover - depends on the machine
    sync_playwright = None

pytestmark = [
    pytest.mark.skipif(not CHROMIUM, reason="no chromium on this machine (Debian: apt-get "
                       "install chromium; scripts/bootstrap installs it as root)"),
    pytest.mark.skipif(sync_playwright is None, reason="the playwright package is not installed "
                       "(pip install playwright; its browser download is not needed)"),
]

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage"]
TIMEOUT_MS = 30_000


@pytest.fixture
def browser():
    profile = tempfile.mkdtemp(prefix="jobgroup-chromium-")
    with sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, headless=True, args=FLAGS,
            viewport={"width": 1200, "height": 900})
        ctx.set_default_timeout(TIMEOUT_MS)
        try:
            yield ctx
        finally:
            ctx.close()
            shutil.rmtree(profile, ignore_errors=True)


def _launch(server, text: str) -> int:
    return api.launch(textwrap.dedent(text), home=server.home).id


def _sign_in(page, server) -> None:
    """Open the printed URL (`?token=`): the browser lands on the jobs page, signed in by a
    cookie, with the token gone from the address bar."""
    page.goto(server.login_url)
    expect(page.locator("#jobs-rows")).to_be_visible()
    assert page.url == server.url


def test_sign_in_needs_the_token(dashboard, browser):
    page = browser.new_page()
    page.goto(dashboard.url)
    expect(page.locator("h1")).to_have_text("Token required")
    page.goto(dashboard.url + "?token=wrong")
    expect(page.locator("h1")).to_have_text("Token required")
    # --open hands the browser a file (its command line is public; the file is the user's own)
    login = auth.write_login_file(dashboard.home, dashboard.login_url)
    assert stat.S_IMODE(login.stat().st_mode) == 0o600
    page.goto(login.as_uri())
    expect(page.locator("#jobs-rows")).to_contain_text("No jobs.")
    assert page.url == dashboard.url
    cookies = browser.cookies(dashboard.url)
    assert [c["name"] for c in cookies] == [f"jobgroup_dashboard_{dashboard.port}"]
    assert cookies[0]["httpOnly"] and cookies[0]["sameSite"] == "Strict"
    assert cookies[0]["value"] != dashboard.token


def test_watch_a_group_run_then_cancel_another(dashboard, browser):
    errors: list[str] = []
    page = browser.new_page()
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)

    _sign_in(page, dashboard)
    job = _launch(dashboard, """
        name: watched
        execution: parallel
        ---
        name: server
        run: |
          echo "server up on $(hostname)"
          sleep 3
          echo "server finishing"
        ---
        name: workers
        num_nodes: 2
        run: |
          sleep 1
          echo "worker $SKYPILOT_NODE_RANK working"
          sleep 1.5
        """)
    page.goto(f"{dashboard.url}jobs/{job}")
    expect(page.locator("h1")).to_contain_text("watched")
    server_row = page.locator('tr.task[data-task="server"]')
    workers_row = page.locator('tr.task[data-task="workers"]')
    expect(server_row).to_have_attribute("data-status", "RUNNING")
    expect(workers_row).to_have_attribute("data-status", "RUNNING")
    logs = page.locator("#logs")
    expect(logs).to_contain_text("(server, rank=0)")
    expect(logs).to_contain_text("server up on server-0")
    expect(logs).to_contain_text("(workers, rank=1)")
    expect(logs).to_contain_text("worker 1 working")
    expect(page.locator('tr.node[data-task="workers"][data-rank="1"]')).to_contain_text(
        "workers-1")
    # the end: every task SUCCEEDED, the page stops polling, the log stream ends
    expect(server_row).to_have_attribute("data-status", "SUCCEEDED")
    expect(workers_row).to_have_attribute("data-status", "SUCCEEDED")
    expect(page.locator(".live-root")).to_have_attribute("data-done", "1")
    expect(page.locator(".live-root .badge").first).to_have_text("SUCCEEDED")
    expect(logs).to_contain_text("server finishing")
    expect(page.locator("#log-state")).to_contain_text("end of logs")
    expect(page.locator("svg.timeline .bar-run")).to_have_count(3)
    # the task filter: only the workers' lines
    page.select_option("#task-filter", "workers")
    expect(logs).to_contain_text("worker 0 working")
    expect(logs).not_to_contain_text("server up")

    # a second group, cancelled from its page (the confirmation declined once, then accepted)
    other = _launch(dashboard, "name: forever\nrun: echo waiting; sleep 300\n")
    page.goto(f"{dashboard.url}jobs/{other}")
    expect(page.locator('tr.task[data-task="forever"]')).to_have_attribute("data-status",
                                                                             "RUNNING")
    expect(page.locator("#logs")).to_contain_text("(forever, rank=0) waiting")
    dialogs: list[str] = []

    def dismiss(d):
        dialogs.append(d.message)
        d.dismiss()

    page.once("dialog", dismiss)
    page.click(".cancel-btn")
    assert dialogs and f"Cancel job {other} (forever)?" in dialogs[0]
    assert not api.get_job(other, home=dashboard.home).done
    page.once("dialog", lambda d: d.accept())
    page.click(".cancel-btn")
    expect(page.locator("#flash")).to_contain_text(f"Job {other}: cancelling")
    expect(page.locator(".live-root")).to_have_attribute("data-status", "CANCELLED")
    expect(page.locator('tr.task[data-task="forever"]')).to_have_attribute("data-status",
                                                                             "CANCELLED")
    expect(page.locator(".stops")).to_contain_text("cancel requested")
    assert api.get_job(other, home=dashboard.home).status.value == "CANCELLED"

    # the jobs page: both jobs, filtered by status without a reload
    page.goto(dashboard.url)
    rows = page.locator("#jobs-rows tr[data-id]")
    expect(rows).to_have_count(2)
    page.select_option("#status-filter", "CANCELLED")
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-id", str(other))
    assert page.url.endswith("/?status=CANCELLED")
    assert not errors, errors


def test_jobs_page_updates_live(dashboard, browser):
    page = browser.new_page()
    _sign_in(page, dashboard)
    expect(page.locator("#jobs-rows")).to_contain_text("No jobs.")
    job = _launch(dashboard, "name: appears\nrun: sleep 1\n")
    row = page.locator(f'#jobs-rows tr[data-id="{job}"]')
    expect(row).to_contain_text("appears")
    expect(row).to_have_attribute("data-status", "SUCCEEDED")
    expect(page.locator("#job-count")).to_have_text("1 job(s)")


# ---- issue 21: search, pages, infra, blocking jobs, never-started nodes, resources, merged logs
def test_jobs_page_search_pages_and_infra(dashboard, browser):
    ended = "SUCCEEDED"
    ids = store_jobs(dashboard.home, ["alpha", "beta", "gamma", "needle-in-hay", "delta"],
                     ended)
    slurm, = store_jobs(dashboard.home, ["on-slurm"], ended, infra="slurm",
                        slurm_job_id="4242")
    page = browser.new_page()
    page.goto(dashboard.login_url.replace("?token=", "?limit=2&token="))
    rows = page.locator("#jobs-rows tr[data-id]")
    expect(rows).to_have_count(2)
    expect(page.locator("#job-count")).to_have_text("1–2 of 6 job(s)")
    expect(rows.first).to_have_attribute("data-id", str(slurm))
    expect(rows.first.locator("td.infra")).to_have_text("slurm:4242")
    expect(rows.nth(1).locator("td.infra")).to_have_text("local")
    # the pages: older, then newer again
    page.click("#page-next")
    expect(page.locator("#job-count")).to_have_text("3–4 of 6 job(s)")
    expect(rows.first).to_have_attribute("data-id", str(ids[3]))
    page.click("#page-prev")
    expect(page.locator("#job-count")).to_have_text("1–2 of 6 job(s)")
    # the search, as you type (no reload): the page and the address follow
    page.fill("#job-search", "needle")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("needle-in-hay")
    expect(page.locator("#job-count")).to_have_text("1 job(s)")
    assert "q=needle" in page.url
    page.fill("#job-search", "no-such-job")
    expect(page.locator("#jobs-rows")).to_contain_text("No jobs.")
    page.fill("#job-search", str(ids[0]))
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-id", str(ids[0]))


def test_blocked_and_blocking_jobs_link_each_other_and_never_started_nodes(dashboard, browser):
    holder, waiter, hopeless = store_jobs(dashboard.home, ["holder", "waiter", "hopeless"],
                                          "SUCCEEDED")
    set_job(dashboard.home, holder, status="RUNNING", ended_at=None)
    set_job(dashboard.home, waiter, status="PENDING", ended_at=None,
             reason=f"waiting for 2 CPU(s): 0 free, 2 held by job {holder}")
    set_job(dashboard.home, hopeless, status="FAILED_NO_RESOURCE",
             reason="needs 64 CPU(s); this machine has 2")
    try:
        page = browser.new_page()
        _sign_in(page, dashboard)
        # the jobs page: the reason links to the job that holds what the waiter needs
        row = page.locator(f'#jobs-rows tr[data-id="{waiter}"]')
        expect(row.locator("a.job-ref")).to_have_text(str(holder))
        page.goto(f"{dashboard.url}jobs/{waiter}")
        expect(page.locator("#blocked-by")).to_contain_text(f"held by job {holder}")
        page.click("#blocked-by a.job-ref")
        expect(page.locator("h1")).to_contain_text("holder")
        assert page.url.endswith(f"/jobs/{holder}")
        expect(page.locator("#blocking")).to_contain_text(f"job {waiter}")
        page.click("#blocking a.job-ref")
        expect(page.locator("h1")).to_contain_text("waiter")
        # a node of a job that could never start says so (not "waiting")
        page.goto(f"{dashboard.url}jobs/{hopeless}")
        node = page.locator('tr.node[data-task="t"][data-rank="0"]')
        expect(node.locator(".phase")).to_have_text("never started")
        expect(node.locator(".p-never-started")).to_have_count(1)
    finally:
        for j in (holder, waiter):
            set_job(dashboard.home, j, status="CANCELLED")


def test_group_page_shows_resources_use_and_merged_logs(dashboard, browser):
    page = browser.new_page()
    _sign_in(page, dashboard)
    job = _launch(dashboard, """
        name: chorus
        execution: parallel
        ---
        name: a
        resources: {cpus: 1, memory: 1}
        run: |
          echo a1; sleep 1.2; echo a2; sleep 1.2; echo a3
          python3 -c "
          import time
          x = bytearray(48 << 20)
          t = time.time()
          while time.time() - t < 4: pass
          "
        ---
        name: b
        run: |
          sleep 0.6; echo b1; sleep 1.2; echo b2; sleep 1.2; echo b3
        """)
    page.goto(f"{dashboard.url}jobs/{job}")
    a0 = page.locator('tr.node[data-task="a"][data-rank="0"]')
    expect(a0.locator("td.res")).to_have_text("1 CPU · 1 GB")
    expect(page.locator('tr.node[data-task="b"][data-rank="0"] td.res')).to_have_text(
        "best-effort")
    if os.geteuid() == 0:  # use comes from the node's cgroup (made by root only, here)
        expect(a0.locator("td.use")).to_contain_text("CPU 0.", timeout=20_000)
        expect(a0.locator("td.use")).to_contain_text("MiB")
    expect(page.locator(".live-root")).to_have_attribute("data-done", "1", timeout=TIMEOUT_MS)
    expect(a0.locator("td.use")).to_have_text("-")  # ended: nothing in use
    # a reload replays the tail: every task's lines in the order they were written
    page.reload()
    expect(page.locator("#log-state")).to_contain_text("end of logs")
    texts = [t.split(") ", 1)[1] for t in page.locator("#logs .line").all_inner_texts()]
    assert texts == ["a1", "b1", "a2", "b2", "a3", "b3"], texts
