"""The `jobgroup` console entry point.

`jobgroup launch` is the one command whose start-up time users feel on every run (the issue's
target is launch -> every node started), so it first tries the short road (`cli.fastlaunch`:
no click, no YAML, no SQLite in this process); everything else, and every launch the short road
declines, goes to the click application in `cli.app`. Importing this module costs nothing.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> None:
    """Run the command in `argv` (default: sys.argv[1:]) and exit with its code; user errors
    become a message and an exit code, never a traceback."""
    args = sys.argv[1:] if argv is None else list(argv)
    if args[:1] == ["launch"]:
        from jobgroup.cli.fastlaunch import try_launch

        try:
            code = try_launch(args[1:])
        except BrokenPipeError:
            code = 0
        except KeyboardInterrupt:
            code = 130
        if code is not None:
            sys.exit(code)
    from jobgroup.cli.app import run

    run(args)


def __getattr__(name: str) -> object:
    if name in ("cli", "LazyGroup"):  # the click objects, for callers that used them from here
        from jobgroup.cli import app

        return getattr(app, name)
    raise AttributeError(f"module 'jobgroup.cli.main' has no attribute {name!r}")


if __name__ == "__main__":
    main()
