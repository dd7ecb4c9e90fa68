"""`jobgroup events JOB`: the group's timeline."""

from __future__ import annotations

import time

import click

from jobgroup import api
from jobgroup.cli.output import table


@click.command()
@click.argument("job_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def events(job_id: int, as_json: bool) -> None:
    """Show a job's timeline: submitted, started, ready, exited, restarted, stopped, and why.

    \b
    Examples:
      jobgroup events 3
      jobgroup events 3 --json | jq '.[] | select(.kind == "restart")'
    """
    evs = api.events(job_id)
    if as_json:
        import msgspec

        click.echo(msgspec.json.encode(evs).decode())
        return
    t0 = evs[0].at if evs else 0.0
    rows = []
    for e in evs:
        who = "" if e.task is None else e.task if e.rank is None else f"{e.task}-{e.rank}"
        rows.append([time.strftime("%H:%M:%S", time.localtime(e.at)), f"+{e.at - t0:.3f}s",
                     who or "(group)", e.kind, e.message])
    click.echo(table(["TIME", "SINCE", "WHO", "EVENT", "DETAIL"], rows))
