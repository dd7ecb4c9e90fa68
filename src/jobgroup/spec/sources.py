"""Reading a spec's text from a path or a string, safely (bounded size, text only).

`read(source)` decides what `source` is:
- an `os.PathLike` is a path;
- a `str` that contains a newline is YAML text;
- a `str` without a newline is a path when a file (or anything) exists there, or when it looks
  like one (ends in .yaml/.yml/.json, or contains a path separator); otherwise it is YAML text
  (so ``load("name: x")`` works, and ``load("missing.yaml")`` says the file does not exist);
- ``"-"`` is standard input.

Files larger than `MAX_BYTES` (10 MiB: a job group is a few KiB) are refused before anything is
read; so are directories, files that are not UTF-8 text, and files containing NUL bytes.
"""

from __future__ import annotations

import os
import stat
import sys

import msgspec

from jobgroup.spec.errors import Problem, SpecError

MAX_BYTES = 10 * 1024 * 1024
TEXT_NAME = "<string>"
_PATH_SUFFIXES = (".yaml", ".yml", ".json")


class Source(msgspec.Struct, frozen=True):
    """The text of a spec and where it came from (`path` is None for text and stdin).
    (Paths are strings here: pathlib costs ~5 ms of `jobgroup validate`'s start.)"""

    text: str
    label: str
    path: str | None


def _fail(label: str, message: str) -> SpecError:
    return SpecError([Problem(label, None, None, "", "", message)])


def _is_path(source: str | os.PathLike[str]) -> bool:
    if isinstance(source, os.PathLike):
        return True
    if "\n" in source or "\r" in source or not source.strip():
        return False
    if source == "-" or source.lower().endswith(_PATH_SUFFIXES) or os.sep in source:
        return True
    try:
        return os.path.lexists(source)
    except (OSError, ValueError):
        return False


def _decode(data: bytes, label: str) -> str:
    if b"\x00" in data:
        raise _fail(label, "is a binary file, not YAML text (it contains NUL bytes)")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _fail(label, f"is not UTF-8 text (invalid byte 0x{data[e.start]:02x} at offset "
                           f"{e.start}); save it as UTF-8") from None
    return text[1:] if text.startswith("\ufeff") else text


def _too_big(label: str, size: str) -> SpecError:
    return _fail(label, f"is too large for a spec ({size}; the limit is "
                        f"{MAX_BYTES // (1024 * 1024)} MiB)")


def _read_file(path: str, label: str) -> str:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise _fail(label, "no such file") from None
    except NotADirectoryError:
        raise _fail(label, "no such file (a parent of it is not a directory)") from None
    except OSError as e:
        raise _fail(label, f"cannot read it: {e.strerror or e}") from None
    if stat.S_ISDIR(st.st_mode):
        raise _fail(label, "is a directory; give the path of a YAML file")
    if st.st_size > MAX_BYTES:
        raise _too_big(label, f"{st.st_size / (1024 * 1024):.1f} MiB")
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_BYTES + 1)  # bounded even for files whose size stat cannot tell
    except OSError as e:
        raise _fail(label, f"cannot read it: {e.strerror or e}") from None
    if len(data) > MAX_BYTES:
        raise _too_big(label, f"more than {MAX_BYTES} bytes")
    return _decode(data, label)


def _read_stdin(label: str) -> str:
    data = sys.stdin.buffer.read(MAX_BYTES + 1)
    if len(data) > MAX_BYTES:
        raise _too_big(label, f"more than {MAX_BYTES} bytes")
    return _decode(data, label)


def read(source: str | os.PathLike[str], *, path: bool = False) -> Source:
    """The text of `source` (see the module doc; with `path`, a str is always a path).
    Raises SpecError for anything unreadable."""
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"a spec source is a path or YAML text, not {type(source).__name__}")
    if not path and not _is_path(source):
        text = str(source)
        if len(text) > MAX_BYTES:
            raise _too_big(TEXT_NAME, f"{len(text)} characters")
        return Source(text, TEXT_NAME, None)
    if source == "-":
        return Source(_read_stdin("<stdin>"), "<stdin>", None)
    label = os.fspath(source)
    return Source(_read_file(label, label), label, label)
