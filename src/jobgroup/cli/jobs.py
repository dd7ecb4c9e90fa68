"""`launch`, `queue`, `cancel`, `wait`: thin commands over `jobgroup.api`."""

from __future__ import annotations

import os
import sys
import time
from typing import TYPE_CHECKING

import click

from jobgroup.cli.output import paint, table, use_colour
from jobgroup.envvars import inherited, parse_env
from jobgroup.home import default_home
from jobgroup.humanize import human_ago, human_duration
from jobgroup.state.status import Status

if TYPE_CHECKING:
    from jobgroup import api

_STATUS_COLOUR = {
    Status.SUCCEEDED: "green", Status.RUNNING: "cyan", Status.STARTING: "cyan",
    Status.PENDING: "yellow", Status.CANCELLING: "yellow", Status.CANCELLED: "yellow",
}


def status_text(status: Status, colour: bool) -> str:
    c = _STATUS_COLOUR.get(status, "red" if status.failed else None)
    return paint(status.value, c, colour)


def _exit_for(job: api.Job) -> int:
    return 0 if job.status == Status.SUCCEEDED else 1


def _launch_options(fn):  # type: ignore[no-untyped-def]
    """The click options of every `launchflags.FLAGS` entry (declared once, there)."""
    from jobgroup.launchflags import FLAGS

    for f in reversed(FLAGS):
        kw: dict = {"help": f.help}
        if f.kind == "switch":
            kw["is_flag"] = True
        elif f.kind == "number":
            kw.update(type=float, default=f.default, show_default=True)
        elif f.kind == "choice":
            kw.update(type=click.Choice(list(f.choices)), default=f.default,
                      show_default=f.default is not None)
        elif f.kind == "count":
            kw.update(type=click.IntRange(min=1), metavar=f.metavar)
        elif f.kind == "file":
            kw.update(type=click.Path(exists=True, dir_okay=False), metavar=f.metavar)
        elif f.kind == "text" and f.metavar:
            kw.update(metavar=f.metavar)
        elif f.kind == "env":
            kw.update(multiple=True, metavar=f.metavar)
        fn = click.option(*f.names, f.field, **kw)(fn)
    return fn


@click.command()
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=False))
@_launch_options
def launch(file: str, **opts: object) -> None:
    """Launch the job group in FILE.

    Without -d, streams every task's logs until the group ends and exits 0 only if it
    SUCCEEDED (1 otherwise). Ctrl-C detaches: the group keeps running.

    \b
    Examples:
      jobgroup launch examples/hello/hello.yaml
      jobgroup launch rl.yaml --infra local --env STEPS=10 -d
      jobgroup launch cluster.yaml --cpu-only     # GPU tasks without GPUs
      jobgroup launch rl.yaml --infra kubernetes --dryrun -o yaml | kubectl apply -f -
    """
    from jobgroup.launchflags import FLAGS, SENT

    for f in FLAGS:
        if f.kind == "env":
            opts[f.field] = parse_env(opts[f.field], flag=f.names[0])  # type: ignore[arg-type]
    # As SkyPilot's CLI: --env-file's values are variables and secrets too (so never
    # printed), below --secret-file's and --secret's; --env wins over --env-file. (SkyPilot
    # lets a secret win over any variable, so its --env loses to its own --env-file's copy in
    # the secrets: here a name given by --env is left out of the file's secrets.)
    env_file = _dotenv(opts["env_file"], "--env-file")  # type: ignore[arg-type]
    secret_file = _dotenv(opts["secret_file"], "--secret-file")  # type: ignore[arg-type]
    flags_env, flags_secret = dict(opts["env"]), dict(opts["secret"])  # type: ignore[arg-type]
    secret = {**{k: v for k, v in env_file.items() if k not in flags_env}, **secret_file,
              **flags_secret}
    opts["env"] = {**{k: v for k, v in env_file.items() if k not in secret or k in flags_env},
                   **flags_env}
    opts["secret"] = secret
    request = {f.field: opts[f.field] for f in SENT}
    request["base_env"] = dict(os.environ) if opts["inherit_env"] else inherited(os.environ)
    request["cwd"] = os.getcwd()
    if opts["dryrun"]:
        from jobgroup import api, launchreq

        text = api.dryrun(file, request=launchreq.make(path=os.path.abspath(file), **request),
                          fmt=str(opts["output"]), on_warning=lambda w: click.echo(w, err=True))
        click.echo(text, nl=False)
        return
    from jobgroup.cli.fastlaunch import detach_hint, submitted_lines

    job, level, note = _submit(file, request)
    out, err = submitted_lines(job, level, note)
    click.echo(out)
    click.echo(err, err=True)
    if opts["detach"]:
        click.echo(detach_hint(job["id"]))
        return
    sys.exit(follow_until_end(job["id"]))


