"""workdir / file_mounts contents shipped to the pods (pure apart from reading the local files,
and asking git which files it ignores).

What is shipped, as SkyPilot uploads a workdir: every file of the folder but those `.skyignore`
names (its patterns, relative to the folder; `/x` only at the top, `x` anywhere), or, without a
`.skyignore`, those git ignores (`.gitignore`, `.git/info/exclude`, the global excludes: `git
ls-files --others --ignored --exclude-standard --directory`, in the folder and its submodules);
and never `.git`, `__pycache__` or `*.pyc`.

How (no size limit but MAX_ARCHIVE):
- up to 1 MiB (a ConfigMap holds at most that much, keys plus values): one ConfigMap, each file
  under a flat key (keys cannot contain `/`), mapped back to its relative path by the volume's
  `items`; the node driver copies a workdir to a writable folder, a mounted folder is mounted
  read-only;
- above: an uncompressed tar of the files (deterministic: sorted, times and owners zeroed,
  modes kept), cut into CHUNK-byte parts, one ConfigMap each (`binaryData`), all mounted as one
  projected volume; the node driver concatenates the parts and unpacks them (tar, else python3)
  into the workdir, or into an emptyDir at the mount path, before setup. A single mounted file
  above 1 MiB is refused (mount its folder).
"""

from __future__ import annotations

import base64
import glob
import hashlib
import io
import os
import re
import subprocess
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

MAX_CONFIGMAP_BYTES = 1024 * 1024  # the API server's limit on a ConfigMap's data
CHUNK = 900 * 1024  # bytes of archive per ConfigMap (base64 is kept apart from the limit)
MAX_ARCHIVE = 512 * 1024 * 1024  # beyond that, a volume or the image is the place for it
SKIP_DIRS = frozenset({".git", "__pycache__", ".hg", ".svn", ".mypy_cache", ".pytest_cache"})
_KEY_BAD = re.compile(r"[^-._a-zA-Z0-9]")


class FilesTooBig(ValueError):
    pass


@dataclass
class Bundle:
    """The files of one local path: relative path -> bytes (and mode); `single` when the source
    is a file."""

    source: Path
    files: dict[str, bytes] = field(default_factory=dict)
    modes: dict[str, int] = field(default_factory=dict)
    single: bool = False

    @property
    def size(self) -> int:
        return sum(len(k) + len(v) for k, v in self.files.items())

    @property
    def archived(self) -> bool:
        """Shipped as tar parts (above what one ConfigMap holds)."""
        return self.size > MAX_CONFIGMAP_BYTES

    def digest(self) -> str:
        h = hashlib.sha256()
        h.update(b"file" if self.single else b"dir")
        for rel in sorted(self.files):
            h.update(rel.encode() + b"\0" + hashlib.sha256(self.files[rel]).digest())
            h.update(b"%o" % (self.modes.get(rel, 0o644) & 0o111))
        return h.hexdigest()[:10]

    def keys(self) -> dict[str, str]:
        """relative path -> ConfigMap key (valid, unique, deterministic)."""
        out: dict[str, str] = {}
        used: set[str] = set()
        for rel in sorted(self.files):
            key = _KEY_BAD.sub("_", rel.replace("/", "__"))[:240].lstrip(".") or "file"
            base, n = key, 1
            while key in used:
                n += 1
                key = f"{base}-{n}"
            used.add(key)
            out[rel] = key
        return out

    def archive(self) -> bytes:
        """The files as an uncompressed tar, the same bytes for the same files."""
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
            dirs: set[str] = set()
            for rel in sorted(self.files):
                parts = rel.split("/")[:-1]
                for i in range(1, len(parts) + 1):
                    d = "/".join(parts[:i])
                    if d not in dirs:
                        dirs.add(d)
                        info = tarfile.TarInfo(d)
                        info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 0
                        tar.addfile(info)
                info = tarfile.TarInfo(rel)
                info.size, info.mtime = len(self.files[rel]), 0
                info.mode = 0o755 if self.modes.get(rel, 0o644) & 0o111 else 0o644
                tar.addfile(info, io.BytesIO(self.files[rel]))
        return buf.getvalue()

    def parts(self) -> list[bytes]:
        data = self.archive()
        return [data[i:i + CHUNK] for i in range(0, len(data), CHUNK)] or [b""]


def mib(n: int) -> str:
    return f"{n / 2**20:.2f} MiB"


