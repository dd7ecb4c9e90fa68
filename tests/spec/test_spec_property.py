"""Property tests: whatever is done to a valid spec, loading it either succeeds (and the result
round-trips through YAML) or raises SpecError; never any other exception."""

from __future__ import annotations

from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jobgroup.spec import SpecError, dump, load

REPO = Path(__file__).resolve().parents[2]
SEEDS = [p.read_text() for p in sorted((REPO / "examples").glob("*/*.yaml"))] + [
    "name: one\nrun: echo hi\nresources: {cpus: 4+, accelerators: {A100: 2}}\n",
    "run: a\n---\nrun: b\n",
    "name: g\nexecution: parallel\nprimary_tasks: [a]\ntermination_delay: {default: 1m, b: 5s}\n"
    "---\nname: a\nnum_nodes: 2\n---\nname: b\nenvs: {X: 1}\n",
]
NASTY = st.sampled_from(list(":-[]{}#&*!|>'\",?%@`\\\t\n ") + ["\x00", "\x07", "é", "\ufeff",
                        "---\n", "- ", ": ", "<<: ", "!!binary ", "&a ", "*a", "\n  ", "0x",
                        ".nan", "~", "yes", "1e9", "2001-01-01", "8000-9000", "A100:0"])
TEXT = st.lists(st.one_of(NASTY, st.text(max_size=5)), max_size=6).map("".join)
SETTINGS = settings(max_examples=300, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


def _must_be_spec_error_or_group(text: str) -> None:
    try:
        group = load(text)
    except SpecError as e:
        assert e.problems and all(p.line is None or p.line >= 1 for p in e.problems)
        assert str(e)
        return
    assert group.name and all(t.name for t in group.tasks)


@st.composite
def text_edits(draw: st.DrawFn) -> str:
    text = draw(st.sampled_from(SEEDS))
    for _ in range(draw(st.integers(1, 4))):
        lines = text.splitlines(keepends=True) or [""]
        op = draw(st.sampled_from(["insert", "delete", "dup-line", "drop-line", "swap", "cut"]))
        i = draw(st.integers(0, max(len(text) - 1, 0)))
        j = draw(st.integers(0, len(lines) - 1))
        k = draw(st.integers(0, len(lines) - 1))
        if op == "insert":
            text = text[:i] + draw(TEXT) + text[i:]
        elif op == "delete":
            text = text[:i] + text[i + draw(st.integers(1, 20)):]
        elif op == "dup-line":
            text = "".join(lines[:j + 1] + [lines[j]] + lines[j + 1:])
        elif op == "drop-line":
            text = "".join(lines[:j] + lines[j + 1:])
        elif op == "swap":
            lines[j], lines[k] = lines[k], lines[j]
            text = "".join(lines)
        else:
            text = text[:i]
    return text + "\n"  # always text, never taken for a path


@SETTINGS
@given(text_edits())
def test_random_text_edits_raise_only_spec_errors(text: str) -> None:
    _must_be_spec_error_or_group(text)


VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False) | st.text(max_size=12) | st.sampled_from(
        ["4+", "32GB", "A100:2", "30s", "8000-8002", "", "parallel", "serial", "a", "SAME_INFRA"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(["name", "run", "cpus", "a", "default", "A100", "X"]) | st.text(max_size=6),
        inner, max_size=3),
    max_leaves=8,
)


def _paths(data: object, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(data, dict):
        for k, v in data.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            out += _paths(v, (*prefix, i))
    return out


@st.composite
def data_edits(draw: st.DrawFn) -> str:
    docs = list(yaml.safe_load_all(draw(st.sampled_from(SEEDS))))
    for _ in range(draw(st.integers(1, 3))):
        d = draw(st.integers(0, len(docs) - 1))
        path = draw(st.sampled_from(_paths(docs[d])))
        value = draw(VALUES)
        if not path:
            docs[d] = value
            continue
        parent = docs[d]
        for p in path[:-1]:
            parent = parent[p]
        if isinstance(parent, dict) and draw(st.booleans()):
            parent.pop(path[-1], None)
        else:
            parent[path[-1]] = value
    return yaml.safe_dump_all(docs, explicit_start=True)


@SETTINGS
@given(data_edits())
def test_random_value_edits_raise_only_spec_errors_and_valid_ones_round_trip(text: str) -> None:
    try:
        group = load(text)
    except SpecError as e:
        assert e.problems and str(e)
        return
    assert load(dump(group)) == group