def _dotenv(path: str | None, flag: str) -> dict[str, str]:
    """The variables of a dotenv file (python-dotenv's format, as SkyPilot's CLI reads it); a
    name given without a value takes the caller's own value, as `--env NAME` does."""
    if path is None:
        return {}
    from dotenv import dotenv_values

    from jobgroup.launchflags import valid_env_name

    try:
        values = dotenv_values(path)
    except (OSError, UnicodeDecodeError) as e:
        raise click.UsageError(f"{flag} {path}: {e}") from None
    out: dict[str, str] = {}
    for key, value in values.items():
        if not valid_env_name(key):
            raise click.UsageError(f"{flag} {path}: {key!r} is not a variable name")
        if value is None:
            if key not in os.environ:
                raise click.UsageError(f"{flag} {path}: {key} has no value there and is not "
                                       "set in your environment")
            value = os.environ[key]
        out[key] = value
    return out


def follow_until_end(job_id: int) -> int:
    """Stream every task's logs until the job ends; its exit code (0 only if SUCCEEDED).
    Ctrl-C detaches (exit 130) and says how to re-attach and cancel."""
    from jobgroup import api
    from jobgroup.cli.logs import follow_job

    try:
        follow_job(job_id, task=None, rank=None, follow=True)
        final = api.wait(job_id)
    except KeyboardInterrupt:
        click.echo(f"\nDetached; job {job_id} keeps running. Re-attach: jobgroup logs {job_id}"
                   f"   Cancel: jobgroup cancel {job_id}", err=True)
        return 130
    _print_end(final)
    return _exit_for(final)


def _submit(file: str, fields: dict[str, object]) -> tuple[dict, str, str | None]:
    """Submit through the running controller (started if needed: it validates and starts in
    one turn); in-process when no controller serves requests. (job as a dict with id, name and
    tasks' num_nodes; isolation level; its note)."""
    import msgspec

    from jobgroup import launchreq
    from jobgroup.controller import rpc, wake
    from jobgroup.errors import JobGroupError
    from jobgroup.home import ensure_private

    home = ensure_private(default_home().absolute())
    if not wake.running(home):
        wake.ensure_running(home)
    request = launchreq.make(path=os.path.abspath(file), **fields)  # typed: checked here first
    answer = rpc.call(home, {"op": "launch", **msgspec.to_builtins(request)})
    if answer is not None:
        for w in answer.get("warnings", []):
            click.echo(w, err=True)
        if not answer.get("ok"):
            err = JobGroupError(answer.get("error", "the launch failed"))
            err.exit_code = int(answer.get("exit_code", 1))
            raise err
        return answer["job"], str(answer.get("isolation", "?")), answer.get("isolation_note")
    from jobgroup import api
    from jobgroup.backends.local.isolation import LEVEL_NOTES

    job = api.launch(file, request=request, on_warning=lambda w: click.echo(w, err=True))
    level = api.job_backend_level(job.id, home)
    return msgspec.to_builtins(job), level, LEVEL_NOTES.get(level)


def _print_end(job: api.Job) -> None:
    colour = use_colour(sys.stderr)
    reason = f": {job.reason}" if job.reason else ""
    click.echo(f"Job {job.id} ({job.name}) {status_text(job.status, colour)}{reason}", err=True)


