"""The per-node shim of the local backend: build it, and read what it records.

`shim.c` beside this file is a tiny C supervisor (see its header comment for the
full contract). One runs per node phase; it owns the node's process tree and
records how the node ended, so the controller can die and restart at any moment
(DESIGN.md, principle 3). This module:

- `shim_path()` compiles `shim.c` on first use (system C compiler, no Python per
  node) into a cache directory and returns the binary's path;
- `shim_command(...)` builds the argument list that starts a shim;
- `read_status()` / `read_pid_file()` read the files the shim writes.

Files, for a node phase with status file S:
    S.pid   "CHILDPID SHIM_START_TIME\\n", written atomically right after fork.
            The child leads its own session and process group (id = CHILDPID).
            SHIM_START_TIME is field 22 of /proc/<shim>/stat.
    S       one JSON line, written atomically once the child has ended:
            {"exit_code": N, "pid": P} or {"signal": N, "core": B, "pid": P},
            plus "stopped": true when a stop had been requested before the end.
A stale S and S.pid are removed by the shim at start-up: a present S describes this run.

Signals to the shim: SIGTERM/SIGINT/SIGHUP = stop (SIGTERM to the whole tree,
SIGKILL after the grace); SIGUSR1 = SIGKILL the tree now. Start the shim in its
own session (`start_new_session=True`) so a terminal's Ctrl-C or hang-up reaches
it only through the controller.

Shim exit codes: the child's code (or 128 + signal); 125 usage error; 126
start-up failure (message on stderr, no status file). Recorded child codes: 127
exec failed, 1 cd failed (message in the log).

If the shim is SIGKILLed, the kernel kills the direct child (PDEATHSIG); any
other survivors are the controller's to kill: processes whose session id (field
6 of /proc/PID/stat) equals CHILDPID.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from jobgroup.errors import JobGroupError

SHIM_SOURCE = Path(__file__).with_name("shim.c")
# The header the C programs share (shim.c, ../slurm/agent.c), by the name they include it as.
# `_build` compiles a copy of the source, so it copies the header beside it; `_binary_name`
# hashes it, so that a change to it rebuilds them.
C_HEADERS = {"../die.h": Path(__file__).parent.parent / "die.h"}
# Not -Werror: a newer compiler's new warning must not stop a user's run
# (the tests compile with -Werror to keep the source clean).
CFLAGS = ("-O2", "-Wall", "-Wextra", "-std=c11", "-D_GNU_SOURCE")
COMPILERS = ("cc", "gcc", "clang")

EXIT_USAGE = 125
EXIT_STARTUP = 126
EXIT_EXEC_FAILED = 127

_lock = threading.Lock()
_cache: dict[str, str] = {}


class ShimBuildError(JobGroupError):
    """The node supervisor (a small C program) could not be compiled. Exit 1."""

    exit_code = 1


@dataclass(frozen=True)
class ShimStatus:
    """How a node's main process ended, as the shim recorded it."""

    pid: int
    exit_code: int | None = None
    signal: int | None = None
    core: bool = False
    stopped: bool = False

    @property
    def returncode(self) -> int:
        """Shell-style code: the exit code, or 128 + the signal number."""
        if self.exit_code is not None:
            return self.exit_code
        return 128 + (self.signal or 0)


# Wait statuses of shims this process spawned and reaped, by pid. When a shim could not write
# its status file (the file system turned read-only under it), its own exit code — the node's
# exit code, or 128 + the signal — is the only record left, and only its parent can read it.
_reaped: dict[int, int] = {}
_REAPED_MAX = 65536  # bound: entries are taken by `reaped_status`, normally at once


def note_reaped(pid: int, wait_status: int) -> None:
    """Remember how shim `pid` (our child) exited; called by whoever reaps it."""
    if len(_reaped) >= _REAPED_MAX:
        _reaped.pop(next(iter(_reaped)))
    _reaped[pid] = wait_status


def reaped_status(pid: int) -> int | None:
    """The shim's own exit code (taken once), or None when we did not reap it ourselves."""
    st = _reaped.pop(pid, None)
    if st is None:
        return None
    return os.waitstatus_to_exitcode(st) if os.WIFEXITED(st) else 128 + os.WTERMSIG(st)


