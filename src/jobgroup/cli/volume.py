"""`jobgroup volume ls|rm`."""

from __future__ import annotations

import click

from jobgroup import volumes
from jobgroup.cli.output import table
from jobgroup.state.store import Store, default_home


def human_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


@click.group()
def volume() -> None:
    """Named local volumes (`volumes: {/checkpoints: NAME}` in a task).

    \b
    Examples:
      jobgroup volume ls
      jobgroup volume rm my-checkpoints
    """


@volume.command("ls")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def ls(as_json: bool) -> None:
    """List volumes: name, size, jobs using them."""
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


@volume.command("rm")
@click.argument("names", nargs=-1, required=True)
def rm(names: tuple[str, ...]) -> None:
    """Delete volumes and their data (refused while a running job uses one)."""
    store = Store(default_home())
    try:
        for name in names:
            volumes.remove_volume(store, name)
            click.echo(f"Volume {name} removed.")
    finally:
        store.close()
