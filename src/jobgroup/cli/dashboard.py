"""`jobgroup dashboard`: serve the web page and JSON API of this state directory."""

from __future__ import annotations

import click


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", default=8765, show_default=True, type=click.IntRange(0, 65535),
              help="Port (0: any free port).")
@click.option("--open", "open_browser", is_flag=True,
              help="Open the page in a browser (signed in with the token).")
@click.option("--no-auth", is_flag=True,
              help="Ask for no token (loopback addresses only): any user of this machine can "
                   "then see every job and launch commands as you. Prints a warning.")
def dashboard(host: str, port: int, open_browser: bool, no_auth: bool) -> None:
    """Serve a live web page of every job group, and the JSON API behind it.

    Every request needs the token of $JOBGROUP_HOME/dashboard.token (created once, mode 0600),
    on every address, loopback included: the printed URL carries it (`?token=...`) and signs a
    browser in with a cookie; scripts send `Authorization: Bearer TOKEN`.

    \b
    Examples:
      jobgroup dashboard --open
      jobgroup dashboard --host 0.0.0.0 --port 9000
      curl -s -H "Authorization: Bearer $(cat ~/.jobgroup/dashboard.token)" \\
          localhost:8765/api/v1/jobs | jq '.jobs[0].status'
    """
    import getpass
    import sys

    # Imported here: other commands never pay for the server.
    from jobgroup.dashboard import auth
    from jobgroup.dashboard.server import make_server
    from jobgroup.errors import UsageError
    from jobgroup.state.store import default_home

    home = default_home().absolute()
    try:
        server = make_server(home, host, port, require_token=not no_auth)
    except OSError as e:
        raise UsageError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    if server.token is None:
        try:
            user = getpass.getuser()
        except (KeyError, OSError):  # no name for this uid (some containers)
            user = "you"
        click.echo(f"Warning: --no-auth: this dashboard asks for no token. Any user of this "
                   f"machine can see every job and launch commands as {user} "
                   f"through {server.url}", err=True)
    click.echo(f"Dashboard of {home}: {server.login_url}")
    if server.token is not None:
        click.echo(f"(the token is in {home / auth.TOKEN_FILE}; scripts send "
                   "'Authorization: Bearer TOKEN')")
    click.echo("Press Ctrl-C to stop.")
    sys.stdout.flush()
    login_file = None
    if open_browser:
        import webbrowser

        if server.token is None:
            webbrowser.open(server.url)
        else:
            login_file = auth.write_login_file(home, server.login_url)
            webbrowser.open(login_file.as_uri())
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        click.echo("Stopped.")
    finally:
        server.server_close()
        if login_file is not None:
            login_file.unlink(missing_ok=True)
