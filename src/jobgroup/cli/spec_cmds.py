"""`jobgroup validate` and `jobgroup schema`: check a spec, print its JSON Schema.

Kept light on purpose (no asyncio, no controller): `validate` must start, load and answer well
within 150 ms.
"""

from __future__ import annotations

import sys

import click

from jobgroup.cli.output import paint, table, use_colour


def _resources(res: object) -> str:
    """A one-line summary of a `Resources` (what one node needs)."""
    from jobgroup.spec import resources as r

    parts = []
    accels = r.parse_accelerators(getattr(res, "accelerators"))
    if accels:
        parts.append(" | ".join(f"{k}:{v:g}" for alt in accels for k, v in alt.items()))
    for label, value, unit in (("cpus", r.parse_cpus(getattr(res, "cpus")), ""),
                               ("memory", r.parse_memory(getattr(res, "memory")), "GB")):
        if value is not None:
            parts.append(f"{label}={value.value:g}{'+' if value.at_least else ''}{unit}")
    ports = r.ports(getattr(res, "ports"))
    if ports:
        shown = f"{ports[0]}-{ports[-1]}" if len(ports) > 2 and ports[-1] - ports[0] == len(ports) - 1 \
            else ",".join(map(str, ports))
        parts.append(f"ports={shown}")
    for key in ("infra", "cloud", "instance_type"):
        if getattr(res, key):
            parts.append(f"{key}={getattr(res, key)}")
    if getattr(res, "use_spot"):
        parts.append("spot")
    n_alt = len(getattr(res, "any_of") or getattr(res, "ordered") or [])
    if n_alt:
        parts.append(f"+{n_alt} alternatives")
    return ", ".join(parts) or "-"


def _summary(loaded: object, colour: bool) -> str:
    from jobgroup.spec.durations import delay_for

    group = loaded.group  # type: ignore[attr-defined]
    nodes = sum(t.num_nodes for t in group.tasks)
    plural = lambda n, w: f"{n} {w}{'' if n == 1 else 's'}"  # noqa: E731
    if group.execution == "serial":
        kind, how = "pipeline", f"serial, {plural(len(group.tasks), 'task')}"
    else:
        kind, how = "job group", f"parallel, {plural(len(group.tasks), 'task')}"
    head = (f"{paint('valid', 'green', colour)}: {kind} '{paint(group.name, 'bold', colour)}' "
            f"({how}, {plural(nodes, 'node')})")
    marked = bool(group.primary_tasks)
    rows = [[t.name + (" [P]" if marked and t.name in group.primary_tasks else ""),
             str(t.num_nodes), _resources(t.resources)] for t in group.tasks]
    lines = [head, table(["TASK", "NODES", "RESOURCES (per node)"], rows)]
    if marked:
        aux = [t.name for t in group.tasks if t.name not in group.primary_tasks]
        if aux:
            delays = ", ".join(f"{a} {delay_for(group, a):g}s" for a in aux)
            lines.append(f"[P] primary. When the primaries finish, auxiliaries stop after: {delays}")
    return "\n".join(lines)


@click.command()
@click.argument("file", metavar="FILE")
@click.option("--json", "as_json", is_flag=True,
              help="Print the normalized spec (or the problems) as JSON on stdout.")
@click.option("--name", "-n", default=None, help="Use this group name instead of the spec's.")
def validate(file: str, as_json: bool, name: str | None) -> None:
    """Check a job-group, pipeline or task YAML file (or - for stdin).

    Prints a short summary of a valid spec, or every problem found as
    FILE:LINE:COL: WHERE KEY: MESSAGE. Exit status: 0 valid, 2 invalid.

    \b
    Examples:
      jobgroup validate examples/rl-post-training/rl-post-training.yaml
      jobgroup validate train.yaml --json | jq '.spec.tasks[].name'
      cat group.yaml | jobgroup validate -
    """
    from jobgroup.spec import SpecError
    from jobgroup.spec.loader import load_path

    try:
        loaded = load_path(file, name=name)
    except SpecError as e:
        _report_invalid(file, e.problems, as_json)
        sys.exit(e.exit_code)  # not click's Exit: main() runs click with standalone_mode=False
    if as_json:
        _print_json({"valid": True, "file": file,
                     "base_dir": str(loaded.base_dir),
                     "spec": _spec_data(loaded.group),
                     "warnings": [p.to_dict() for p in loaded.warnings]})
        return
    err_colour = use_colour(sys.stderr)
    for p in loaded.warnings:
        click.echo(paint(str(p), "yellow", err_colour), err=True)
    click.echo(_summary(loaded, use_colour()))


def _spec_data(group: object) -> object:
    from jobgroup.spec.dump import to_data

    return to_data(group)


def _print_json(data: object) -> None:
    import msgspec

    def enc(obj: object) -> object:
        return str(obj)

    click.echo(msgspec.json.format(msgspec.json.encode(data, enc_hook=enc), indent=2).decode())


def _report_invalid(file: str, problems: list, as_json: bool) -> None:
    if as_json:
        _print_json({"valid": False, "file": file, "problems": [p.to_dict() for p in problems]})
        return
    colour = use_colour(sys.stderr)
    for p in problems:
        click.echo(paint(str(p), "red" if p.severity == "error" else "yellow", colour), err=True)
    errors = sum(p.severity == "error" for p in problems)
    if len(problems) > 1:
        click.echo(f"{file}: invalid ({errors} error{'' if errors == 1 else 's'})", err=True)


@click.command()
def schema() -> None:
    """Print the JSON Schema of spec documents (header and task), for editors.

    \b
    Examples:
      jobgroup schema > jobgroup.schema.json
      # then, first line of a spec, for yaml-language-server (VS Code YAML, ...):
      # yaml-language-server: $schema=./jobgroup.schema.json
    """
    from jobgroup.spec.schema import json_schema

    _print_json(json_schema())
