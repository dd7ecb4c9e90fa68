"""`launch`, `queue`, `cancel`, `wait`: thin commands over `jobgroup.api`."""

from __future__ import annotations

import os
import sys
import time
from typing import TYPE_CHECKING

import click

from jobgroup.cli.output import status_text, table, use_colour
from jobgroup.envvars import inherited, parse_env
from jobgroup.home import default_home
from jobgroup.humanize import human_ago, human_duration
from jobgroup.state.status import Status

if TYPE_CHECKING:
    from jobgroup import api


class InfraType(click.ParamType):
    """--infra: a backend (local, slurm, kubernetes), an alias (k8s), or kubernetes/CONTEXT;
    anything else is a usage error with a close name suggested (`launchflags.infra_problem`)."""

    name = "infra"

    def convert(self, value, param, ctx):  # type: ignore[no-untyped-def]
        from jobgroup.launchflags import infra_problem

        problem = infra_problem(str(value))
        if problem:
            self.fail(problem, param, ctx)
        return value

    def shell_complete(self, ctx, param, incomplete):  # type: ignore[no-untyped-def]
        from click.shell_completion import CompletionItem

        from jobgroup.launchflags import INFRA_ALIASES, INFRAS

        return [CompletionItem(n) for n in (*INFRAS, *INFRA_ALIASES, "kubernetes/")
                if n.startswith(incomplete)]


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
        elif f.kind == "infra":
            kw.update(type=InfraType(), metavar=f.metavar)
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
    from jobgroup.cli.attach import follow_until_end  # (the foreground only)

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


RECENT_ENV = "JOBGROUP_QUEUE_RECENT"
RECENT_DEFAULT = "6h"
_STATUS_NAMES = [s.value for s in Status]
_SKIP_FINISHED = "__skip_finished__"  # a bare -s: SkyPilot's old spelling of --skip-finished


class _StatusList(click.Choice):
    """SkyPilot's `-s/--status`: comma-separated, case-insensitive, repeatable; a bare `-s`
    (no value) means --skip-finished, as it long did in SkyPilot."""

    def convert(self, value, param, ctx):  # type: ignore[no-untyped-def]
        if value == _SKIP_FINISHED:
            return [value]
        return [super(_StatusList, self).convert(v.strip().upper(), param, ctx)
                for v in str(value).split(",") if v.strip()]


def _recent_window(flag: str | None) -> float:
    """Seconds an ended job stays in `queue`: --recent, else $JOBGROUP_QUEUE_RECENT, else 6h."""
    from jobgroup.timeparse import parse_age

    text, where = (flag, "--recent") if flag is not None else \
        (os.environ.get(RECENT_ENV) or RECENT_DEFAULT, RECENT_ENV)
    try:
        return parse_age(text)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint=where) from None


def reason_of(j: api.Job) -> str:
    """Why a job is where it is, in one phrase: why it waits or failed, what ends it."""
    if j.outcome is not None and not j.done:
        what = "stopping" if j.outcome == Status.SUCCEEDED else "ending"
        return f"{what} ({j.outcome.value}): {j.outcome_reason}" if j.outcome_reason else what
    if j.reason:
        return j.reason
    why = next((t.reason for t in j.tasks if t.reason and t.status in (
        Status.RECOVERING, Status.FAILED, Status.FAILED_SETUP)), "")
    return why or "-"


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[:max(1, width - 1)] + "…"


@click.command()
@click.option("-a", "--all", "all_", is_flag=True, help="Every job, however long ago it ended.")
@click.option("--skip-finished", is_flag=True, help="Only jobs that have not ended.")
@click.option("-s", "--status", "statuses", multiple=True, is_flag=False,
              flag_value=_SKIP_FINISHED, type=_StatusList(_STATUS_NAMES),
              metavar="STATUS[,STATUS]",
              help="Only jobs in these statuses (SkyPilot's names, e.g. -s FAILED,FAILED_SETUP; "
                   "repeatable). A bare -s means --skip-finished.")
@click.option("--recent", metavar="DURATION", default=None,
              help=f"Show jobs that ended within DURATION (default {RECENT_DEFAULT}, or "
                   f"${RECENT_ENV}; 0: none).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (every field, "
              "reasons in full).")
@click.option("-o", "--output", type=click.Choice(["table", "json"], case_sensitive=False),
              default="table", show_default=True, help="Output format (-o json: as --json).")
