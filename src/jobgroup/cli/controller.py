"""`jobgroup controller status|stop|start`."""

from __future__ import annotations

import json
import time

import click

from jobgroup.controller import wake
from jobgroup.state.store import Store, default_home


@click.group()
def controller() -> None:
    """Inspect or stop the controller that supervises this state directory.

    \b
    Examples:
      jobgroup controller status
      jobgroup controller stop     # running groups keep running; re-adopted on next start
    """


@controller.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status(as_json: bool) -> None:
    """Pid, uptime and number of groups supervised."""
    from jobgroup.controller import rpc

    home = default_home().absolute()
    info = wake.controller_pid(home) if wake.running(home) else None
    store = Store(home)
    try:
        active = len(store.jobs(active_only=True))
        read_only = store.read_only
    finally:
        store.close()
    # The controller's own word on what it cannot do (it cannot write it anywhere when the
    # state directory is read-only or full); an older controller says nothing.
    live = rpc.call(home, {"op": "status"}, timeout=5.0) if info else None
    from jobgroup.home import state_problem

    now = state_problem(home) or read_only
    problem = (live or {}).get("unwritable") or (
        f"cannot write state in {home}: {now}" if now else None)
    data = {
        "running": info is not None,
        "pid": info[0] if info else None,
        "uptime_s": round(time.time() - info[1], 1) if info else None,
        "active_groups": active,
        "state_dir": str(home),
        "problem": problem,
        "blocked_jobs": (live or {}).get("blocked_jobs", []),
    }
    if as_json:
        click.echo(json.dumps(data))
        return
    if info:
        click.echo(f"Controller running: pid {data['pid']}, up {data['uptime_s']}s, "
                   f"supervising {active} group(s); state in {home}")
    else:
        click.echo(f"Controller not running ({active} active group(s) in {home}); "
                   "it starts with the next command that needs it.")
    if problem:
        jobs = data["blocked_jobs"]
        held = f"; job(s) {', '.join(map(str, jobs))} wait for it" if jobs else ""
        click.echo(f"Problem: {problem}: nothing can be recorded until it is fixed{held}.",
                   err=True)


@controller.command()
def stop() -> None:
    """Stop the controller; running groups keep running."""
    home = default_home()
    if not wake.running(home):
        click.echo("Controller not running.")
        return
    if not wake.stop(home, timeout=10):
        raise click.ClickException("the controller did not stop within 10s")
    click.echo("Controller stopped; running groups keep running and are re-adopted on next start.")


@controller.command()
def start() -> None:
    """Start the controller now (commands start it on demand anyway)."""
    home = default_home()
    wake.ensure_running(home)
    info = wake.controller_pid(home)
    click.echo(f"Controller running: pid {info[0] if info else '?'}.")
