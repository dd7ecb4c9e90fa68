"""`exec`, `port-forward`, `top`: operate a running group (the controller says where, the CLI
does the streaming itself; see `controller.operate`)."""

from __future__ import annotations

import json
import os
import sys
import time

import click

from jobgroup.errors import JobGroupError


class _SplitAtDashes(click.Command):
    """A command whose arguments after the first `--` are a command line of their own (kept
    as given, options included), in `ctx.meta["command"]`."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if "--" in args:
            at = args.index("--")
            ctx.meta["command"] = args[at + 1:]
            args = args[:at]
        else:
            ctx.meta["command"] = []
        return super().parse_args(ctx, args)


def _ask(request: dict) -> dict:
    """One request to this state directory's controller (started if needed); its answer, or a
    JobGroupError with the controller's message and exit code."""
    from jobgroup.controller import rpc, wake
    from jobgroup.home import default_home, ensure_private

    home = ensure_private(default_home().absolute())
    if not wake.running(home):
        wake.ensure_running(home)
    answer = rpc.call(home, request)
    if answer is None:
        raise JobGroupError("no controller answers for this state directory "
                            "(jobgroup controller status)")
    if not answer.get("ok"):
        err = JobGroupError(str(answer.get("error", "the controller refused")))
        err.exit_code = int(answer.get("exit_code", 1))
        raise err
    return answer


@click.command("exec", cls=_SplitAtDashes)
@click.argument("job_id", type=int)
@click.argument("task", required=False)
@click.option("--node", "rank", type=int, default=0, show_default=True, help="The node's rank.")
@click.option("--tty/--no-tty", default=None,
              help="A terminal for the command (default: when yours is one).")
def exec_(job_id: int, task: str | None, rank: int, tty: bool | None) -> None:
    """Run a command on a node of a running group: in its view (network, hostname, peer
    names, mounts, its own /tmp and files) with its environment (SKYPILOT_* included), your
    terminal, stdin and stdout, and its exit code. TASK by name or index (optional when the
    group has one task). Recorded in the group's events.

    \b
    Examples:
      jobgroup exec 3 trainer -- bash                 # an interactive shell on trainer-0
      jobgroup exec 3 trainer --node 1 -- nvidia-smi
      jobgroup exec 3 -- cat /tmp/progress.txt        # a group of one task
    """
    command = click.get_current_context().meta.get("command") or []
    if not command:
        raise click.UsageError("give the command after `--`, e.g. jobgroup exec 3 trainer -- bash")
    if tty is None:
        tty = sys.stdin.isatty() and sys.stdout.isatty()
    answer = _ask({"op": "attach", "job": job_id, "task": task, "rank": rank,
                   "argv": command, "tty": tty})
    argv, env = answer["argv"], answer["env"]
    sys.stdout.flush()
    sys.stderr.flush()
    try:  # the command replaces this process: its exit code is ours, signals reach it
        os.execvpe(argv[0], argv, env)
    except OSError as e:
        raise JobGroupError(f"cannot run {argv[0]}: {e.strerror}") from None


@click.command("port-forward")
@click.argument("job_id", type=int)
@click.argument("node", metavar="TASK[:RANK]")
@click.argument("ports", metavar="LOCAL[:REMOTE]")
@click.option("--address", default="127.0.0.1", show_default=True,
              help="Local address to listen on.")
def port_forward(job_id: int, node: str, ports: str, address: str) -> None:
    """Forward a port of a node of a running group to this machine: connections to
    ADDRESS:LOCAL reach the node's REMOTE port (REMOTE defaults to LOCAL; LOCAL 0 picks a free
    port). Ends on Ctrl-C, or when the node ends.

    \b
    Examples:
      jobgroup port-forward 3 trainer 6006            # TensorBoard on trainer-0
      jobgroup port-forward 3 rollout:1 8000:8001     # rank 1's port 8001 as localhost:8000
    """
    task, _, rank_text = node.partition(":")
    local_text, _, remote_text = ports.partition(":")
    try:
        rank = int(rank_text) if rank_text else 0
        local = int(local_text)
        remote = int(remote_text) if remote_text else local
    except ValueError:
        raise click.UsageError("give TASK[:RANK] and LOCAL[:REMOTE] as numbers, e.g. trainer:1 "
                               "8080:80") from None
    if remote == 0:
        raise click.UsageError("give the node's port (LOCAL:REMOTE) when LOCAL is 0")
    answer = _ask({"op": "forward", "job": job_id, "task": task, "rank": rank,
                   "local": local, "remote": remote})
    where = {"job": job_id, "task": task, "rank": rank}
    if "argv" in answer:  # the cluster's own forwarder
        import subprocess

        proc = subprocess.Popen(answer["argv"])
        try:
            _until_node_ends(where, lambda: proc.poll() is not None)
        except KeyboardInterrupt:
            pass
        finally:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=10)
        return
    from jobgroup.cli.relay import Relay

    relay = Relay(address, local, answer["address"], remote)
    click.echo(f"Forwarding {address}:{relay.port} -> {answer['node']}:{remote} "
               f"(job {job_id}); Ctrl-C ends it.", err=True)
    try:
        relay.serve(lambda: not _node_live(where))
    except KeyboardInterrupt:
        pass
    finally:
        relay.close()
    if not _node_live(where):
        click.echo(f"{answer['node']} ended; forwarding stopped.", err=True)


