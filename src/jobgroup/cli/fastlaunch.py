"""The short road for `jobgroup launch`: no click, no YAML, no SQLite in the CLI process.

When a controller already serves this state directory, `launch` only has to send the file's path
and its options to it (`controller.rpc`) and print the answer; the controller validates, records
and starts the group in one turn of its loop. Importing click and the command modules costs more
than all of that (~40 ms of a ~100 ms launch on these 2-CPU machines), so `cli.main` calls
`try_launch` first, and this module imports only `os`, `sys` and `controller.rpc` (`json`,
`socket`).

Contract: `try_launch(args)` either handles the command completely — the same output, exit code
and errors as the click command in `cli.jobs.launch` — and returns the exit code, or returns None
without having printed or sent anything, and the click command runs as usual. It declines
anything that is not a plain launch with well-formed options: `--help`, `--dryrun`, unknown or
malformed options, a bad `--env`, a FILE that is a directory, and any state directory whose
controller does not answer (the click path starts it).
"""

from __future__ import annotations

import os
import sys

def parse(args: list[str]) -> dict | None:
    """The launch's options from `launch`'s arguments — every flag of `launchflags.FAST` by
    its field, plus `path` — or None to decline."""
    from jobgroup.launchflags import FAST, FLAGS, infra_problem, valid_env_name

    opts: dict = {f.field: (dict(f.default) if isinstance(f.default, dict) else f.default)
                  for f in FLAGS if f.fast}
    files: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if not arg.startswith("-") or arg == "-":
            files.append(arg)
            continue
        name, eq, value = arg.partition("=")
        flag = FAST.get(name)
        if flag is None or (eq and flag.kind == "switch"):
            return None  # --help, --dryrun, -o, -dX, '--', unknown: click says what is wrong
        if flag.kind == "switch":
            opts[flag.field] = True
            continue
        if not eq:
            if i >= len(args):
                return None
            value = args[i]
            i += 1
        if flag.kind == "env":
            k, sep, v = value.partition("=")
            if not valid_env_name(k):
                return None
            if not sep:  # --env NAME: the caller's own value (unset: click says so)
                if k not in os.environ:
                    return None
                v = os.environ[k]
            opts[flag.field][k] = v
        elif flag.kind == "number":
            try:
                opts[flag.field] = float(value)
            except ValueError:
                return None
        elif flag.kind == "count":
            if not value.isdigit():
                return None
            opts[flag.field] = int(value)
        elif flag.kind == "choice":
            if value not in flag.choices:
                return None
            opts[flag.field] = value
        elif flag.kind == "infra":
            if infra_problem(value) is not None:
                return None  # click says what is wrong
            opts[flag.field] = value
        else:
            opts[flag.field] = value
    if len(files) != 1 or os.path.isdir(files[0]):
        return None
    opts["path"] = os.path.abspath(files[0])
    return opts


def _home() -> str:
    """The state directory as `jobgroup.home.default_home().absolute()` spells it (pathlib's
    normalisation, without importing pathlib). A spelling that differs only means the socket
    is not found and the click path runs."""
    env = os.environ.get("JOBGROUP_HOME")
    home = os.path.expanduser(env) if env else os.path.join(os.path.expanduser("~"), ".jobgroup")
    parts = [p for p in home.split("/") if p and p != "."]
    if home.startswith("/"):
        return "/" + "/".join(parts)
    return os.path.join(os.getcwd(), *parts) if parts else os.getcwd()


def submitted_lines(job: dict, level: str, note: str | None) -> tuple[str, str]:
    """(stdout line, stderr line) that every launch prints once the group is recorded."""
    tasks = job["tasks"]
    nodes = sum(t["num_nodes"] for t in tasks)
    out = f"Job {job['id']} ({job['name']}) submitted: {len(tasks)} task(s), {nodes} node(s)."
    if level == "slurm":
        err = ("Slurm: one heterogeneous Slurm job for the group; an agent on each Slurm node "
               "runs that node's setup and run.")
    elif level == "kubernetes":
        err = "Kubernetes: one pod per node, one headless Service for the group's names."
    else:
        err = f"Isolation: {level} ({note or '?'})."
    return out, err


def detach_hint(job_id: int) -> str:
    return (f"Follow: jobgroup logs {job_id}   Status: jobgroup queue   "
            f"Cancel: jobgroup cancel {job_id}")


def try_launch(args: list[str]) -> int | None:
    opts = parse(args)
    if opts is None:
        return None
    from jobgroup.envvars import inherited
    from jobgroup.home import private_problem
    from jobgroup.launchflags import SENT

    home = _home()
    if private_problem(home):  # the click road fixes the mode or says why it cannot
        return None
    detach = opts["detach"]
    base_env = dict(os.environ) if opts["inherit_env"] else inherited(os.environ)
    # The LaunchRequest's fields (launchreq), as plain JSON: the controller checks their types.
    request = {"op": "launch", "path": opts["path"], "base_env": base_env, "cwd": os.getcwd(),
               **{f.field: opts.get(f.field, f.default) for f in SENT}}
    from jobgroup.controller import rpc  # json + socket only

    answer = rpc.call(home, request)
    if answer is None:
        return None
    for w in answer.get("warnings", []):
        print(w, file=sys.stderr)
    if not answer.get("ok"):
        print(f"Error: {answer.get('error', 'the launch failed')}", file=sys.stderr)
        return int(answer.get("exit_code", 1))
    job = answer["job"]
    out, err = submitted_lines(job, str(answer.get("isolation", "?")),
                               answer.get("isolation_note"))
    print(out, flush=True)
    print(err, file=sys.stderr, flush=True)
    if detach:
        print(detach_hint(job["id"]), flush=True)
        return 0
    from jobgroup.cli.attach import follow_until_end  # the long road: imports are noise here
    from jobgroup.errors import JobGroupError

    try:
        return follow_until_end(job["id"])
    except JobGroupError as e:
        print(f"Error: {e}", file=sys.stderr)
        return e.exit_code
