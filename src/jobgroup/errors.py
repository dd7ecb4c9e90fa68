"""Errors a user can cause. The CLI prints them (no traceback) and exits with `exit_code`."""

from __future__ import annotations


class JobGroupError(Exception):
    """Base of every error meant for a user; the message is written in the user's terms."""

    exit_code = 2


class UsageError(JobGroupError):
    """Bad input or usage (unknown job, unknown task, bad flag value). Exit 2."""

    exit_code = 2


class NotFound(UsageError):
    """A job, task or volume that does not exist; the message lists what does."""


class ControllerError(JobGroupError):
    """The controller could not be started or reached. Exit 1 (not the user's input)."""

    exit_code = 1


class StateUnwritable(JobGroupError):
    """The state directory cannot be written (disk full, read-only file system, an I/O error):
    nothing was recorded. Exit 1 (not the user's input)."""

    exit_code = 1
