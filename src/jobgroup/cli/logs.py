"""`jobgroup logs`: every selected node's lines, interleaved as they come, with aligned
`(task, rank=N)` prefixes, one colour per task on a terminal."""

from __future__ import annotations

import sys

import click

from jobgroup import api
from jobgroup.api import get_job, resolve_task
from jobgroup.cli.output import TASK_COLOURS, paint, use_colour


def follow_job(job_id: int, task: str | None, rank: int | None, follow: bool,
               tail: int | None = None) -> None:
    """Print the job's logs (all tasks unless `task`); return when done (see `lines`).

    A line that comes in pieces (longer than 1 MiB) is printed whole after one prefix; if
    another node's line comes between two of its pieces, the unfinished line is ended there and
    the rest follows on a new line with the same prefix. Output is flushed whenever the reader
    waits for more, not after every line."""
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
    width = max(len(f"({job.tasks[i].name}, rank={r})")
                for i in selected for r in range(job.tasks[i].num_nodes))
    colours = {job.tasks[i].name: TASK_COLOURS[k % len(TASK_COLOURS)]
               for k, i in enumerate(selected)}
    painted: dict[tuple[str, int, int], str] = {}

    def prefix(name: str, rank: int, attempt: int) -> str:
        text = f"({name}, rank={rank})" if attempt <= 1 else \
            f"({name}, rank={rank}, attempt={attempt})"
        return paint(text.ljust(width), colours[name], colour) + " "

    out = sys.stdout
    unfinished: tuple[str, int, int] | None = None  # node whose last piece had `more`
    for line in api.logs(job_id, task, rank=rank, follow=follow, tail=tail, on_idle=out.flush):
        key = (line.task, line.rank, line.attempt)
        if key == unfinished:
            head = ""
        else:
            head = painted.get(key) or painted.setdefault(key, prefix(*key))
            if unfinished is not None:
                head = "\n" + head
        if line.more:
            out.write(f"{head}{line.text}")
            unfinished = key
        else:
            out.write(f"{head}{line.text}\n")
            unfinished = None
    if unfinished is not None:
        out.write("\n")
    out.flush()


@click.command()
@click.argument("job_id", type=int)
@click.argument("task", required=False)
@click.option("--node", "rank", type=int, default=None, help="Only the node with this rank.")
@click.option("--no-follow", is_flag=True, help="Print what is there and return.")
@click.option("--tail", type=click.IntRange(min=0), default=None, metavar="N",
              help="Start with the last N lines of each selected node (its attempts counted "
                   "together), read from the end of its files; then follow as usual. 0: only "
                   "new lines.")
def logs(job_id: int, task: str | None, rank: int | None, no_follow: bool,
         tail: int | None) -> None:
    """Show a job's logs: every task interleaved, or TASK (by index or name).

    Follows while the selected tasks run; returns as soon as they have ended. Memory stays
    small whatever the size of the logs: a line longer than 1 MiB is read in pieces (printed
    whole unless another node's line comes between them). With a log size cap
    ($JOBGROUP_LOG_MAX at launch), what was rotated to NAME.log.1 is read first.

    \b
    Examples:
      jobgroup logs 3
      jobgroup logs 3 ppo-trainer --node 1
      jobgroup logs 3 0 --no-follow
      jobgroup logs 3 --tail 100          # the last 100 lines of each node, then follow
    """
    try:
        follow_job(job_id, task, rank, follow=not no_follow, tail=tail)
    except KeyboardInterrupt:
        sys.exit(130)