@click.option("-n", "--limit", type=int, default=None, help="Show at most N jobs.")
def queue(all_: bool, skip_finished: bool, statuses: tuple[list[str], ...], recent: str | None,
          as_json: bool, output: str, limit: int | None) -> None:
    """List jobs and their tasks: active ones and those that ended recently.

    REASON says why a job waits, failed or is ending (cut to the terminal's width; in full with
    --json); INFRA where it runs: local, slurm:<Slurm job id>, k8s:<namespace>.

    \b
    Examples:
      jobgroup queue
      jobgroup queue -s FAILED,FAILED_SETUP --recent 1d
      jobgroup queue --skip-finished
      jobgroup queue --all -o json | jq '.[0].status'
    """
    from jobgroup import api

    wanted = [s for group in statuses for s in group]
    if _SKIP_FINISHED in wanted:
        skip_finished = True
        wanted = [s for s in wanted if s != _SKIP_FINISHED]
    window = 0.0 if skip_finished or all_ else _recent_window(recent)
    jobs = api.queue(all=all_ and not skip_finished, limit=limit, recent=window,
                     statuses=wanted or None)
    if as_json or output.lower() == "json":
        import msgspec

        click.echo(msgspec.json.encode(jobs).decode())
        return
    if not jobs:
        if wanted:
            click.echo(f"No jobs in {', '.join(wanted)}" + (
                "." if all_ else " (jobgroup queue --all looks further back)."))
        elif all_:
            click.echo("No jobs.")
        elif window:
            click.echo(f"No active jobs, none ended in the last {_age_words(window)} "
                       "(jobgroup queue --all shows older ones).")
        else:
            click.echo("No active jobs (jobgroup queue --all shows ended ones).")
        return
    colour = use_colour()
    rows = []
    for j in jobs:
        rows.append([str(j.id), "-", j.name, human_ago(j.submitted_at),
                     human_duration(j.duration), str(sum(t.num_nodes for t in j.tasks)),
                     str(sum(t.restarts for t in j.tasks)), j.infra, _job_status(j, colour),
                     reason_of(j)])
        for k, t in enumerate(j.tasks):
            branch = "└" if k == len(j.tasks) - 1 else "├"
            mark = " [P]" if t.primary and j.has_auxiliaries else ""
            dur = None if t.started_at is None else (t.ended_at or time.time()) - t.started_at
            rows.append(["", str(t.index), f"{branch} {t.name}{mark}", "", human_duration(dur),
                         str(t.num_nodes), str(t.restarts), "", status_text(t.status, colour),
                         t.reason if t.reason and t.reason != j.reason else ""])
    headers = ["ID", "TASK", "NAME", "SUBMITTED", "DURATION", "NODES", "RESTARTS", "INFRA",
               "STATUS", "REASON"]
    text = table(headers, rows)
    if sys.stdout.isatty() or os.environ.get("COLUMNS"):  # REASON cut to the width (--json:
        # in full); COLUMNS: the width a script asks for
        import shutil

        width = shutil.get_terminal_size((100, 24)).columns
        lines = text.split("\n")
        start = len(lines[0]) - len("REASON")
        room = max(12, width - start)
        text = "\n".join(ln[:start] + _cut(ln[start:], room) if len(ln) > start else ln
                         for ln in lines)
    click.echo(text)


def _age_words(seconds: float) -> str:
    return human_duration(seconds).replace(" 00m", "").replace(" 00s", "").replace(".0s", "s")


def _job_status(j: api.Job, colour: bool) -> str:
    text = status_text(j.status, colour)
    if j.status == Status.RUNNING:
        running = [t.index for t in j.tasks if t.status == Status.RUNNING]
        if j.execution == "serial" and running:
            text += f" (task: {running[0]})"
        elif running:
            text += f" (tasks: {len(running)}/{len(j.tasks)})"
    return text


def _complete_job(ctx: click.Context, param: click.Parameter, incomplete: str) -> list:
    from jobgroup.cli.logs import _complete_job as complete

    return complete(ctx, param, incomplete)


@click.command()
@click.argument("job_ids", type=int, nargs=-1, shell_complete=_complete_job)
@click.option("-a", "--all", "all_", is_flag=True, help="Cancel every job that has not ended.")
@click.option("-y", "--yes", is_flag=True, help="Accepted for SkyPilot's scripts: cancel never "
              "asks for confirmation.")
def cancel(job_ids: tuple[int, ...], all_: bool, yes: bool) -> None:
    """Cancel whole job groups: every node is stopped now.

    A group whose primary tasks have already succeeded (its auxiliaries waiting out their
    termination_delay) has its auxiliaries stopped at once and stays SUCCEEDED.

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
        if what == "cancelling":
            job = api.get_job(job_id)
            if job.outcome == Status.SUCCEEDED:
                click.echo(f"Job {job_id}: its primary tasks already succeeded: stopping its "
                           "auxiliaries now (no termination_delay); it stays SUCCEEDED.")
                continue
        click.echo(f"Job {job_id}: {what}.")


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
    from jobgroup.cli.attach import exit_for, print_end

    job = api.wait(job_id, timeout=timeout)
    if as_json:
        import msgspec

        click.echo(msgspec.json.encode(job).decode())
    elif not job.done:
        click.echo(f"Job {job_id} is still {job.status.value} after {timeout:g}s.", err=True)
    else:
        print_end(job)
    sys.exit(exit_for(job))
