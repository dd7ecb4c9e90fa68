"""The click application behind `jobgroup` (entry point: `cli.main`). Each subcommand lives in a
small module, imported only when used, so `jobgroup validate` does not pay for the controller's
imports."""

from __future__ import annotations

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
