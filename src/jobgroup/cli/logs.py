"""`jobgroup logs`: every selected node's lines, interleaved as they come, with aligned
`(task, rank=N)` prefixes, one colour per task on a terminal."""

from __future__ import annotations

import sys

import click

from jobgroup import api
from jobgroup.api import get_job, resolve_task
from jobgroup.cli.output import TASK_COLOURS, paint, use_colour


def follow_job(job_id: int, task: str | None, rank: int | None, follow: bool) -> None:
    """Print the job's logs (all tasks unless `task`); return when done (see `lines`)."""
    job = get_job(job_id)
    names = [t.name for t in job.tasks]
    if task is None:
        selected = list(range(len(names)))
        if len(names) > 1:
            click.echo(
                f"Hint: This job has {len(names)} tasks. Use 'jobgroup logs {job_id} TASK' to view "
                "logs for a specific task (TASK can be task ID or name).", err=True,
            )
    else:
        selected = [resolve_task(job, task)]
    colour = use_colour()
    prefixes = {
        (job.tasks[i].name, r): f"({job.tasks[i].name}, rank={r})"
        for i in selected for r in range(job.tasks[i].num_nodes)
    }
    width = max(len(p) for p in prefixes.values())
    colours = {job.tasks[i].name: TASK_COLOURS[k % len(TASK_COLOURS)]
               for k, i in enumerate(selected)}
    out = sys.stdout
    for line in api.logs(job_id, task, rank=rank, follow=follow):
        prefix = prefixes[(line.task, line.rank)]
        if line.attempt > 1:
            prefix = f"{prefix[:-1]}, attempt={line.attempt})"
        prefix = prefix.ljust(width)
        out.write(f"{paint(prefix, colours[line.task], colour)} {line.text}\n")
        out.flush()


@click.command()
@click.argument("job_id", type=int)
@click.argument("task", required=False)
@click.option("--node", "rank", type=int, default=None, help="Only the node with this rank.")
@click.option("--no-follow", is_flag=True, help="Print what is there and return.")
def logs(job_id: int, task: str | None, rank: int | None, no_follow: bool) -> None:
    """Show a job's logs: every task interleaved, or TASK (by index or name).

    Follows while the selected tasks run; returns as soon as they have ended.

    \b
    Examples:
      jobgroup logs 3
      jobgroup logs 3 ppo-trainer --node 1
      jobgroup logs 3 0 --no-follow
    """
    try:
        follow_job(job_id, task, rank, follow=not no_follow)
    except KeyboardInterrupt:
        sys.exit(130)
