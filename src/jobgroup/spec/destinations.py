"""Where a `file_mounts` destination lands on a node, as SkyPilot places it (pure; shared by
`validate` and the backends, so that what a launch would refuse `validate` refuses too).

SkyPilot makes a destination that is neither absolute nor `~/...` relative to the node's working
directory, `~/sky_workdir` (`sky/backends/cloud_vm_ray_backend.py`: `if not os.path.isabs(dst)
and not dst.startswith('~/'): dst = f'{SKY_REMOTE_WORKDIR}/{dst}'`).
"""

from __future__ import annotations

import posixpath

REMOTE_WORKDIR = "~/sky_workdir"  # SkyPilot's SKY_REMOTE_WORKDIR: the node's working directory


def relative_part(dst: str) -> str | None:
    """Where SkyPilot puts destination `dst` relative to the node's working directory
    (`~/sky_workdir`): `data` -> `data`, `./x/y` -> `x/y`, `~/sky_workdir/ckpt` -> `ckpt`,
    `.` -> `.` (the directory itself); None for one that is not below it: `/data`, `~/data`,
    and `../data` (SkyPilot's `~/sky_workdir/../data`: see `home_part`)."""
    if not dst.startswith(("/", "~")):
        dst = f"{REMOTE_WORKDIR}/{dst}"
    full = posixpath.normpath(dst)
    if full == REMOTE_WORKDIR:
        return "."
    if full.startswith(REMOTE_WORKDIR + "/"):
        return full[len(REMOTE_WORKDIR) + 1:]
    return None


def home_part(dst: str) -> str | None:
    """A relative destination that leaves SkyPilot's `~/sky_workdir` upwards, as the home path
    SkyPilot makes of it (`../data` -> `~/data`); None for any other."""
    if dst.startswith(("/", "~")):
        return None
    full = posixpath.normpath(f"{REMOTE_WORKDIR}/{dst}")
    if full == "~" or full.startswith("~/"):
        return None if relative_part(dst) is not None else full
    return None


def problem(dst: str) -> str | None:
    """Why destination `dst` cannot be mounted on a node (None: it can): the working directory
    itself, or a relative path that leads out of the home directory."""
    if not dst.strip():
        return "the mount path is empty"
    if dst.startswith(("/", "~")) and relative_part(dst) is None:
        return None
    if relative_part(dst) == ".":
        return (f"that is the node's working directory itself (SkyPilot's {REMOTE_WORKDIR}); "
                "mount below it or at an absolute path")
    if relative_part(dst) is None and home_part(dst) in (None, "~"):
        return (f"a relative destination is relative to the node's working directory "
                f"(SkyPilot's {REMOTE_WORKDIR}); this one leads out of the home directory")
    return None
