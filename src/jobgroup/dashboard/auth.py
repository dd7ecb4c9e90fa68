"""Who may use the dashboard.

Policy (documented in the README and the OpenAPI spec):
- Bound to a loopback name (`127.0.0.1`, `localhost`, `::1`), no token is needed: only this
  machine's users can connect. Any other address — `0.0.0.0`, a LAN address, even another
  loopback address such as `127.0.0.2` (we do not guess what a given address exposes) —
  requires the token.
- The token is generated once (`secrets.token_urlsafe`) and kept in
  `$JOBGROUP_HOME/dashboard.token`, mode 0600; it is sent as `Authorization: Bearer TOKEN`, or
  given once as `?token=TOKEN` on a page URL, which sets an HttpOnly, SameSite=Strict cookie and
  redirects to the URL without it (so the token stays out of the address bar and history).
- Browsers other than ours cannot drive the API from another site: the `Host` header must name
  this server (no DNS rebinding) and a request that changes state must come from our own origin
  when it carries an `Origin` header (no cross-site POST of a spec).
"""

from __future__ import annotations

import hmac
import os
import secrets
from pathlib import Path

TOKEN_FILE = "dashboard.token"
COOKIE = "jobgroup_dashboard"
LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1"})


def needs_token(host: str) -> bool:
    """True unless the server is bound to 127.0.0.1, localhost or ::1 only."""
    return host.strip("[]").lower() not in LOOPBACK_NAMES


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


def token_matches(given: str | None, token: str) -> bool:
    return bool(given) and hmac.compare_digest(given.encode(), token.encode())  # type: ignore[union-attr]


def bearer(header: str | None) -> str | None:
    """The token of an `Authorization: Bearer TOKEN` header, else None."""
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def cookie_value(header: str | None) -> str | None:
    """Our cookie's value in a `Cookie:` header, else None."""
    if not header:
        return None
    for part in header.split(";"):
        name, _, value = part.strip().partition("=")
        if name == COOKIE:
            return value
    return None


def set_cookie(token: str) -> str:
    return f"{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict"


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
