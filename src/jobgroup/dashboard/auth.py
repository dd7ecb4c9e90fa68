"""Who may use the dashboard.

Policy (documented in the README and the OpenAPI spec):
- Every request needs the state directory's token, on every address, loopback included: on a
  shared machine any local user can connect to 127.0.0.1, and the API launches commands as the
  user who runs the dashboard. The token is generated once (`secrets.token_urlsafe`) and kept
  in `$JOBGROUP_HOME/dashboard.token`, mode 0600 (only its owner can read it).
- It is sent as `Authorization: Bearer TOKEN`, or given in the URL as `?token=TOKEN`: on an API
  path that authenticates the one request; on a page it signs the browser in — the answer sets
  an HttpOnly, SameSite=Strict cookie and sends the browser on to the same URL without the
  token (so the token leaves the address bar). The cookie holds a session secret of this server
  process, not the token: a browser sends a host's cookies to every port of that host, so a
  server another local user runs on 127.0.0.1 could see it; what it would see stops working when
  this dashboard stops, and never reveals the token.
- `--no-auth` (explicit, with a warning) serves without the token, and only on a loopback
  address: any local user may then act as the dashboard's user. Beyond loopback it is refused.
- Browsers cannot drive the API from another site: bound to loopback, the `Host` header must
  name this server (no DNS rebinding; beyond loopback the token is what protects), and a request
  that changes state must come from our own origin when it carries an `Origin` header (no
  cross-site POST of a spec).
"""

from __future__ import annotations

import hmac
import os
import secrets
from pathlib import Path

TOKEN_FILE = "dashboard.token"
COOKIE = "jobgroup_dashboard"
LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1"})


def is_loopback(host: str) -> bool:
    """True for 127.0.0.1, localhost and ::1 only (another loopback address such as 127.0.0.2,
    or 0.0.0.0, is not: we do not guess what a given address exposes)."""
    return host.strip("[]").lower() in LOOPBACK_NAMES


def load_or_create_token(home: Path) -> str:
    """The state directory's dashboard token, created (0600) on first use."""
    path = home / TOKEN_FILE
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        st = path.stat()
        if st.st_mode & 0o077:
            os.chmod(path, 0o600)  # someone loosened it: tighten before trusting it
        token = path.read_text().strip()
        if len(token) >= 32:
            return token
        path.unlink()  # empty or truncated (a crash while writing): make a new one
        return load_or_create_token(home)
    token = secrets.token_urlsafe(32)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token


def new_session() -> str:
    """A random secret for this server process's cookies."""
    return secrets.token_urlsafe(32)


def token_matches(given: str | None, token: str) -> bool:
    """Constant-time comparison; False for None or empty."""
    if not given:
        return False
    return hmac.compare_digest(given.encode(), token.encode())


def bearer(header: str | None) -> str | None:
    """The token of an `Authorization: Bearer TOKEN` header, else None."""
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def cookie_name(port: int) -> str:
    """Our cookie's name for a server on `port`: cookies are not kept per port, so two
    dashboards on one host (two state directories) need two names not to sign each other out."""
    return f"{COOKIE}_{port}"


def cookie_value(header: str | None, name: str) -> str | None:
    """The value of cookie `name` in a `Cookie:` header, else None."""
    if not header:
        return None
    for part in header.split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value
    return None


def set_cookie(name: str, value: str) -> str:
    """A `Set-Cookie` value: HttpOnly (no script reads it), SameSite=Strict (no other site's
    request carries it), for the whole server, for the browser session."""
    return f"{name}={value}; Path=/; HttpOnly; SameSite=Strict"


def allowed_hosts(bound: str, port: int) -> set[str]:
    """`Host` header values that name this server when it is bound to a loopback name."""
    names = set(LOOPBACK_NAMES) | {bound}
    out = set()
    for n in names:
        n = n.strip("[]")
        shown = f"[{n}]" if ":" in n else n
        out |= {f"{shown}:{port}".lower()}
        if port == 80:
            out.add(shown.lower())
    return out


LOGIN_FILE = "dashboard-open.html"


def write_login_file(home: Path, login_url: str) -> Path:
    """A page (mode 0600, in the state directory) that sends a browser on to `login_url`.

    `--open` hands the browser this file's name rather than the URL: a command line is readable
    by every local user (/proc/PID/cmdline), the file only by its owner (as Jupyter does)."""
    from jobgroup.dashboard.pages import redirect

    path = home / LOGIN_FILE
    tmp = path.with_name(f".{LOGIN_FILE}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW,
                 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(redirect(login_url, title="Opening the dashboard"))
    os.replace(tmp, path)
    return path
