"""Pure parts of node isolation: subnet choice, hosts files, the bubblewrap view."""

from __future__ import annotations

import ipaddress

import pytest

from jobgroup.backends.local import network
from jobgroup.backends.local.isolation import Bind, NodeView, bwrap_args, hosts_text


def nets(*cidrs: str) -> list[ipaddress.IPv4Network]:
    return [ipaddress.ip_network(c) for c in cidrs]


def test_subnet_avoids_routes_and_other_groups():
    assert str(network.pick_subnet(7, nets())) == "10.213.0.0/24"
    taken = nets("10.213.0.0/24", "10.213.1.128/25", "192.0.2.0/24")
    assert str(network.pick_subnet(7, taken)) == "10.213.2.0/24"
    # A route covering the whole pool leaves nothing: a clear error naming the override.
    with pytest.raises(network.NetworkError, match="JOBGROUP_SUBNET_POOL"):
        network.pick_subnet(7, nets("10.0.0.0/8"))
    # Large groups get a larger block; a custom pool is honoured.
    big = network.pick_subnet(300, nets(), "10.50.0.0/16")
    assert big.num_addresses >= 303 and big.subnet_of(ipaddress.ip_network("10.50.0.0/16"))


def test_names_fit_linux_limits_and_identify_the_state_dir(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    nid = network.net_id(a, 123456)
    assert len(nid) == 8 and network.net_id(b, 123456) != nid
    assert len(network.veth_name(nid, 1295)) <= 15 and len(network.bridge_name(nid)) <= 15
    # Fixed width: the id of one job is never a prefix of another's.
    assert not network.net_id(a, 46).startswith(network.net_id(a, 1))


def test_hosts_file_keeps_localhost_lines_and_lists_every_node():
    machine = "127.0.0.1 localhost\n10.9.9.9 build-server\n::1 localhost ip6-localhost\n"
    text = hosts_text([("10.213.0.2", ["a-0.g", "a-0"]), ("10.213.0.3", ["b-0.g", "b-0"])],
                      machine)
    lines = text.splitlines()
    assert "127.0.0.1 localhost" in lines and "::1 localhost ip6-localhost" in lines
    assert "10.213.0.2\ta-0.g a-0" in lines and "10.213.0.3\tb-0.g b-0" in lines
    assert "build-server" not in text


class FakeFS:
    """A host filesystem for bwrap_args: sets of dirs, files and links."""

    def __init__(self, dirs, links=None):
        self.dirs = set(dirs)
        self.links = dict(links or {})

    def exists(self, p):
        return p in self.dirs or p in self.links

    def listdir(self, d):
        prefix = d.rstrip("/") + "/"
        names = {p[len(prefix):].split("/")[0] for p in self.dirs | set(self.links)
                 if p.startswith(prefix) and p != d}
        return sorted(n for n in names if n)

    def kw(self):
        return dict(exists=self.exists, listdir=self.listdir,
                    islink=lambda p: p in self.links, readlink=lambda p: self.links[p])


def test_view_never_creates_mount_points_on_the_host():
    fs = FakeFS({"/", "/usr", "/etc", "/etc/hosts", "/root", "/root/.cache", "/proc", "/dev",
                 "/tmp"}, {"/bin": "usr/bin"})
    view = NodeView(hostname="t-0", hosts_file="/state/hosts", chdir="/work",
                    binds=[Bind("/state/volumes/ck", "/checkpoints"),
                           Bind("/src/code", "/root/code", readonly=True),
                           Bind("/state/volumes/x", "/tmp")])
    args = bwrap_args(view, **fs.kw())
    joined = " ".join(args)
    # The root is rebuilt from binds of the host's entries; /proc and /dev are special.
    assert "--bind /usr /usr" in joined and "--symlink usr/bin /bin" in joined
    assert "--proc /proc" in joined and "--dev-bind /dev /dev" in joined
    # /root/code does not exist on the host: /root is rebuilt (tmpfs + its entries) instead
    # of binding it, so bwrap creates the mount point inside the node only.
    assert "--tmpfs /root" in joined and "--bind-try /root/.cache /root/.cache" in joined
    assert "--bind /root /root" not in joined
    assert "--ro-bind /src/code /root/code" in joined
    assert "--bind /state/volumes/ck /checkpoints" in joined
    assert "--bind /state/volumes/x /tmp" in joined  # an existing path is simply covered
    assert joined.index("--tmpfs /root") < joined.index("--ro-bind /src/code /root/code")
    assert "--bind /state/hosts /etc/hosts" in joined
    assert args[args.index("--hostname") + 1] == "t-0"
    assert args[args.index("--chdir") + 1] == "/work"


# --- issue 15: DNS, routes, NAT rules, /dev/shm, the helper's arguments ------------------------

def test_nodes_use_the_machines_dns_servers_and_a_stubs_upstream_ones():
    from jobgroup.backends.local import egress

    text, servers, note = egress.resolv_for_nodes(
        "nameserver 10.0.0.53\nnameserver 2001:db8::1\nsearch corp.example\noptions ndots:2\n",
        upstream={})
    assert servers == ["10.0.0.53"] and "2001:db8::1" in note
    assert "nameserver 10.0.0.53" in text and "search corp.example" in text
    assert "options ndots:2" in text and "2001:db8" not in text
    # systemd-resolved's stub: its upstream servers, as container runtimes do.
    stub = "nameserver 127.0.0.53\noptions edns0 trust-ad\nsearch lan\n"
    up = {"/run/systemd/resolve/resolv.conf": "nameserver 192.168.1.1\nnameserver 9.9.9.9\n"}
    text, servers, note = egress.resolv_for_nodes(stub, upstream=up)
    assert servers == ["192.168.1.1", "9.9.9.9"] and not note
    assert "127.0.0.53" not in text.replace("stub 127.0.0.53", "")
    assert "/run/systemd/resolve/resolv.conf" in text and "search lan" in text
    # A stub whose upstream is unknown: said, and lookups fail fast rather than time out.
    text, servers, note = egress.resolv_for_nodes("nameserver 127.0.0.1\n", upstream={})
    assert servers == [] and "local stub" in note and "timeout:1" in text


def test_uplinks_are_the_default_routes_and_the_dns_servers_routes():
    from jobgroup.backends.local import egress

    routes = ("Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\n"
              "eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\n"       # default via eth0
              "eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\n"       # 192.0.2.0/24
              "wg0\t0000000A\t00000000\t0001\t0\t0\t0\t000000FF\n"        # 10.0.0.0/8
              "jgab12cd34\t0000D50A\t00000000\t0001\t0\t0\t0\t00FFFFFF\n")  # a group's bridge
    assert egress.uplinks([], routes) == ["eth0"]
    assert egress.uplinks(["10.1.2.3", "192.0.2.53"], routes) == ["eth0", "wg0"]
    assert egress.uplinks(["10.213.0.9"], routes) == ["eth0"]  # never a jobgroup bridge


def test_nat_rules_stay_in_the_groups_own_table():
    from jobgroup.backends.local import egress

    rules = egress.ruleset("ab12cd34", "10.213.0.0/24", "jgab12cd34")
    tables = {line.split(" ip ", 1)[1].split()[0] for line in rules.splitlines()
              if line.startswith(("table", "delete"))}
    assert tables == {"jgab12cd34"}
    assert 'ip saddr 10.213.0.0/24 oifname != "jgab12cd34" masquerade' in rules
    assert "ct state established,related accept" in rules
    assert 'oifname "jgab12cd34" iifname != "jgab12cd34" drop' in rules


def test_shm_size_follows_the_memory_limit_or_the_variable():
    from jobgroup.backends.local import rootfs

    assert rootfs.shm_size({}, 0) == "-"  # tmpfs's own default: half of RAM
    assert rootfs.shm_size({}, 4) == str(2 * 2**30)
    assert rootfs.shm_size({"JOBGROUP_SHM_SIZE": "8g"}, 4) == "8g"
    assert rootfs.shm_bytes("8g") == 8 * 2**30 and rootfs.shm_bytes("-") is None
    assert rootfs.shm_problem("50%") is None and rootfs.shm_problem("512m") is None
    assert "JOBGROUP_SHM_SIZE" in rootfs.shm_problem("8g,uid=0")  # no tmpfs options smuggled
    assert rootfs.shm_bytes("8g,uid=0") is None


def test_helper_binds_shared_paths_over_the_private_root_parents_first():
    from jobgroup.backends.local.isolation import helper_args

    view = NodeView(hostname="t-0", hosts_file="/s/jobs/1/hosts", netns="jg-x-0",
                    chdir="/home/u/proj", resolv_file="/s/jobs/1/resolv.conf",
                    binds=[Bind("/s/volumes/ck", "/ckpt/a"), Bind("/src", "/code", readonly=True)],
                    root_dir="/s/jobs/1/roots/t-0", private_root=True, shm_size="-",
                    state_dir="/s", keep_own=("/home/u/proj/.venv",), hide=("/s/jobs/1/roots",))
    args = helper_args(view)
    joined = " ".join(args)
    assert joined.startswith("-n /run/netns/jg-x-0 -h t-0 -r /s/jobs/1/roots/t-0 -s -")
    assert "-b /s /s" in joined and "-b /home/u/proj /home/u/proj" in joined
    assert "-B /src /code" in joined and "-b /s/volumes/ck /ckpt/a" in joined
    assert joined.index("-b /s /s") < joined.index("-b /s/volumes/ck /ckpt/a")
    assert "-f /s/jobs/1/hosts /etc/hosts -F /s/jobs/1/resolv.conf /etc/resolv.conf" in joined
    assert joined.endswith("-o /home/u/proj/.venv -x /s/jobs/1/roots -C /home/u/proj")


def test_node_helper_compiles_cleanly_with_werror(tmp_path):
    import os
    import shutil
    import subprocess

    from jobgroup.backends.local import rootfs

    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not cc:
        pytest.skip("no C compiler")
    r = subprocess.run([cc, "-O2", "-Wall", "-Wextra", "-Werror", "-std=c11", "-D_GNU_SOURCE",
                        "-o", str(tmp_path / "h"), str(rootfs.HELPER_SOURCE)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    usage = subprocess.run([str(tmp_path / "h"), "-s", "1g,uid=0", "--", "true"],
                           capture_output=True, text=True)
    assert usage.returncode == 126 and "JOBGROUP_SHM_SIZE" in usage.stderr
