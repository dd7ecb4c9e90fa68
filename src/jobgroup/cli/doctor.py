"""`jobgroup doctor [--fix]`."""

from __future__ import annotations

import sys

import click

from jobgroup import doctor as doc
from jobgroup.state.store import Store, default_home


@click.command()
@click.option("--fix", is_flag=True, help="Remove what is found.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def doctor(fix: bool, as_json: bool) -> None:
    """Find what crashed runs left behind (processes, namespaces, interfaces, mounts,
    cgroups, files, firewall tables, forwarding, node roots still mounted): of groups that
    ended, and of running groups what no live node uses.

    Exit 0 when nothing is left (or all of it was removed with --fix), 1 otherwise.

    \b
    Examples:
      jobgroup doctor
      jobgroup doctor --fix
    """
    store = Store(default_home())
    try:
        found = doc.find(store)
        if fix and not found.empty:
            doc.fix(found, store)
            after = doc.find(store)
        else:
            after = found
    finally:
        store.close()
    if as_json:
        import msgspec

        click.echo(msgspec.json.encode({"found": found, "left": after}).decode())
    elif found.empty:
        click.echo("Nothing left behind.")
    else:
        for what, items in (("network namespaces", found.netns), ("interfaces", found.links),
                            ("processes", [str(p) for p in found.processes]),
                            ("mounts", found.mounts), ("files", found.files),
                            ("cgroups", found.cgroups), ("firewall tables", found.tables),
                            ("IPv4 forwarding turned on by jobgroup", found.forwarding),
                            ("node roots still mounted", found.overlays)):
            if items:
                click.echo(f"{what}: {' '.join(items)}")
        click.echo("Removed." if fix and after.empty else
                   "Run 'jobgroup doctor --fix' to remove them." if not fix else
                   "Some could not be removed.")
    sys.exit(0 if after.empty else 1)