def _node_live(where: dict) -> bool:
    try:
        return bool(_ask({"op": "node", **where}).get("live"))
    except JobGroupError:
        return False


def _until_node_ends(where: dict, done) -> None:  # noqa: ANN001
    while not done():
        if not _node_live(where):
            return
        time.sleep(1)


@click.command("top")
@click.argument("job_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="Print one sample as JSON and exit.")
@click.option("-n", "--iterations", type=int, default=None,
              help="Refresh this many times, then exit (default: until Ctrl-C on a terminal, "
                   "once otherwise).")
@click.option("--interval", type=float, default=2.0, show_default=True,
              help="Seconds between refreshes.")
def top(job_id: int, as_json: bool, iterations: int | None, interval: float) -> None:
    """What each node of a group uses now: CPU, memory (and its limit), GPU memory where NVML
    says, and its processes. Local: from the nodes' cgroups; Slurm: sstat; Kubernetes: the
    metrics API (when the cluster has one).

    \b
    Examples:
      jobgroup top 3
      jobgroup top 3 --json | jq '.nodes[] | {node, mem: .usage.memory_bytes}'
    """
    first = _ask({"op": "top", "job": job_id})
    if as_json:
        click.echo(json.dumps(first))
        return
    live = sys.stdout.isatty()
    if iterations is None:
        iterations = 0 if live else 1  # 0: until Ctrl-C
    from jobgroup.cli.output import use_colour

    previous, count = first, 0
    try:
        while True:
            # The first refresh comes sooner: a CPU rate needs two samples.
            time.sleep(min(interval, 1.0) if count == 0 else interval)
            now = _ask({"op": "top", "job": job_id})
            text = _render(previous, now, use_colour())
            click.echo(("\x1b[H\x1b[2J" if live else "") + text, nl=False)
            count += 1
            previous = now
            if iterations and count >= iterations:
                return
    except KeyboardInterrupt:
        return


def _render(before: dict, now: dict, colour: bool) -> str:
    from jobgroup.cli.output import table
    from jobgroup.humanize import human_bytes

    dt = max(1e-3, now["time"] - before["time"])
    old = {r["node"]: r.get("usage") or {} for r in before["nodes"]}
    rows, notes, procs = [], [], []
    for r in now["nodes"]:
        use = r.get("usage")
        req = r["requested"]
        asked = ", ".join(x for x in (f"{req['cpus']:g} CPU" if req["cpus"] else "",
                                      f"{req['memory_gb']:g} GB" if req["memory_gb"] else "",
                                      f"{req['gpus']} GPU" if req["gpus"] else "") if x) or "-"
        if use is None:
            rows.append([r["node"], r["phase"], "-", "-", "-", "-", asked])
            continue
        cpu = "-"
        prev = old.get(r["node"], {}).get("cpu_seconds")
        if use.get("cpu_seconds") is not None and prev is not None:
            cpu = f"{max(0.0, use['cpu_seconds'] - prev) / dt * 100:.0f}%"
        mem = "-" if use.get("memory_bytes") is None else human_bytes(use["memory_bytes"])
        if use.get("memory_limit_bytes"):
            mem += f" / {human_bytes(use['memory_limit_bytes'])}"
        gpu = ", ".join(f"{k}: {human_bytes(v)}" for k, v in sorted(use["gpus"].items())) or "-"
        rows.append([r["node"], r["phase"], cpu, mem, gpu, str(len(use["processes"])), asked])
        if use.get("note"):
            notes.append(f"{r['node']}: {use['note']}")
        for p in use["processes"][:8]:
            procs.append([r["node"], str(p["pid"]), human_bytes(p["rss_bytes"]),
                          p["command"][:80]])
    job = now["job"]
    out = [f"Job {job['id']} ({job['name']}) {job['status']}",
           table(["NODE", "PHASE", "CPU", "MEMORY", "GPU MEMORY", "PROCS", "REQUESTED"], rows)]
    if procs:
        out += ["", table(["NODE", "PID", "RSS", "COMMAND"], procs)]
    out += notes
    return "\n".join(out) + "\n"


__all__ = ["exec_", "port_forward", "top"]
