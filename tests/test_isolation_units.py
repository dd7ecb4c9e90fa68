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
    assert "--tmpfs /root" in joined and "--bind /root/.cache /root/.cache" in joined
    assert "--bind /root /root" not in joined
    assert "--ro-bind /src/code /root/code" in joined
    assert "--bind /state/volumes/ck /checkpoints" in joined
    assert "--bind /state/volumes/x /tmp" in joined  # an existing path is simply covered
    assert joined.index("--tmpfs /root") < joined.index("--ro-bind /src/code /root/code")
    assert "--bind /state/hosts /etc/hosts" in joined
    assert args[args.index("--hostname") + 1] == "t-0"
    assert args[args.index("--chdir") + 1] == "/work"