def _skyignore(root: Path) -> set[str] | None:
    """Relative paths `.skyignore` excludes (None: there is no .skyignore)."""
    path = root / ".skyignore"
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return None
    out: set[str] = set()
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        pattern = "." + line if line.startswith("/") else "**/" + line
        for match in glob.glob(os.path.join(glob.escape(str(root)), pattern), recursive=True):
            out.add(os.path.relpath(match, root).rstrip("/"))
    return out


def _gitignored(root: Path) -> set[str]:
    """Relative paths git ignores under `root` (empty: not a git repository, or no git)."""
    def git(where: Path, *args: str) -> str | None:
        try:
            p = subprocess.run(["git", "-c", "safe.directory=*", "-C", str(where), *args],
                               capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return p.stdout if p.returncode == 0 else None

    subs = git(root, "submodule", "foreach", "-q", "printf '%s\\0' \"$displaypath\"")
    if subs is None:
        return set()
    out: set[str] = set()
    for repo in [""] + [s for s in subs.split("\0") if s and not s.startswith("../")]:
        listed = git(root / repo, "ls-files", "-z", "--others", "--ignored",
                     "--exclude-standard", "--directory")
        for item in (listed or "").split("\0"):
            if not item:
                continue
            if repo == "" and item == "./":
                return set()  # the whole folder is ignored: ship it all (as SkyPilot)
            out.add(os.path.normpath(os.path.join(repo, item)).rstrip("/"))
    return out


def excluded(root: Path) -> set[str]:
    """What of folder `root` is not shipped (see the module docstring)."""
    sky = _skyignore(root)
    return sky if sky is not None else _gitignored(root)


def collect(path: Path, what: str) -> Bundle:
    """Read the file or folder at `path` (less what is ignored); FilesTooBig (the message
    names `what`) above MAX_ARCHIVE, or for a single file above 1 MiB."""
    bundle = Bundle(path, single=path.is_file())
    if bundle.single:
        bundle.files[path.name] = path.read_bytes()
        bundle.modes[path.name] = path.stat().st_mode
        if bundle.size > MAX_CONFIGMAP_BYTES:
            raise FilesTooBig(
                f"{what} ({path}) is one file of {mib(bundle.size)}; a single mounted file is "
                "shipped as a ConfigMap, which holds at most 1 MiB: mount the folder it is in "
                "(any size), or put it in a volume or the image")
        return bundle
    skip = excluded(path)
    for root, dirs, names in os.walk(path):
        rel_root = os.path.relpath(root, path)
        rel_root = "" if rel_root == "." else rel_root
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS
                         and os.path.join(rel_root, d) not in skip)
        for name in sorted(names):
            rel = os.path.join(rel_root, name)
            if name.endswith(".pyc") or rel in skip:
                continue
            full = Path(root) / name
            if not full.is_file():
                continue  # sockets, dangling links
            key = Path(rel).as_posix()
            bundle.files[key] = full.read_bytes()
            bundle.modes[key] = full.stat().st_mode
            if bundle.size > MAX_ARCHIVE:
                raise FilesTooBig(
                    f"{what} ({path}) is more than {mib(MAX_ARCHIVE)}; put large files in a "
                    "volume (`volumes:`, a PersistentVolumeClaim) or into the image "
                    "(`resources.image_id`), or leave them out with a .skyignore")
    return bundle


def configmap_data(bundle: Bundle) -> tuple[dict[str, str], dict[str, str]]:
    """(data, binaryData): UTF-8 text as text, anything else base64."""
    data: dict[str, str] = {}
    binary: dict[str, str] = {}
    for rel, key in bundle.keys().items():
        raw = bundle.files[rel]
        try:
            data[key] = raw.decode("utf-8")
        except UnicodeDecodeError:
            binary[key] = base64.b64encode(raw).decode()
    return data, binary


def part_key(i: int) -> str:
    return f"part-{i:04d}"


UNPACK = r"""unpack() {  # unpack "$1" (a folder of tar parts) into folder "$2"
  mkdir -p "$2" || return 1
  if command -v tar >/dev/null 2>&1; then
    cat "$1"/part-* | tar -x -f - -C "$2"
  else
    cat "$1"/part-* | python3 -c 'import sys, tarfile
tarfile.open(fileobj=sys.stdin.buffer, mode="r|").extractall(sys.argv[1])' "$2"
  fi
}
"""