@click.command()
@click.option("-a", "--all", "all_", is_flag=True, help="Include ended jobs.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("-n", "--limit", type=int, default=None, help="Show at most N jobs.")
def queue(all_: bool, as_json: bool, limit: int | None) -> None:
    """List jobs and their tasks (active ones; --all for every job).

    \b
    Examples:
      jobgroup queue
      jobgroup queue --all --json | jq '.[0].status'
    """
    from jobgroup import api

    jobs = api.queue(all=all_, limit=limit)
    if as_json:
        import msgspec

        click.echo(msgspec.json.encode(jobs).decode())
        return
    if not jobs:
        click.echo("No jobs." if all_ else "No active jobs (jobgroup queue --all shows ended ones).")
        return
    colour = use_colour()
    rows = []
    for j in jobs:
        rows.append([str(j.id), "-", j.name, human_ago(j.submitted_at),
                     human_duration(j.duration), str(sum(t.num_nodes for t in j.tasks)),
                     str(sum(t.restarts for t in j.tasks)), _job_status(j, colour)])
        for k, t in enumerate(j.tasks):
            branch = "└" if k == len(j.tasks) - 1 else "├"
            mark = " [P]" if t.primary and j.has_auxiliaries else ""
            dur = None if t.started_at is None else (t.ended_at or time.time()) - t.started_at
            rows.append(["", str(t.index), f"{branch} {t.name}{mark}", "", human_duration(dur),
                         str(t.num_nodes), str(t.restarts), status_text(t.status, colour)])
    click.echo(table(["ID", "TASK", "NAME", "SUBMITTED", "DURATION", "NODES", "RESTARTS",
                      "STATUS"], rows))
    waiting = [j for j in jobs if j.status == Status.PENDING and j.reason]
    for j in waiting:
        click.echo(f"Job {j.id} is pending: {j.reason}")


def _job_status(j: api.Job, colour: bool) -> str:
    text = status_text(j.status, colour)
    if j.status == Status.RUNNING:
        running = [t.index for t in j.tasks if t.status == Status.RUNNING]
        if j.execution == "serial" and running:
            text += f" (task: {running[0]})"
        elif running:
            text += f" (tasks: {len(running)}/{len(j.tasks)})"
    return text


@click.command()
@click.argument("job_ids", type=int, nargs=-1)
@click.option("-a", "--all", "all_", is_flag=True, help="Cancel every job that has not ended.")
def cancel(job_ids: tuple[int, ...], all_: bool) -> None:
    """Cancel whole job groups (every node is stopped).

    \b
    Examples:
      jobgroup cancel 3
      jobgroup cancel 3 4 5
      jobgroup cancel --all
    """
    from jobgroup import api

    if bool(job_ids) == all_:
        raise click.UsageError("give job IDs or --all, not both" if all_ else
                               "give job IDs or --all")
    result = api.cancel_all() if all_ else api.cancel(list(job_ids))
    if not result:
        click.echo("No active jobs to cancel.")
    for job_id, what in result.items():
        click.echo(f"Job {job_id}: {'cancelling' if what == 'cancelling' else what}.")


@click.command()
@click.argument("job_id", type=int)
@click.option("--timeout", type=float, default=None, help="Give up after S seconds (exit 1).")
@click.option("--json", "as_json", is_flag=True, help="Print the final job as JSON.")
def wait(job_id: int, timeout: float | None, as_json: bool) -> None:
    """Block until a job ends; exit 0 if it SUCCEEDED, 1 otherwise.

    \b
    Examples:
      jobgroup wait 3 && echo done
      jobgroup wait 3 --timeout 600
    """
    from jobgroup import api

    job = api.wait(job_id, timeout=timeout)
    if as_json:
        import msgspec

        click.echo(msgspec.json.encode(job).decode())
    elif not job.done:
        click.echo(f"Job {job_id} is still {job.status.value} after {timeout:g}s.", err=True)
    else:
        _print_end(job)
    sys.exit(_exit_for(job))
