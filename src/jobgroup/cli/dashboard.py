"""`jobgroup dashboard`: serve the web page and JSON API of this state directory."""

from __future__ import annotations

import click


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind. Anything but 127.0.0.1/localhost/::1 requires the token "
                   "($JOBGROUP_HOME/dashboard.token).")
@click.option("--port", default=8765, show_default=True, type=click.IntRange(0, 65535),
              help="Port (0: any free port).")
@click.option("--open", "open_browser", is_flag=True, help="Open the page in a browser.")
def dashboard(host: str, port: int, open_browser: bool) -> None:
    """Serve a live web page of every job group, and the JSON API behind it.

    \b
    Examples:
      jobgroup dashboard --open
      jobgroup dashboard --host 0.0.0.0 --port 9000   # prints a URL with the token
      curl -s localhost:8765/api/jobs | jq '.jobs[0].status'
    """
    import sys

    # Imported here: other commands never pay for the server.
    from jobgroup.dashboard.server import make_server
    from jobgroup.errors import UsageError
    from jobgroup.state.store import default_home

    home = default_home().absolute()
    try:
        server = make_server(home, host, port)
    except OSError as e:
        raise UsageError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    url = server.url
    click.echo(f"Dashboard of {home}: {url}")
    if server.token is not None:
        click.echo(f"Bound beyond loopback: a token is required. Open {url}?token={server.token}")
        click.echo("(or send 'Authorization: Bearer TOKEN'; the token is in "
                   f"{home / 'dashboard.token'})")
    click.echo("Press Ctrl-C to stop.")
    sys.stdout.flush()
    if open_browser:
        import webbrowser

        webbrowser.open(url if server.token is None else f"{url}?token={server.token}")
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        click.echo("Stopped.")
    finally:
        server.stopping.set()
        server.server_close()
