"""`jobgroup logs`: every selected node's lines, interleaved as they come, with aligned
`(task, rank=N)` prefixes, one colour per task on a terminal."""

from __future__ import annotations

import sys
from typing import Protocol

import click

from jobgroup import api
from jobgroup.api import get_job, resolve_task
from jobgroup.cli.output import TASK_COLOURS, end_line, paint, use_colour


class StatusLine(Protocol):
    """A line drawn while the logs are idle (`cli.attach.LiveStatus`)."""

    shown: bool  # drawn on the terminal now
    done: bool  # the group has left PENDING/STARTING: nothing more to draw
    pending: bool  # the group was PENDING when last looked at

    def tick(self, force: bool = False) -> None: ...

    def clear(self) -> None: ...

HINT = "logs-task"  # the hint about TASK, said once per state directory


def hint_once(name: str, text: str) -> None:
    """Say `text` on stderr the first time only (a marker in the state directory's hints/;
    said every time where that cannot be written)."""
    from jobgroup.home import default_home

    marker = default_home() / "hints" / name
    if marker.exists():
        return
    click.echo(text, err=True)
    try:
        marker.parent.mkdir(mode=0o700, exist_ok=True)
        marker.touch(mode=0o600)
    except OSError:
        pass


def follow_job(job_id: int, task: str | None, rank: int | None, follow: bool,
               tail: int | None = None, *, live: StatusLine | None = None,
               since: float | None = None, timestamps: bool = False) -> None:
    """Print the job's logs (all tasks unless `task`); return when done (see `lines`).

    A line that comes in pieces (longer than 1 MiB) is printed whole after one prefix; if
    another node's line comes between two of its pieces, the unfinished line is ended there and
    the rest follows on a new line with the same prefix. Output is flushed whenever the reader
    waits for more, not after every line. `live`: a status line drawn while the logs are idle
    and wiped before any line is printed. `timestamps`: each line starts with when it came
    (UTC; `-` where no time was recorded)."""
    job = get_job(job_id)
    names = [t.name for t in job.tasks]
    if task is None:
        selected = list(range(len(names)))
        if len(names) > 1:
            if live is not None:
                live.clear()  # (a spinner line would run into the hint)
            hint_once(HINT, f"Hint: This job has {len(names)} tasks. Use 'jobgroup logs {job_id} "
                      "TASK' to view logs for a specific task (TASK can be task ID or name).")
    else:
        selected = [resolve_task(job, task)]
    colour = use_colour()
    width = max(len(f"({job.tasks[i].name}, rank={r})")
                for i in selected for r in range(job.tasks[i].num_nodes))
    colours = {job.tasks[i].name: TASK_COLOURS[k % len(TASK_COLOURS)]
               for k, i in enumerate(selected)}
    painted: dict[tuple[str, int, int], str] = {}
    if timestamps:
        from jobgroup.timeparse import iso
    unknown = "-".ljust(24)

    def prefix(name: str, rank: int, attempt: int) -> str:
        text = f"({name}, rank={rank})" if attempt <= 1 else \
            f"({name}, rank={rank}, attempt={attempt})"
        return paint(text.ljust(width), colours[name], colour) + " "

    out = sys.stdout

    def idle() -> None:
        out.flush()
        if live is not None:
            live.tick()

    unfinished: tuple[str, int, int] | None = None  # node whose last piece had `more`
    for line in api.logs(job_id, task, rank=rank, follow=follow, tail=tail, on_idle=idle,
                         since=since, timestamps=timestamps):
        if live is not None and not live.done:
            # a line while the group seemed PENDING: it started; say where before the line
            live.tick(force=live.pending)
            if live.shown:
                out.flush()
                live.clear()
        key = (line.task, line.rank, line.attempt)
        if key == unfinished:
            head = ""
        else:
            head = painted.get(key) or painted.setdefault(key, prefix(*key))
            if timestamps:
                head = (unknown if line.at is None else iso(line.at)) + " " + head
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


def _complete_job(ctx: click.Context, param: click.Parameter, incomplete: str) -> list:
    """Shell completion of JOB: the ids of recent jobs, newest first."""
    from click.shell_completion import CompletionItem

    try:
        jobs = api.queue(all=True, limit=30)
    except Exception:  # completion must never fail loudly
        return []
    return [CompletionItem(str(j.id), help=f"{j.name} {j.status.value}") for j in jobs
            if str(j.id).startswith(incomplete)]


@click.command()
@click.argument("job", required=False, shell_complete=_complete_job)
@click.argument("task", required=False)
@click.option("--node", "rank", type=int, default=None, help="Only the node with this rank.")
@click.option("--follow/--no-follow", default=True, show_default=True,
              help="Keep printing while the selected tasks run (--no-follow: print what is "
                   "there and return).")
@click.option("--tail", type=click.IntRange(min=0), default=None, metavar="N",
              help="Start with the last N lines of each selected node (its attempts counted "
                   "together), read from the end of its files, merged across nodes in time "
                   "order; then follow as usual. 0: only new lines.")
@click.option("--since", metavar="DURATION|TIME", default=None,
              help="Only lines that came at or after this time: an age (10m, 2h, 1d) or an "
                   "ISO 8601 time (2026-05-09T14:30, local time without an offset); the files "
                   "are entered there, not read from their start.")
@click.option("--timestamps", is_flag=True,
              help="Start each line with when it came (UTC, ms; recorded by the node's shim, "
                   "see README).")
def logs(job: str | None, task: str | None, rank: int | None, follow: bool,
         tail: int | None, since: str | None, timestamps: bool) -> None:
    """Show a job's logs: every task interleaved, or TASK (by index or name).

    JOB defaults to the latest job (a first argument that is not a number is a TASK of the
    latest job). Follows while the selected tasks run; returns as soon as they have ended, with
    the job's final status line once it has ended. Memory stays small whatever the size of the
    logs: a line longer than 1 MiB is read in pieces (printed whole unless another node's line
    comes between them). With a log size cap ($JOBGROUP_LOG_MAX at launch), what was rotated
    to NAME.log.1 is read first.

    \b
    Examples:
      jobgroup logs                       # the latest job, every task
      jobgroup logs 3 ppo-trainer --node 1
      jobgroup logs 3 0 --no-follow
      jobgroup logs 3 --tail 100          # the last 100 lines of each node, then follow
      jobgroup logs --since 10m --timestamps --no-follow
    """
    if job is not None and not job.isdigit():
        if task is not None:
            raise click.BadParameter(f"{job!r} is not a job ID", param_hint="JOB")
        job, task = None, job
    job_id = api.latest_job() if job is None else int(job)
    start = None
    if since is not None:
        from jobgroup.timeparse import parse_since

        try:
            start = parse_since(since)
        except ValueError as e:
            raise click.BadParameter(str(e), param_hint="--since") from None
    try:
        follow_job(job_id, task, rank, follow=follow, tail=tail, since=start,
                   timestamps=timestamps)
    except KeyboardInterrupt:
        sys.exit(130)
    final = get_job(job_id)
    if final.done:
        click.echo(end_line(final, use_colour(sys.stderr)), err=True)
    elif task is not None:
        t = final.tasks[resolve_task(final, task)]
        if t.status.terminal:
            why = f": {t.reason}" if t.reason else ""
            click.echo(f"Task '{t.name}' of job {job_id} {t.status.value}{why} (the job is "
                       f"{final.status.value})", err=True)
