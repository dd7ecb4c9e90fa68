"""The click application behind `jobgroup` (entry point: `cli.main`). Each subcommand lives in a
small module, imported only when used, so `jobgroup validate` does not pay for the controller's
imports."""

from __future__ import annotations

import difflib
import importlib
import sys

import click

from jobgroup.errors import JobGroupError

# command name -> (module, attribute); imported lazily by LazyGroup.
_COMMANDS = {
    "validate": ("jobgroup.cli.spec_cmds", "validate"),
    "schema": ("jobgroup.cli.spec_cmds", "schema"),
    "launch": ("jobgroup.cli.jobs", "launch"),
    "queue": ("jobgroup.cli.jobs", "queue"),
    "cancel": ("jobgroup.cli.jobs", "cancel"),
    "wait": ("jobgroup.cli.jobs", "wait"),
    "logs": ("jobgroup.cli.logs", "logs"),
    "controller": ("jobgroup.cli.controller", "controller"),
    "events": ("jobgroup.cli.events", "events"),
    "resources": ("jobgroup.cli.resources", "resources"),
    "volume": ("jobgroup.cli.volume", "volume"),
    "doctor": ("jobgroup.cli.doctor", "doctor"),
    "dashboard": ("jobgroup.cli.dashboard", "dashboard"),
    "dev": ("jobgroup.cli.dev", "dev"),
    "exec": ("jobgroup.cli.operate", "exec_"),
    "port-forward": ("jobgroup.cli.operate", "port_forward"),
    "top": ("jobgroup.cli.operate", "top"),
}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in _COMMANDS:
            return None
        module, attr = _COMMANDS[name]
        return getattr(importlib.import_module(module), attr)

    def resolve_command(self, ctx: click.Context, args: list[str]):  # type: ignore[no-untyped-def]
        """As click's, with "did you mean" for a mistyped command (`jobgroup queu`)."""
        name = args[0] if args else ""
        if name and name not in _COMMANDS and not name.startswith("-") \
                and not ctx.resilient_parsing:
            close = difflib.get_close_matches(name, self.list_commands(ctx), n=3, cutoff=0.6)
            if close:
                ctx.fail(f"No such command {name!r}. Did you mean "
                         f"{' or '.join(repr(c) for c in close)}?")
        return super().resolve_command(ctx, args)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="jobgroup")
def cli() -> None:
    """Run job groups: several tasks launched, watched, logged and ended as one unit.

    \b
    Examples:
      jobgroup validate examples/rl-post-training/rl-post-training.yaml
      jobgroup launch examples/hello/hello.yaml
      jobgroup queue
      jobgroup logs 3 trainer
    """


def run(argv: list[str] | None = None) -> None:
    """Console entry point: user errors become a message and an exit code, never a traceback."""
    try:
        # Without standalone mode click returns (not raises) ctx.exit()'s code: keep it.
        rv = cli.main(args=argv, standalone_mode=False)
        sys.exit(rv if isinstance(rv, int) else 0)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except JobGroupError as e:
        click.echo(f"Error: {e}", err=True)
        sys.exit(e.exit_code)
    except BrokenPipeError:
        sys.exit(0)
