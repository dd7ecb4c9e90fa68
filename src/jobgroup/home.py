"""Where the state directory is (a module of its own: the CLI's fast paths import nothing else)."""

from __future__ import annotations

import os
from pathlib import Path


def default_home() -> Path:
    """The state directory: $JOBGROUP_HOME, else ~/.jobgroup."""
    env = os.environ.get("JOBGROUP_HOME")
    return Path(env).expanduser() if env else Path.home() / ".jobgroup"
