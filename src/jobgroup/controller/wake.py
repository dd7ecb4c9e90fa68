"""How commands reach the controller: start it if needed, and wake it after writing intent.

The wake-up is one datagram on the socket file `controller.wake` in the private state directory
(`sockname`: only this user can reach or bind it). Losing a wake-up is harmless: the store
holds the intent and the controller sweeps periodically.
"""

from __future__ import annotations

import fcntl
import os
import socket
import sys
import time
from pathlib import Path

from jobgroup.state import layout as paths
from jobgroup.controller.sockname import WAKE, address, is_ours
from jobgroup.errors import ControllerError


def running(home: Path) -> bool:
    """True if a controller holds this state directory's lock."""
    try:
        # Read-only is enough for flock, and works on a read-only state directory.
        fd = os.open(paths.lock_path(home), os.O_RDONLY | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def controller_pid(home: Path) -> tuple[int, float] | None:
    """(pid, started_at) of the running controller, from its pid file."""
    try:
        pid, started = paths.pid_path(home).read_text().split()
        return int(pid), float(started)
    except (OSError, ValueError):
        return None


def send(home: Path, message: str) -> bool:
    """Send one datagram to the controller; False if none listens (or the socket file is not
    this user's: then nothing is sent, and starting a controller replaces it)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK)
    try:
        with address(home, WAKE) as addr:
            if not is_ours(addr):
                return False
            s.sendto(message.encode(), addr)
        return True
    except BlockingIOError:
        # The controller's queue is full: it is alive and busy, and after each pass it scans
        # the store for intents it has not seen (new jobs, cancels), so nothing is lost.
        return True
    except (ConnectionRefusedError, FileNotFoundError, NotADirectoryError):
        return False
    finally:
        s.close()


def ensure_running(home: Path, timeout: float = 10.0) -> None:
    """Start the controller for `home` unless one runs; return once it listens."""
    if running(home) and _listening(home):
        return
    from jobgroup.home import ensure_private

    ensure_private(home)
    import subprocess

    logf = open(paths.controller_log(home), "ab")
    try:
        subprocess.Popen(
            [sys.executable, "-m", "jobgroup.controller.daemon", str(home)],
            stdin=subprocess.DEVNULL, stdout=logf, stderr=logf, start_new_session=True,
            close_fds=True, cwd="/",
        )
    finally:
        logf.close()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _listening(home):
            return
        time.sleep(0.01)
    raise ControllerError(
        f"the controller did not start within {timeout:g}s; see {paths.controller_log(home)}"
    )


def _listening(home: Path) -> bool:
    return send(home, "ping")


def wake(home: Path, job_id: int | list[int] | None = None) -> None:
    """Tell the controller that job(s) `job_id` (or anything) changed; start it if needed.
    One datagram per call, however many jobs."""
    ids = [job_id] if isinstance(job_id, int) else job_id
    msg = "job " + " ".join(map(str, ids)) if ids else "all"
    if not send(home, msg):
        ensure_running(home)
        send(home, msg)


def stop(home: Path, timeout: float = 10.0) -> bool:
    """Stop the controller of `home` (groups keep running). True once no controller runs.

    Asks politely over the socket; if that is not heard (e.g. a controller of an older version
    listening elsewhere), sends SIGTERM to the pid in its pid file, after checking that this pid
    really is a jobgroup controller of this state directory.
    """
    send(home, "stop")
    deadline = time.monotonic() + timeout
    signalled = False
    while running(home):
        if time.monotonic() >= deadline:
            return False
        if not signalled and time.monotonic() > deadline - timeout / 2:
            info = controller_pid(home)
            if info and _is_our_controller(info[0], home):
                import signal

                try:
                    os.kill(info[0], signal.SIGTERM)
                except ProcessLookupError:
                    pass
            signalled = True
        time.sleep(0.02)
    return True


def _is_our_controller(pid: int, home: Path) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            args = f.read().split(b"\0")
    except OSError:
        return False
    return b"jobgroup.controller.daemon" in args and os.fsencode(home.absolute()) in args
