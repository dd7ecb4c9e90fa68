"""`jobgroup volume create|ls|rm [--infra kubernetes]`."""

from __future__ import annotations

import click

from jobgroup import volumes
from jobgroup.cli.output import table
from jobgroup.state.store import Store, default_home

def _infra(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """`local`, `kubernetes`/`k8s`, or `kubernetes/CONTEXT` (a kubeconfig context, as a
    launch's infra): kept as given once its backend is known."""
    from jobgroup.backends.registry import kind

    if kind(value) not in ("local", "kubernetes") or (kind(value) == "local" and "/" in value):
        raise click.BadParameter(f"{value!r}: expected local, kubernetes or "
                                 "kubernetes/CONTEXT", ctx=ctx, param=param)
    return value


_INFRA = click.option("--infra", default="local", show_default=True, callback=_infra,
                      metavar="local|kubernetes[/CONTEXT]",
                      help="Where the volume lives: this machine, or PersistentVolumeClaims in "
                           "the namespace of $JOBGROUP_HOME/kubernetes.yaml (else of the "
                           "context) on the cluster of your KUBECONFIG (CONTEXT: that context "
                           "of it).")


def _k8s_config(infra: str):
    """The Kubernetes configuration a `--infra kubernetes[/CONTEXT]` names (this shell's
    KUBECONFIG)."""
    from jobgroup.backends.kubernetes import load_config
    from jobgroup.backends.registry import zone

    return load_config(default_home(), context=zone(infra))


def _on_kubernetes(infra: str) -> bool:
    from jobgroup.backends.registry import kind

    return kind(infra) == "kubernetes"


def human_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


@click.group()
def volume() -> None:
    """Named volumes (`volumes: {/checkpoints: NAME}` in a task): local folders, or
    PersistentVolumeClaims with --infra kubernetes.

    \b
    Examples:
      jobgroup volume ls
      jobgroup volume rm my-checkpoints
      jobgroup volume create ckpt --size 10Gi --infra kubernetes
      jobgroup volume ls --infra kubernetes
      jobgroup volume ls --infra kubernetes/gpu-cluster   # that context of your kubeconfig
    """


@volume.command("create")
@click.argument("name")
@click.option("--size", help="Capacity of the claim, e.g. 10Gi (kubernetes; default: "
                             "volume_size of kubernetes.yaml). Local volumes have no size.")
@_INFRA
def create(name: str, size: str | None, infra: str) -> None:
    """Create a volume (local ones are also created on first use)."""
    if _on_kubernetes(infra):
        from jobgroup.backends.kubernetes import volumes as k8s

        config = _k8s_config(infra)
        obj = k8s.create(name, size, config)
        click.echo(f"Volume {name} created: PersistentVolumeClaim in namespace "
                   f"{config.namespace}, {obj['spec']['resources']['requests']['storage']}.")
        return
    if size:
        click.echo("note: --size is ignored for local volumes (a folder has no fixed size)",
                   err=True)
    path = volumes.create_volume(default_home(), name)
    click.echo(f"Volume {name} created: {path}")


@volume.command("ls")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@_INFRA
def ls(as_json: bool, infra: str) -> None:
    """List volumes: name, size, who uses them."""
    if _on_kubernetes(infra):
        _ls_kubernetes(as_json, infra)
        return
    store = Store(default_home())
    try:
        vols = volumes.list_volumes(store)
    finally:
        store.close()
    if as_json:
        import msgspec

        click.echo(msgspec.json.encode(vols).decode())
        return
    if not vols:
        click.echo("No volumes.")
        return
    click.echo(table(["NAME", "SIZE", "USED BY", "PATH"], [
        [v.name, human_size(v.size_bytes),
         ", ".join(f"job {j}" for j in v.used_by) or "-", v.path] for v in vols
    ]))


def _ls_kubernetes(as_json: bool, infra: str) -> None:
    from jobgroup.backends.kubernetes import volumes as k8s

    config = _k8s_config(infra)
    claims = k8s.list_claims(config)
    if as_json:
        import msgspec

        click.echo(msgspec.json.encode(claims).decode())
        return
    if not claims:
        click.echo(f"No volumes in namespace {config.namespace}.")
        return
    click.echo(table(["NAME", "SIZE", "STATUS", "USED BY"], [
        [c.name, c.size, c.status, ", ".join(c.used_by) or "-"] for c in claims]))


@volume.command("rm")
@click.argument("names", nargs=-1, required=True)
@_INFRA
def rm(names: tuple[str, ...], infra: str) -> None:
    """Delete volumes and their data (refused while a running job uses one)."""
    if _on_kubernetes(infra):
        from jobgroup.backends.kubernetes import volumes as k8s

        config = _k8s_config(infra)
        for name in names:
            k8s.remove(name, config)
            click.echo(f"Volume {name} removed (namespace {config.namespace}).")
        return
    store = Store(default_home())
    try:
        for name in names:
            volumes.remove_volume(store, name)
            click.echo(f"Volume {name} removed.")
    finally:
        store.close()