@dataclass(frozen=True)
class ShimPid:
    """The contents of STATUS_FILE.pid: who to watch while the shim runs."""

    child_pid: int
    shim_start_time: int


def cache_dir() -> Path:
    """Where compiled shims live: $JOBGROUP_CACHE, else $XDG_CACHE_HOME/jobgroup, else
    ~/.cache/jobgroup. Shared by every state directory (the binary depends only on the source,
    compiler and machine), so a new state directory does not pay for a compile."""
    explicit = os.environ.get("JOBGROUP_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "jobgroup"


def _compiler() -> list[str]:
    cc = os.environ.get("CC", "").strip()
    if cc:
        argv = shlex.split(cc)
        if shutil.which(argv[0]) is None:
            raise ShimBuildError(
                f"$CC is set to {cc!r}, but {argv[0]!r} was not found. "
                "jobgroup's local backend compiles a small C supervisor on first use."
            )
        return argv
    for name in COMPILERS:
        if shutil.which(name):
            return [name]
    raise ShimBuildError(
        "No C compiler found (looked for $CC, " + ", ".join(COMPILERS) + "). "
        "jobgroup's local backend compiles a small C supervisor on first use: "
        "install one (e.g. `apt-get install gcc`) or set $CC."
    )


def c_headers() -> dict[str, bytes]:
    """The shared headers' contents (`C_HEADERS`), for `_binary_name` and `_build`."""
    return {name: path.read_bytes() for name, path in C_HEADERS.items()}


def _binary_name(source: bytes, compiler: list[str],
                 headers: Mapping[str, bytes] | None = None) -> str:
    """Cache name of the binary built from `source` and the `headers` it includes."""
    digest = hashlib.sha256()
    headers = headers or {}
    included = [part for name in sorted(headers) for part in (name.encode(), headers[name])]
    for part in (source, *included, " ".join(CFLAGS).encode(), " ".join(compiler).encode(),
                 os.uname().machine.encode()):
        digest.update(part)
        digest.update(b"\0")
    return "jobgroup-shim-" + digest.hexdigest()[:16]


def shim_path() -> str:
    """Path of a compiled shim for the current shim.c, compiling it if needed.

    Safe under concurrency (threads and processes): one compiles under a file
    lock, into a temporary name renamed into place; the others wait and reuse it.
    Raises ShimBuildError when no compiler is found or compilation fails.
    """
    bindir = cache_dir()
    source = SHIM_SOURCE.read_bytes()
    headers = c_headers()
    compiler = _compiler()
    target = bindir / _binary_name(source, compiler, headers)
    key = str(target)
    with _lock:
        cached = _cache.get(key)
    if cached and os.access(cached, os.X_OK):
        return cached
    if not os.access(target, os.X_OK):
        try:
            _build(source, compiler, target, headers)
        except OSError as exc:  # cache dir not writable, disk full, ...
            raise ShimBuildError(
                f"Could not build jobgroup's node supervisor in {bindir}: {exc}. "
                "Set $JOBGROUP_CACHE to a writable directory."
            ) from exc
    with _lock:
        _cache[key] = str(target)
    return str(target)


def _build(source: bytes, compiler: list[str], target: Path,
           headers: Mapping[str, bytes] | None = None) -> None:
    """Compile `source` into `target` (atomically, under a lock beside it). `headers`: the
    files it includes, by their path relative to its folder (`C_HEADERS`)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    lock_path = target.with_name(target.name + ".lock")
    with open(lock_path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # flock: per open file, so threads exclude too
        if os.access(target, os.X_OK):
            return  # someone else built it while we waited
        with tempfile.TemporaryDirectory(prefix="jobgroup-shim-src-") as work:
            # Compile the exact bytes we hashed, even if shim.c changes meanwhile. The
            # source sits one folder down, so that a header it includes as "../x.h" lands
            # inside `work` too.
            src = Path(work) / "src" / "shim.c"
            src.parent.mkdir()
            src.write_bytes(source)
            for name, text in (headers or {}).items():
                (src.parent / name).write_bytes(text)
            tmp = target.with_name(f"{target.name}.tmp.{os.getpid()}.{threading.get_ident()}")
            cmd = [*compiler, *CFLAGS, "-o", str(tmp), str(src)]
            try:
                result = subprocess.run(cmd, capture_output=True, text=True, check=False)
            except OSError as exc:
                raise ShimBuildError(f"Could not run the C compiler {cmd[0]!r}: {exc}") from exc
            if result.returncode != 0:
                tmp.unlink(missing_ok=True)
                raise ShimBuildError(
                    "Compiling jobgroup's node supervisor failed "
                    f"({shlex.join(cmd)}, exit {result.returncode}):\n"
                    + (result.stderr.strip() or result.stdout.strip())
                )
            os.chmod(tmp, 0o755)
            os.rename(tmp, target)


def shim_command(
    status_file: str | os.PathLike[str],
    log_file: str | os.PathLike[str],
    argv: list[str],
    *,
    grace: float | None = None,
    workdir: str | os.PathLike[str] | None = None,
    cgroup: str | os.PathLike[str] | None = None,
    umask: int | None = None,
    log_max: int = 0,
    times: bool = False,
) -> list[str]:
    """The argument list that runs `argv` under a shim (compiles it if needed). `cgroup`: a
    cgroup v2 directory to keep the node's processes in (see shim.c, -G). `umask`: the
    file-creation mask `argv` runs with (default: the caller's). `log_max`: cap the log file
    at this many bytes (>= 65536), rotating it to LOG_FILE.1 (see shim.c, -L); 0: no cap.
    `times`: record when the output came in LOG_FILE.times (see shim.c, -T)."""
    cmd = [shim_path(), "-s", os.fspath(status_file), "-o", os.fspath(log_file)]
    if grace is not None:
        cmd += ["-g", repr(float(grace))]
    if workdir is not None:
        cmd += ["-C", os.fspath(workdir)]
    if cgroup is not None:
        cmd += ["-G", os.fspath(cgroup)]
    if umask is not None:
        cmd += ["-m", f"{umask:o}"]
    if log_max:
        cmd += ["-L", str(log_max)]
    if times:
        cmd.append("-T")
    return [*cmd, "--", *argv]


def pid_file_path(status_file: str | os.PathLike[str]) -> str:
    """The pid file that goes with a status file: STATUS_FILE + ".pid"."""
    return os.fspath(status_file) + ".pid"


def _read_small(path: str | os.PathLike[str]) -> str | None:
    try:
        with open(path, "rb") as f:
            data = f.read(4096)
    except OSError:
        return None
    try:
        return data.decode("ascii")
    except UnicodeDecodeError:
        return None


def _int(value: object) -> int | None:
    # bool is an int subclass; a JSON `true` is not a number here.
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def read_status(status_file: str | os.PathLike[str]) -> ShimStatus | None:
    """The recorded end of a node, or None if not recorded (yet) or unreadable.

    Never raises on a missing, empty, torn or garbage file.
    """
    text = _read_small(status_file)
    if not text or not text.endswith("\n"):
        return None  # the shim always ends the line; no newline = not a whole record
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    pid = _int(data.get("pid"))
    exit_code = _int(data.get("exit_code"))
    sig = _int(data.get("signal"))
    if pid is None or (exit_code is None) == (sig is None):
        return None
    return ShimStatus(
        pid=pid,
        exit_code=exit_code,
        signal=sig,
        core=data.get("core") is True,
        stopped=data.get("stopped") is True,
    )


def read_pid_file(status_file: str | os.PathLike[str]) -> ShimPid | None:
    """Read STATUS_FILE.pid (pass the *status* file's path); None if absent or bad."""
    text = _read_small(pid_file_path(status_file))
    if not text or not text.endswith("\n"):
        return None
    parts = text.split()
    if len(parts) < 2 or not all(p.isdigit() for p in parts[:2]):
        return None
    child_pid, start_time = int(parts[0]), int(parts[1])
    if child_pid <= 0:
        return None
    return ShimPid(child_pid=child_pid, shim_start_time=start_time)
