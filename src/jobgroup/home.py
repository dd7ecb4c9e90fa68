"""Where the state directory is, and keeping it private (a module of its own: the CLI's fast
paths import nothing else).

The state directory holds every job's spec, environment, logs and the controller's sockets, so
it belongs to one user and nobody else may enter it: 0700, owned by the user (DESIGN principle
9). `ensure_private` makes it so whatever its prior mode, or refuses with a message saying why.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path


def default_home() -> Path:
    """The state directory: $JOBGROUP_HOME, else ~/.jobgroup."""
    env = os.environ.get("JOBGROUP_HOME")
    return Path(env).expanduser() if env else Path.home() / ".jobgroup"


def private_problem(home: str | os.PathLike[str]) -> str | None:
    """Why `home` may not be trusted as this user's private state directory (None: it may).
    A missing directory is no problem (it will be created 0700). Light: the fast launch road
    asks this before it talks to a controller socket in `home`."""
    try:
        st = os.stat(home)
    except FileNotFoundError:
        return None
    except OSError as e:
        return f"{home}: cannot use it as the state directory: {e.strerror or e}"
    if not stat.S_ISDIR(st.st_mode):
        return f"{home}: the state directory is not a directory"
    if st.st_uid != os.geteuid():
        return (f"{home}: the state directory belongs to {_user(st.st_uid)}, not to you "
                f"({_user(os.geteuid())}); use your own (set JOBGROUP_HOME or remove it)")
    if st.st_mode & 0o077:
        return f"{home}: the state directory is open to other users (mode {st.st_mode & 0o777:o})"
    return None


def ensure_private(home: str | os.PathLike[str]) -> Path:
    """Create `home` (0700, parents as needed) or make an existing one private: owned by this
    user, mode 0700 (a looser mode is tightened, once, quietly: what it held was readable only
    while it was loose). Raises `UsageError` (exit 2) when it belongs to another user, is not a
    directory, or cannot be made private (e.g. a read-only file system)."""
    from jobgroup.errors import UsageError

    path = Path(home)
    try:
        path.mkdir(parents=True, mode=0o700)
    except FileExistsError:
        pass
    except OSError as e:
        raise UsageError(f"{path}: cannot create the state directory: {e.strerror or e}") from None
    why = private_problem(path)
    if why is None:
        return path
    st = os.stat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
        raise UsageError(why)
    try:
        os.chmod(path, 0o700)
    except OSError as e:
        raise UsageError(f"{why}, and it cannot be made private: {e.strerror or e}") from None
    return path


def state_problem(path: str | os.PathLike[str]) -> str | None:
    """Why nothing can be written under `path` now, in the user's words ("read-only file
    system", "disk full", "not writable"), or None when writes should succeed. A path that
    does not exist yet is judged by its nearest existing parent (where it will be made)."""
    path = os.path.abspath(path)
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    try:
        vfs = os.statvfs(path)
    except OSError as e:
        return e.strerror or str(e)
    if vfs.f_flag & os.ST_RDONLY:
        return "read-only file system"
    if vfs.f_bavail == 0 or (vfs.f_files and vfs.f_favail == 0):
        return "disk full"
    if not os.access(path, os.W_OK):
        return "not writable"
    return None


def _user(uid: int) -> str:
    try:
        import pwd

        return f"user {pwd.getpwuid(uid).pw_name!r} (uid {uid})"
    except (KeyError, ImportError):
        return f"uid {uid}"
