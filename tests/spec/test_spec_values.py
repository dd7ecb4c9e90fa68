"""Parsers of values: durations, cpus/memory/accelerators/ports, names."""

from __future__ import annotations

import math

import pytest

from jobgroup.spec.durations import delay_for, parse_duration
from jobgroup.spec.models import JobGroup, Task
from jobgroup.spec.names import dns_label_problem, hostname_suggestion, name_problem
from jobgroup.spec.resources import (Quantity, parse_accelerators, parse_cpus, parse_disk_size,
                                     parse_memory, ports)


@pytest.mark.parametrize("value, seconds", [
    ("30s", 30), ("5m", 300), ("1h", 3600), ("1d", 86400), ("2w", 1209600), ("5M", 300),
    ("1.5H", 5400), (" 10 ", 10), ("10", 10), (10, 10), (2.5, 2.5), (0, 0), ("0s", 0),
])
def test_durations(value: object, seconds: float) -> None:
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("value", ["5 minutes", "", "s", "1x", "-1s", -1, True, None, [],
                                   math.inf, math.nan, "1e3s"])
def test_bad_durations(value: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(value)


def test_delay_for_map_default_scalar_and_none() -> None:
    def group(delay: object) -> JobGroup:
        return JobGroup(name="g", tasks=[Task(name="a"), Task(name="b")], termination_delay=delay)

    assert delay_for(group({"a": "1m", "default": 5}), "a") == 60
    assert delay_for(group({"a": "1m", "default": 5}), "b") == 5
    assert delay_for(group({"a": "1m"}), "b") == 0
    assert delay_for(group("2m"), "b") == 120
    assert delay_for(group(None), "b") == 0


@pytest.mark.parametrize("value, expected", [
    (4, Quantity(4)), (0.5, Quantity(0.5)), ("4", Quantity(4)), ("4+", Quantity(4, True)),
    (" 2.5 + ", Quantity(2.5, True)), (None, None),
])
def test_cpus(value: object, expected: Quantity | None) -> None:
    assert parse_cpus(value) == expected


@pytest.mark.parametrize("value", ["four", "4++", "+4", "4GB", 0, -1, True, [4], "nan", ""])
def test_bad_cpus(value: object) -> None:
    with pytest.raises(ValueError, match="cpus"):
        parse_cpus(value)


@pytest.mark.parametrize("value, gb, at_least", [
    (32, 32, False), ("32+", 32, True), ("32GB", 32, False), ("32gb+", 32, True),
    ("512MB", 0.5, False), ("1TB", 1024, False), ("1T+", 1024, True), ("2g", 2, False),
    ("1048576KB", 1, False),
])
def test_memory(value: object, gb: float, at_least: bool) -> None:
    assert parse_memory(value) == Quantity(gb, at_least)


@pytest.mark.parametrize("value", ["4QB", "GB", "4 GiB", 0, "-4", False, {"a": 1}])
def test_bad_memory(value: object) -> None:
    with pytest.raises(ValueError, match="memory"):
        parse_memory(value)


def test_disk_size() -> None:
    assert parse_disk_size(256) == Quantity(256) and parse_disk_size("1TB") == Quantity(1024)
    with pytest.raises(ValueError, match=r"'\+' is not allowed"):
        parse_disk_size("100+")


@pytest.mark.parametrize("value, expected", [
    ("A100", [{"A100": 1}]), ("A100:2", [{"A100": 2}]), ("tpu-v2-8", [{"tpu-v2-8": 1}]),
    ("A100:0.5", [{"A100": 0.5}]), ({"A100": 2}, [{"A100": 2}]), ({"A100": None}, [{"A100": 1}]),
    ({"A100:1": None, "V100:2": None}, [{"A100": 1}, {"V100": 2}]),
    ({"A100": 1, "V100": 2}, [{"A100": 1}, {"V100": 2}]),
    (["H100:8", "A100:8"], [{"H100": 8}, {"A100": 8}]), (None, None),
])
def test_accelerators(value: object, expected: list | None) -> None:
    assert parse_accelerators(value) == expected


@pytest.mark.parametrize("value", ["", "A100:", "A100:x", "A100:0", "A100:-1", "A 100", [],
                                   {}, [1], {"A100:1": 2}, 5, "A100:inf"])
def test_bad_accelerators(value: object) -> None:
    with pytest.raises(ValueError, match="accelerator"):
        parse_accelerators(value)


@pytest.mark.parametrize("value, expected", [
    (8080, [8080]), ("8080", [8080]), ("8000-8002", [8000, 8001, 8002]),
    ([80, "8000-8001", 80], [80, 8000, 8001]), (None, []),
])
def test_ports(value: object, expected: list[int]) -> None:
    assert ports(value) == expected


@pytest.mark.parametrize("value", [0, 70000, "http", "9-3", "1-", True, [None], 80.5])
def test_bad_ports(value: object) -> None:
    with pytest.raises(ValueError, match="port"):
        ports(value)


@pytest.mark.parametrize("name, problem", [
    ("trainer", None), ("ppo-trainer-2", None), ("a", None), ("0abc", None),
    ("Trainer", "upper-case"), ("my_task", "'_'"), ("x" * 64, "longer than 63"),
    ("-lead", "starts or ends"), ("trail-", "starts or ends"), ("café", "non-ASCII"),
])
def test_dns_label_problem(name: str, problem: str | None) -> None:
    got = dns_label_problem(name)
    assert got is None if problem is None else (got is not None and problem in got)


@pytest.mark.parametrize("name, ok", [
    ("Bad_Name", True), ("tráiner", True), ("", False), ("a b", False), ("a.b", False),
    ("a/b", False), (123, False), (None, False),
])
def test_name_problem(name: object, ok: bool) -> None:
    assert (name_problem(name) is None) == ok


def test_hostname_suggestion() -> None:
    assert hostname_suggestion("My_Task") == "my-task"
    assert hostname_suggestion("___") == "job"
    assert dns_label_problem(hostname_suggestion("Ü" * 100 + "x")) is None
