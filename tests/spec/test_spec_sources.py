"""Reading specs: paths vs text, unreadable inputs, and inputs too large to read whole."""

from __future__ import annotations

import os
import resource
import time
from pathlib import Path

import pytest

from jobgroup.spec import SpecError, load, load_file
from jobgroup.spec.sources import MAX_BYTES


def _message(source: object) -> str:
    with pytest.raises(SpecError) as info:
        load(source)  # type: ignore[arg-type]
    (problem,) = info.value.problems
    assert problem.line is None
    return str(problem)


def test_nonexistent_path(tmp_path: Path) -> None:
    assert _message(tmp_path / "nope.yaml") == f"{tmp_path}/nope.yaml: no such file"
    assert _message("missing.yaml") == "missing.yaml: no such file"
    assert _message(str(tmp_path / "dir" / "x")).endswith("no such file")


def test_directory(tmp_path: Path) -> None:
    assert "is a directory" in _message(tmp_path)
    assert "is a directory" in _message(str(tmp_path))


def test_binary_file(tmp_path: Path) -> None:
    path = tmp_path / "x.yaml"
    path.write_bytes(b"\x7fELF\x02\x01\x01\x00\x00\x00")
    assert "binary file" in _message(path)


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: caf\xe9\n".encode("latin-1"))
    assert "not UTF-8" in _message(path)


def test_utf8_bom_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "bom.yaml"
    path.write_bytes(b"\xef\xbb\xbfname: a\nrun: x\n")
    assert load(path).name == "a"


def test_empty_file_and_comment_only_file(tmp_path: Path) -> None:
    for text in ("", "# nothing here\n", "---\n", "\n\n"):
        path = tmp_path / "empty.yaml"
        path.write_text(text)
        assert "spec is empty" in _message(path)


def test_50mb_file_is_refused_without_reading_it(tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    with open(path, "wb") as f:
        f.truncate(50 * 1024 * 1024)  # sparse: no disk used
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    message = _message(path)
    assert time.perf_counter() - start < 0.5
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 20 * 1024  # KiB
    assert "too large" in message and "50.0 MiB" in message and "10 MiB" in message


def test_text_over_the_limit_is_refused() -> None:
    assert "too large" in _message("run: x\n" + "#" * MAX_BYTES)


def test_large_file_under_the_limit_takes_bounded_time(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_text("name: big\nrun: |\n" + "  echo line\n" * 500_000)  # ~6 MB
    start = time.perf_counter()
    with pytest.raises(SpecError, match=r"the kernel takes up to 12\d\.\d KiB here"):  # 6 MB
        load(path)
    # A 122 KiB script: under the kernel's own limit, not with the node's shell (nodescript):
    # validate says so, rather than the node failing to start.
    path.write_text("name: big\nrun: |\n" + "  echo 123456789\n" * (122 * 1024 // 15 + 1))
    with pytest.raises(SpecError, match="with the shell's 2.3 KiB around it"):
        load(path)
    assert time.perf_counter() - start < 10
    path.write_text("name: big\nrun: echo\n" + "# a comment line\n" * 400_000)  # ~7 MB
    start = time.perf_counter()
    assert load(path).name == "big"
    assert time.perf_counter() - start < 10


def test_alias_bomb_fails_fast() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 9):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    lines.append("config: *a8")
    start = time.perf_counter()
    with pytest.raises(SpecError, match="more than 200000 values"):
        load("\n".join(lines) + "\n")
    assert time.perf_counter() - start < 5


def test_deep_nesting_is_an_error_not_a_crash() -> None:
    for text in ("config: " + "[" * 5000 + "]" * 5000 + "\n",
                 "config:\n" + "".join("  " * i + f"k{i}:\n" for i in range(1, 400))):
        with pytest.raises(SpecError):
            load(text)


def test_single_line_text_is_yaml_not_a_path() -> None:
    assert load("{name: a, run: echo}").name == "a"


def test_path_like_and_str_path(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "g.yaml"
    path.write_text("name: a\nrun: x\n")
    monkeypatch.chdir(tmp_path)
    for source in (path, str(path), "g.yaml"):
        loaded = load_file(source)
        assert loaded.group.name == "a" and loaded.path is not None
        assert loaded.base_dir == tmp_path


def test_unreadable_file(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root reads everything")
    path = tmp_path / "secret.yaml"
    path.write_text("run: x\n")
    path.chmod(0)
    assert "cannot read" in _message(path)


def test_not_a_source() -> None:
    with pytest.raises(TypeError):
        load(123)  # type: ignore[arg-type]


def test_too_many_documents_are_refused_before_building_them() -> None:
    text = "name: g\nexecution: parallel\n" + "---\nname: t\n" * 5000
    start = time.perf_counter()
    with pytest.raises(SpecError, match="more than 1000 documents") as info:
        load(text)
    assert time.perf_counter() - start < 2
    assert info.value.problems[0].line == 2001  # the "---" of the 1001st document


def test_too_many_nodes_are_refused() -> None:
    with pytest.raises(SpecError, match="more than 200000 YAML nodes"):
        load("config: [" + ",".join(["1"] * 250_000) + "]\n")


def test_reported_problems_are_capped_with_a_count_of_the_rest() -> None:
    text = "name: g\nexecution: parallel\n" + "---\nname: t\nnum_nodes: 0\n" * 300
    with pytest.raises(SpecError) as info:
        load(text)
    problems = info.value.problems
    assert len(problems) == 101
    assert problems[-1].message == "... and 499 more problems not shown"
