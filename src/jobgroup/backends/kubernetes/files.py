"""workdir / file_mounts contents as ConfigMaps (pure apart from reading the local files).

A ConfigMap holds at most 1 MiB (the API server refuses bigger ones: keys plus values), so a
workdir or mounted folder above that is refused with a message saying what to do instead (a
volume, or files baked into the image). `.git`, `__pycache__` and `*.pyc` are left out.
ConfigMap keys cannot contain `/`, so files are stored under flat keys and mapped back to their
relative paths by the volume's `items`.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

MAX_CONFIGMAP_BYTES = 1024 * 1024  # the API server's limit on a ConfigMap's data
SKIP_DIRS = frozenset({".git", "__pycache__", ".hg", ".svn", ".mypy_cache", ".pytest_cache"})
_KEY_BAD = re.compile(r"[^-._a-zA-Z0-9]")


class FilesTooBig(ValueError):
    pass


@dataclass
class Bundle:
    """The files of one local path: relative path -> bytes; `single` when the source is a file."""

    source: Path
    files: dict[str, bytes] = field(default_factory=dict)
    single: bool = False

    @property
    def size(self) -> int:
        return sum(len(k) + len(v) for k, v in self.files.items())

    def digest(self) -> str:
        h = hashlib.sha256()
        h.update(b"file" if self.single else b"dir")
        for rel in sorted(self.files):
            h.update(rel.encode() + b"\0" + hashlib.sha256(self.files[rel]).digest())
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


def mib(n: int) -> str:
    return f"{n / 2**20:.2f} MiB"


def collect(path: Path, what: str) -> Bundle:
    """Read the file or folder at `path`; FilesTooBig (message names `what`) above 1 MiB."""
    bundle = Bundle(path, single=path.is_file())
    if bundle.single:
        bundle.files[path.name] = path.read_bytes()
    else:
        for root, dirs, names in os.walk(path):
            dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS)
            for name in sorted(names):
                if name.endswith(".pyc"):
                    continue
                full = Path(root) / name
                if not full.is_file():
                    continue  # sockets, dangling links
                bundle.files[full.relative_to(path).as_posix()] = full.read_bytes()
                if bundle.size > MAX_CONFIGMAP_BYTES:
                    break
    if bundle.size > MAX_CONFIGMAP_BYTES:
        raise FilesTooBig(
            f"{what} ({path}) is {'at least ' if not bundle.single else ''}{mib(bundle.size)}; "
            f"the kubernetes backend ships it as a ConfigMap, which holds at most 1 MiB. Put "
            "large files in a volume (`volumes:`, a PersistentVolumeClaim) or into the image "
            "(`resources.image_id`)")
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
