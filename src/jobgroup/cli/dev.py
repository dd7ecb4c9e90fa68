"""`jobgroup dev`: development helpers. `jobgroup dev slurm up|down|status` runs a real Slurm
cluster on this machine (see jobgroup.devcluster.slurm)."""

from __future__ import annotations

import click

from jobgroup.state.store import default_home


@click.group()
def dev() -> None:
    """Development helpers: a real Slurm cluster on this machine."""


@dev.group()
def slurm() -> None:
    """A Slurm cluster emulated on this machine (needs root and Slurm: scripts/install-slurm).

    \b
    slurmctld runs on this machine; node1..nodeN are slurmd daemons, each in its own network
    namespace with its own address and host name; all share this machine's files.
    """


@slurm.command()
@click.option("--nodes", type=click.IntRange(1, 250), default=None,
              help="Number of nodes (default 7: the RL example's 5 tasks on distinct nodes).")
@click.option("--cpus-per-node", type=click.IntRange(1), default=None,
              help="CPUs each node advertises to Slurm (default 2).")
@click.option("--memory-per-node", type=click.IntRange(1), default=None, metavar="MB",
              help="Memory each node advertises, in MB (default 4000).")
@click.option("--gpus", default=None, metavar="TYPE:N",
              help="Emulated GPUs per node (GRES gpu:TYPE:N, e.g. A100:2; no real device).")
@click.option("--gpu-nodes", type=click.IntRange(0), default=None, metavar="K",
              help="With --gpus: only the first K nodes have them (default: every node).")
@click.option("--timeout", type=float, default=60.0, show_default=True,
              help="Seconds to wait until every node is idle.")
def up(nodes: int | None, cpus_per_node: int | None, memory_per_node: int | None,
       gpus: str | None, gpu_nodes: int | None, timeout: float) -> None:
    """Start the cluster (or restart what of it is down) and wait until every node is idle.

    Where this machine's cgroups allow it, nodes run with Slurm's own containment
    (proctrack/cgroup, task/cgroup); `status` says which."""
    from jobgroup.devcluster import slurm as dc

    info = dc.up(default_home(), nodes=nodes, cpus_per_node=cpus_per_node,
                 memory_per_node=memory_per_node, timeout=timeout, progress=click.echo,
                 gpus=gpus, gpu_nodes=gpu_nodes)
    click.echo(f"Nodes: {', '.join(f'{n.name} ({n.address})' for n in info.nodes)}; "
               f"partition {info.partition}; controller {info.controller_address}:"
               f"{info.controller_port}.")
    click.echo("Point Slurm's commands at it:")
    click.echo(f"  export SLURM_CONF={info.slurm_conf}")
    click.echo("  sinfo; srun -N2 hostname")
    click.echo(f"jobgroup's Slurm backend finds it through {info.root / 'cluster.json'} "
               "(same JOBGROUP_HOME); stop it with `jobgroup dev slurm down`.")


@slurm.command()
@click.option("--keep-logs", is_flag=True, help="Keep the daemons' logs.")
def down(keep_logs: bool) -> None:
    """Stop every daemon of the cluster and remove its namespaces, bridge and state."""
    from jobgroup.devcluster import slurm as dc

    if dc.stop(default_home(), keep_logs=keep_logs):
        click.echo("Slurm dev cluster stopped.")


@slurm.command()
def status() -> None:
    """Nodes and their state; exit 1 when the cluster is not running (or partly down)."""
    from jobgroup.devcluster import slurm as dc

    running, lines = dc.status(default_home())
    click.echo("\n".join(lines))
    if not running:
        raise SystemExit(1)
