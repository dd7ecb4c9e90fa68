"""cgroups: layout detection (pure, from mountinfo samples), plain reasons instead of failures,
and, as root where a memory controller exists, a real OOM kill and a CPU quota read back."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from jobgroup.resources import cgroups
from jobgroup.resources.cgroups import Layout, parse_mountinfo

HYBRID = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
PURE_V2 = """\
22 1 259:1 / / rw,relatime shared:1 - ext4 /dev/root rw
35 24 0:30 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
"""
V1_COMBINED = """\
30 25 0:26 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid - cgroup cgroup rw,cpu,cpuacct
31 25 0:27 / /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory
"""


def test_layouts_from_mountinfo():
    h = parse_mountinfo(HYBRID, ("hugetlb",))
    assert h.kind == "hybrid" and h.where("cpu") == (1, "/sys/fs/cgroup/cpu")
    assert h.where("memory") == (1, "/sys/fs/cgroup/memory") and h.where("hugetlb") == (
        2, "/sys/fs/cgroup/unified")
    assert "systemd" not in h.v1
    v2 = parse_mountinfo(PURE_V2, ("cpuset", "cpu", "io", "memory", "pids"))
    assert v2.kind == "v2" and v2.where("cpu") == (2, "/sys/fs/cgroup")
    assert parse_mountinfo(PURE_V2, ("pids",)).where("memory") is None
    v1 = parse_mountinfo(V1_COMBINED)
    assert v1.kind == "v1" and v1.where("cpu") == (1, "/sys/fs/cgroup/cpu,cpuacct")
    assert parse_mountinfo("").kind == "none"


def test_no_controller_is_a_reason_not_an_error(tmp_path):
    none = Layout(kind="none")
    cg = cgroups.create("x", cpus=1, memory_bytes=2**20, layout=none)
    assert cg.paths == () and cg.applied == ()
    assert cg.reason == ("no cpu controller in this none cgroup layout; "
                         "no memory controller in this none cgroup layout")
    av = cgroups.availability(none)
    assert not av.cpu and not av.memory
    assert av.reason.startswith("CPU and memory limits per node are not applied: no cpu controller")
    assert cgroups.oom_kills(cg) is None and cgroups.remove(cg) == ""
    assert cgroups.add_pid(cg, os.getpid()) == ""
    # best-effort nodes: nothing asked, nothing created, no reason
    assert cgroups.create("x", layout=cgroups.detect()) == cgroups.NodeCgroup(name="x")


def test_names_are_scoped_by_state_directory(tmp_path):
    a = cgroups.node_name(tmp_path / "a", 7, "trainer", 1)
    b = cgroups.node_name(tmp_path / "b", 7, "trainer", 1)
    assert a != b and a.endswith("-7-trainer-1") and len(a.split("-")[0]) == 8


LAYOUT = cgroups.detect()
AV = cgroups.availability(LAYOUT)
root_with_memory = pytest.mark.skipif(
    os.geteuid() != 0 or not AV.memory,
    reason=f"needs root and a usable memory controller (euid {os.geteuid()}, layout "
           f"{LAYOUT.kind}: {AV.reason or 'ok'})")
root_with_cpu = pytest.mark.skipif(
    os.geteuid() != 0 or not AV.cpu,
    reason=f"needs root and a usable cpu controller ({AV.reason or 'not root'})")


@pytest.fixture
def made(tmp_path):
    created: list[cgroups.NodeCgroup] = []
    yield created
    for cg in created:
        assert cgroups.remove(cg) == ""
        assert not any(os.path.exists(p) for p in cg.paths)
    cgroups.prune(LAYOUT)
    assert not cgroups.leftovers(tmp_path, LAYOUT)


@pytest.mark.root
@root_with_memory
def test_memory_limit_oom_kills_and_is_reported(tmp_path, made):
    cg = cgroups.create(cgroups.node_name(tmp_path, 1, "hog", 0), memory_bytes=50 * 2**20,
                        layout=LAYOUT)
    made.append(cg)
    assert "memory" in cg.applied and cg.reason == ""
    # the child waits until it has been moved, then allocates 300 MB
    code = "import sys; sys.stdin.readline(); b = bytearray(300 * 2**20); b[::4096] = b'x' * len(b[::4096]); print('survived')"
    p = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
    try:
        assert cgroups.add_pid(cg, p.pid) == ""
        assert p.pid in cgroups.pids(cg)
        out, _ = p.communicate("go\n", timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == -signal.SIGKILL and "survived" not in out
    assert cgroups.oom_kills(cg) >= 1
    assert leftover_names(tmp_path) == [cg.name]


def leftover_names(home):
    return [c.name for c in cgroups.leftovers(home, LAYOUT)]


@pytest.mark.root
@root_with_memory
def test_within_the_limit_nothing_is_killed(tmp_path, made):
    cg = cgroups.create(cgroups.node_name(tmp_path, 2, "ok", 0), memory_bytes=200 * 2**20,
                        layout=LAYOUT)
    made.append(cg)
    p = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.readline(); "
                          "b = bytearray(20 * 2**20)"], stdin=subprocess.PIPE, text=True)
    assert cgroups.add_pid(cg, p.pid) == ""
    p.communicate("go\n", timeout=60)
    assert p.returncode == 0 and cgroups.oom_kills(cg) == 0


@pytest.mark.root
@root_with_cpu
def test_cpu_quota_is_written(tmp_path, made):
    cg = cgroups.create(cgroups.node_name(tmp_path, 3, "cpu", 0), cpus=0.5, layout=LAYOUT)
    made.append(cg)
    assert cg.applied == ("cpu",) and cg.reason == ""
    version, _ = LAYOUT.where("cpu")
    (path,) = cg.paths
    if version == 2:
        assert open(os.path.join(path, "cpu.max")).read().split() == ["50000", "100000"]
    else:
        assert open(os.path.join(path, "cpu.cfs_quota_us")).read().strip() == "50000"
        assert open(os.path.join(path, "cpu.cfs_period_us")).read().strip() == "100000"


@pytest.mark.root
@root_with_memory
def test_remove_kills_what_is_left(tmp_path, made):
    cg = cgroups.create(cgroups.node_name(tmp_path, 4, "straggler", 0), cpus=1,
                        memory_bytes=100 * 2**20, layout=LAYOUT)
    p = subprocess.Popen(["sleep", "300"])
    try:
        assert cgroups.add_pid(cg, p.pid) == ""
        assert cgroups.remove(cg) == ""
        assert p.wait(timeout=5) == -signal.SIGKILL
    finally:
        if p.poll() is None:
            p.kill()
    assert not any(os.path.exists(x) for x in cg.paths)
    assert cgroups.remove(cg) == ""  # already gone: quiet


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop to an unprivileged user")
def test_unprivileged_gets_a_reason_not_an_exception(tmp_path):
    code = ("from jobgroup.resources import cgroups as c; "
            "cg = c.create('jgtest-unpriv', cpus=1, memory_bytes=2**26); "
            "print(repr(cg.applied)); print(cg.reason); print(c.availability().reason)")
    try:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             user=65534, group=65534, timeout=60, cwd="/")
    except PermissionError:
        pytest.skip(f"{sys.executable} cannot be run by uid 65534 on this machine")
    if "ModuleNotFoundError" in out.stderr or "PermissionError" in out.stderr:
        pytest.skip(f"uid 65534 cannot import jobgroup here: {out.stderr.splitlines()[-1]}")
    assert out.returncode == 0, out.stderr
    applied, reason, avail = out.stdout.splitlines()
    assert applied == "()"
    if LAYOUT.kind != "none":
        assert "permission denied" in reason or "no " in reason
        assert "not applied" in avail


def test_permission_denied_becomes_a_reason(tmp_path, monkeypatch):
    """What a non-root user gets (simulated: the kernel's EACCES on mkdir)."""
    layout = Layout(kind="v1", v1={"cpu": str(tmp_path / "cpu"), "memory": str(tmp_path / "mem")})

    def deny(path, *a, **k):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(cgroups.os, "makedirs", deny)
    cg = cgroups.create("x", cpus=1, memory_bytes=2**20, layout=layout)
    assert cg.applied == () and cg.paths == ()
    assert cg.reason == (f"cannot write {tmp_path}/cpu/jobgroup: permission denied (not root, and "
                         f"no delegated cgroup); cannot write {tmp_path}/mem/jobgroup: permission "
                         "denied (not root, and no delegated cgroup)")
