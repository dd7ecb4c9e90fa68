"""Every node its own host, completely (issue 15), end to end with real namespaces, overlays,
tmpfs and nftables: its own root file system view, /tmp, /dev/shm and $HOME; a way out (DNS
and NAT) unless launched with --no-egress; nothing left on the machine however the group ends.

Outside traffic: only to the package index this machine's own configuration names (pip's
index URLs, else apt's sources), as the house rules allow; everything else stays between the
namespaces the tests create.
"""

from __future__ import annotations

import configparser
import glob
import json
import os
import subprocess
import sys
import textwrap
import urllib.parse
from pathlib import Path

import pytest
from conftest import wait_for
from test_isolation import SERVER, Host, _block

from jobgroup.backends.local import egress, network, rootfs

root = pytest.mark.root
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: overlays, network "
                                "namespaces and nftables are root-only (level `namespaces`)")


@pytest.fixture
def host(jenv):
    h = Host(jenv.home)
    yield h
    if (jenv.home / "state.db").exists():
        jenv.jg("cancel", "--all", timeout=30)
    h.assert_clean()


def _events(jenv, job: int) -> list[dict]:
    return json.loads(jenv.jg("events", str(job), "--json", check=True).stdout)


def _disk(jenv, job: int) -> dict[str, str]:
    """node -> the message of its `disk` event (what it wrote in its own root)."""
    return {e["message"].split()[0]: e["message"] for e in _events(jenv, job)
            if e["kind"] == "disk"}


# --- the node's own files ------------------------------------------------------------------------

@root
@needs_root
def test_two_ranks_each_keep_their_own_tmp_shm_and_home_and_nothing_lands_on_the_host(
        jenv, host):
    """The issue's measurement: a web server on each of 2 ranks serving /tmp/index.html
    answered "rank 1" twice. Now each rank serves its own; /dev/shm and ~ writes are per
    rank too; the host's /tmp, /var/tmp, /dev/shm and home get nothing; an idle node wrote
    nothing; what each node wrote is in the job's events and kept with the job's files."""
    tag = f"jg-nh-{os.getpid()}"
    home = Path(os.path.expanduser("~"))
    script = textwrap.dedent(f'''\
        mkdir -p /tmp/{tag}
        echo "rank $SKYPILOT_NODE_RANK" > /tmp/{tag}/index.html
        echo "shm $SKYPILOT_NODE_RANK" > /dev/shm/{tag}
        echo "var $SKYPILOT_NODE_RANK" > /var/tmp/{tag}
        echo "export FROM_RANK=$SKYPILOT_NODE_RANK" >> ~/.{tag}rc
        echo WROTE
        for i in $(seq 200); do [ -e peer-wrote ] && break; sleep 0.05; done
        echo "READ $(cat /dev/shm/{tag}) $(cat /var/tmp/{tag}) $(grep -c FROM_RANK ~/.{tag}rc)"
        echo "SHMFS $(stat -f -c %T /dev/shm) $(stat -c %a /dev/shm)"
        exec python3 -m http.server 28200 --bind 0.0.0.0 --directory /tmp/{tag}
        ''')
    job = jenv.launch_d(f"""
        name: own
        execution: parallel
        primary_tasks: [client]
        termination_delay: 0s
        ---
        name: web
        num_nodes: 2
        run: |
          {_block(script)}
        ---
        name: idle
        run: "true"
        ---
        name: client
        run: |
          for r in 0 1; do
            for i in $(seq 200); do
              got=$(python3 -c "import urllib.request as u; print(u.urlopen('http://web-$r.own:28200/index.html', timeout=2).read().decode().strip())" 2>/dev/null) && break
              sleep 0.1
            done
            echo "GOT web-$r $got"
          done
        """)
    wait_for(lambda: all("WROTE" in jenv.log(job, "web", r) for r in (0, 1))
             or jenv.job(job)["status"] not in ("PENDING", "STARTING", "RUNNING"), timeout=60)
    for r in (0, 1):  # both have written before either reads back
        (jenv.home / "jobs" / str(job) / "work" / f"web-{r}" / "peer-wrote").write_text("")
    final = jenv.wait(job)
    assert final["status"] == "SUCCEEDED", final
    client = jenv.log(job, "client").splitlines()
    assert "GOT web-0 rank 0" in client and "GOT web-1 rank 1" in client, client
    for r in (0, 1):
        log = jenv.log(job, "web", r)
        assert f"READ shm {r} var {r} 1" in log, log
        assert "SHMFS tmpfs 1777" in log, log
    # Nothing on the host.
    assert not os.path.exists(f"/tmp/{tag}") and not os.path.exists(f"/var/tmp/{tag}")
    assert not os.path.exists(f"/dev/shm/{tag}") and not (home / f".{tag}rc").exists()
    # Each node's writes are kept with the job's files, and said in its events.
    roots = rootfs.roots_dir(jenv.home, job)
    for r in (0, 1):
        assert (roots / f"web-{r}" / "upper" / "tmp" / tag / "index.html").read_text() \
            == f"rank {r}\n"
    disk = _disk(jenv, job)
    assert disk["idle-0"].startswith("idle-0 wrote 0 B (0 files)"), disk
    assert "web-0 wrote " in disk["web-0"] and " 0 files" not in disk["web-0"], disk
    host.assert_clean()


def _fresh_wheel() -> Path | None:
    """A small pure-Python wheel on this machine's disk that the launching Python lacks."""
    import importlib.metadata as md

    for path in sorted(glob.glob("/opt/pypi/files/*-none-any.whl") +
                       glob.glob("/opt/wheels/*-none-any.whl"), key=os.path.getsize):
        name = os.path.basename(path).split("-")[0]
        try:
            md.version(name)
        except md.PackageNotFoundError:
            return Path(path)
    return None


def _site_listing() -> set[str]:
    import site

    return {f"{d}/{n}" for d in site.getsitepackages() for n in os.listdir(d)}


@root
@needs_root
def test_pip_install_in_setup_of_two_nodes_leaves_the_launching_python_untouched(jenv, host):
    wheel = _fresh_wheel()
    if wheel is None:
        pytest.skip("no pure-Python wheel on this machine's disk that the venv lacks")
    name = wheel.name.split("-")[0]
    before = _site_listing()
    job = jenv.launch_d(f"""
        name: pips
        num_nodes: 2
        setup: |
          {sys.executable} -m pip install --no-index --no-deps -q {wheel}
        run: |
          {sys.executable} -c "import importlib.metadata as m; print('HAVE', m.version('{name}'))"
        """)
    final = jenv.wait(job, timeout=120)
    assert final["status"] == "SUCCEEDED", (final, jenv.log(job, "pips", 0))
    for r in (0, 1):
        assert "HAVE " in jenv.log(job, "pips", r), jenv.log(job, "pips", r)
    assert _site_listing() == before
    probe = subprocess.run([sys.executable, "-c", f"import importlib.metadata as m; "
                            f"m.version('{name}')"], capture_output=True)
    assert probe.returncode != 0  # the launching Python still lacks it
    host.assert_clean()


def _cached_deb() -> Path | None:
    """A .deb in apt's cache with no dependencies whose package is not installed here."""
    for path in sorted(glob.glob("/var/cache/apt/archives/*.deb"), key=os.path.getsize):
        fields = subprocess.run(["dpkg-deb", "-f", path, "Package", "Depends", "Pre-Depends"],
                                capture_output=True, text=True)
        if fields.returncode != 0 or "Depends" in fields.stdout:
            continue
        pkg = fields.stdout.split(":", 1)[1].strip()
        if subprocess.run(["dpkg", "-s", pkg], capture_output=True).returncode != 0:
            return Path(path)
    return None


@root
@needs_root
def test_apt_get_install_in_setup_stays_in_the_node(jenv, host):
    deb = _cached_deb()
    if deb is None or not os.path.exists("/usr/bin/apt-get"):
        pytest.skip("no dependency-free .deb in apt's cache that is not installed here")
    pkg = subprocess.run(["dpkg-deb", "-f", str(deb), "Package"], capture_output=True,
                         text=True).stdout.strip()
    status = Path("/var/lib/dpkg/status").read_bytes()
    job = jenv.launch_d(f"""
        name: apt
        setup: |
          DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-download {deb} >/dev/null
        run: dpkg -s {pkg} | grep -q "install ok installed" && echo INSTALLED
        """)
    final = jenv.wait(job, timeout=120)
    assert final["status"] == "SUCCEEDED", (final, jenv.log(job, "apt"))
    assert "INSTALLED" in jenv.log(job, "apt")
    assert Path("/var/lib/dpkg/status").read_bytes() == status
    assert subprocess.run(["dpkg", "-s", pkg], capture_output=True).returncode != 0
    host.assert_clean()


@root
@needs_root
def test_shared_paths_stay_shared_and_the_shm_size_is_set(jenv, host):
    """volumes, the workdir and the state directory are binds over the private root: what a
    node writes there lands on the host — except in the launching venv when it lies in the
    workdir (SkyPilot would not ship it): that stays the node's own. JOBGROUP_SHM_SIZE sizes
    /dev/shm, a memory limit halves into it; a probe command runs in the node's own files."""
    code = jenv.tmp / "proj"
    (code / "venv" / "lib").mkdir(parents=True)
    (code / "venv" / "lib" / "orig").write_text("host\n")
    jenv.env["VIRTUAL_ENV"] = str(code / "venv")
    job = jenv.launch_d("""
        name: shared
        execution: parallel
        ---
        name: a
        workdir: ./proj
        volumes: {/ckpt: nh-vol}
        envs: {JOBGROUP_SHM_SIZE: 16m}
        readiness_probe:
          command: test -f /tmp/ready
          interval: 0.2s
        run: |
          echo out > result.txt
          echo node > "$VIRTUAL_ENV/lib/orig"; touch "$VIRTUAL_ENV/lib/added"
          echo "VENV $(cat "$VIRTUAL_ENV/lib/orig")"
          echo ckpt > /ckpt/step-1
          df -k /dev/shm | awk 'NR==2{print "SHMKB", $2}'
          touch /tmp/ready
          sleep 2
        ---
        name: b
        resources: {memory: 0.5}
        depends_on: {a: ready}
        run: df -k /dev/shm | awk 'NR==2{print "SHMKB", $2}'
        """)
    final = jenv.wait(job)
    assert final["status"] == "SUCCEEDED", (final, jenv.log(job, "a"), jenv.log(job, "b"))
    assert (code / "result.txt").read_text() == "out\n"
    assert "VENV node" in jenv.log(job, "a")
    assert sorted(os.listdir(code / "venv" / "lib")) == ["orig"]
    assert (code / "venv" / "lib" / "orig").read_text() == "host\n"
    assert (jenv.home / "volumes" / "nh-vol" / "step-1").read_text() == "ckpt\n"
    assert "SHMKB 16384" in jenv.log(job, "a")
    assert "SHMKB 262144" in jenv.log(job, "b")  # half of 0.5 GB
    assert not os.path.exists("/tmp/ready") and not os.path.exists("/ckpt")
    host.assert_clean()


@root
@needs_root
def test_a_command_probe_runs_in_the_node_s_own_namespaces_from_its_first_try(jenv, host):
    """A command probe joins the node's running namespaces each time it runs, from the first
    try on (one asked before the node had made them used to mount a second overlay on the
    node's upper layer, which made the node's own start fail now and then with ENOENT)."""
    out = jenv.tmp / "ns"  # the workdir: the nodes' /tmp is their own
    out.mkdir()
    job = jenv.launch_d(f"""
        name: probens
        execution: parallel
        ---
        name: a
        workdir: {out}
        readiness_probe:
          command: readlink /proc/self/ns/mnt >> {out}/probe; test -f /tmp/ready
          interval: 0.1s
          failure_threshold: 1000
        run: |
          readlink /proc/self/ns/mnt > node
          sleep 1; touch /tmp/ready; sleep 1
        ---
        name: b
        depends_on: {{a: ready}}
        run: echo b ran
        """)
    final = jenv.wait(job)
    assert final["status"] == "SUCCEEDED", (final, jenv.log(job, "a"))
    node = (out / "node").read_text().strip()
    tries = (out / "probe").read_text().split()
    assert len(tries) >= 3 and set(tries) == {node}, (node, tries)
    assert node != os.readlink("/proc/self/ns/mnt")
    host.assert_clean()


# --- a way out ----------------------------------------------------------------------------------

def _package_index() -> tuple[str, int] | None:
    """(host, port) of the package index this machine's configuration names: pip's index
    URLs over http(s), else apt's first source."""
    urls: list[str] = []
    pip = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True,
                         text=True)
    for line in pip.stdout.splitlines():
        key, _, value = line.partition("=")
        if key.endswith(("index-url", "extra-index-url")):
            urls += value.strip().strip("'\"").split()
    for path in ("/etc/pip.conf", "/etc/xdg/pip/pip.conf"):
        cp = configparser.ConfigParser()
        try:
            cp.read(path)
        except configparser.Error:
            continue
        for section in cp.sections():
            for key in ("index-url", "extra-index-url"):
                urls += cp.get(section, key, fallback="").split()
    for path in sorted(glob.glob("/etc/apt/sources.list") +
                       glob.glob("/etc/apt/sources.list.d/*.list") +
                       glob.glob("/etc/apt/sources.list.d/*.sources")):
        for line in Path(path).read_text().splitlines():
            words = line.split("#", 1)[0].split()
            if words[:1] == ["URIs:"]:
                urls += words[1:]
            elif words[:1] in (["deb"], ["deb-src"]):
                urls += [w for w in words[1:] if "://" in w][:1]
    for url in urls:
        u = urllib.parse.urlsplit(url)
        if u.scheme in ("http", "https") and u.hostname:
            return u.hostname, u.port or (443 if u.scheme == "https" else 80)
    return None


def _others_ruleset() -> str:
    """The host's nftables ruleset without jobgroup's tables (of any session)."""
    p = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True)
    out = []
    for line in sorted(p.stdout.splitlines()):
        fam, name = line.split()[1:3]
        if name.startswith("jg") and len(name) == 10:
            continue
        out.append(subprocess.run(["nft", "list", "table", fam, name], capture_output=True,
                                  text=True).stdout)
    return "\n".join(out)


needs_nft = pytest.mark.skipif(egress.nft() is None, reason="needs nft (Debian nftables, "
                               "installed by scripts/bootstrap)")


@root
@needs_root
@needs_nft
def test_a_node_resolves_and_reaches_the_package_index_and_no_egress_keeps_it_in(jenv, host):
    index = _package_index()
    if index is None:
        pytest.skip("this machine's pip/apt configuration names no http(s) package index")
    name, port = index
    uplinks = egress.uplinks(egress.resolv_for_nodes()[1])
    forwarding_before = {i: Path(f"/proc/sys/net/ipv4/conf/{i}/forwarding").read_text()
                         for i in uplinks}
    others_running = egress.tables()  # other sessions' groups may hold forwarding on
    others = _others_ruleset()
    probe = textwrap.dedent(f'''\
        echo "RESOLVED $(getent hosts {name} | awk 'NR==1{{print $1}}')"
        timeout 10 python3 -c "import socket; socket.create_connection(('{name}', {port}), timeout=5); print('CONNECTED')" 2>/dev/null || echo NOT-CONNECTED
        echo "PEER $(getent hosts peer-0.$SKYPILOT_JOBGROUP_NAME | awk '{{print $1}}')"
        for i in $(seq 200); do [ -e go ] && break; sleep 0.05; done
        ''')
    spec = f"""
        name: @NAME@
        execution: parallel
        ---
        name: peer
        run: |
          {_block(SERVER)}0.0.0.0 28300 & echo up; for i in $(seq 200); do [ -e go ] && break; sleep 0.05; done
        ---
        name: probe
        run: |
          {_block(probe)}
        """
    out = jenv.launch_d(spec.replace("@NAME@", "out"))
    sealed = jenv.launch_d(spec.replace("@NAME@", "sealed"), "--no-egress")
    other = jenv.launch_d(spec.replace("@NAME@", "other"))  # with egress, to try the way in
    for job in (out, sealed, other):
        wait_for(lambda j=job: "PEER " in jenv.log(j, "probe"), timeout=60)
    net_out = network.read_record(jenv.home, out)
    net_sealed = network.read_record(jenv.home, sealed)
    assert net_out.egress and not net_sealed.egress
    net_other = network.read_record(jenv.home, other)
    assert egress.tables(network.home_tag(jenv.home)) == sorted(
        egress.table_name(n.netid) for n in (net_out, net_other))
    # While a group with egress runs, forwarding is on for the way out; nothing else changed.
    for i in uplinks:
        assert Path(f"/proc/sys/net/ipv4/conf/{i}/forwarding").read_text().strip() == "1"
    assert _others_ruleset() == others
    # Another group's node cannot open a connection to a node (with egress or without); the
    # host can, as before.
    topo = json.loads((jenv.home / "jobs" / str(out) / "topology.json").read_text())
    peer_addr = next(n["address"] for t in topo["tasks"] if t["name"] == "peer"
                     for n in t["nodes"])
    reach = f"import socket; socket.create_connection(('{peer_addr}', 28300), timeout=3)"
    for net in (net_sealed, net_other):
        tried = subprocess.run(
            ["nsenter", f"--net=/run/netns/{net.netns(1)}", "python3", "-c", reach],
            capture_output=True, text=True, timeout=30)
        assert tried.returncode != 0, net
    assert subprocess.run(["python3", "-c", reach], capture_output=True, timeout=30)\
        .returncode == 0
    for job in (out, sealed, other):
        for node in ("peer-0", "probe-0"):
            (jenv.home / "jobs" / str(job) / "work" / node / "go").write_text("")
    for job in (out, sealed, other):
        assert jenv.wait(job)["status"] == "SUCCEEDED"
    log_out, log_sealed = jenv.log(out, "probe"), jenv.log(sealed, "probe")
    assert "CONNECTED" in log_out.splitlines(), log_out
    resolved = next(l for l in log_out.splitlines() if l.startswith("RESOLVED"))
    assert resolved.strip() != "RESOLVED", log_out
    assert f"PEER {peer_addr}" in log_out  # the group's own names first
    assert "RESOLVED " in log_sealed and "NOT-CONNECTED" in log_sealed, log_sealed
    assert next(l for l in log_sealed.splitlines() if l.startswith("RESOLVED")).strip() \
        == "RESOLVED"  # no DNS server is reachable
    host.assert_clean()
    assert not egress.tables(network.home_tag(jenv.home))
    assert _others_ruleset() == others
    if not egress.tables():  # no group of any session needs forwarding now
        assert not egress.forwarding_left()  # all jobgroup turned on was turned off again
        if not others_running:
            for i, value in forwarding_before.items():
                assert Path(f"/proc/sys/net/ipv4/conf/{i}/forwarding").read_text() == value


# --- leftovers ----------------------------------------------------------------------------------

@root
@needs_root
@needs_nft
def test_doctor_finds_a_table_forwarding_and_a_node_root_held_by_an_escaped_process(jenv, host):
    running = jenv.launch_d("name: alive\nrun: sleep 1000\n")
    wait_for(lambda: jenv.job(running)["status"] == "RUNNING", timeout=60)
    assert jenv.jg("doctor", check=True).stdout.strip() == "Nothing left behind."
    crashed = 998
    netid = network.net_id(jenv.home, crashed)
    egress.enable(netid, "10.213.250.0/30", network.bridge_name(netid), [])
    node = rootfs.node_root(jenv.home, crashed, "gone", 0)
    escaped = subprocess.Popen(
        ["env", "-i", rootfs.helper_path(), "-h", "gone-0", "-r", str(node), "-s", "1m",
         "-b", str(jenv.home), str(jenv.home), "--", "sleep", "1000"],
        start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: str(node) in rootfs.node_namespaces(jenv.home), timeout=10)
        found = json.loads(jenv.jg("doctor", "--json").stdout)["found"]
        assert found["tables"] == [egress.table_name(netid)]
        assert found["overlays"] == [f"{node} pids {escaped.pid}"]
        assert not found["processes"]  # no marker: only its mount namespace tells
        text = jenv.jg("doctor").stdout
        assert "firewall tables: " in text and "node roots still mounted: " in text
        fixed = jenv.jg("doctor", "--fix")
        assert fixed.returncode == 0 and "Removed." in fixed.stdout, fixed
        assert escaped.wait(timeout=10) != 0
        assert not egress.tables(netid) and str(node) not in rootfs.node_namespaces(jenv.home)
        assert jenv.job(running)["status"] == "RUNNING"  # the live group untouched
        assert network.read_record(jenv.home, running).egress
        assert egress.tables(network.net_id(jenv.home, running))
    finally:
        if escaped.poll() is None:
            escaped.kill()
            escaped.wait()
        egress.disable(netid)
    # Forwarding left on with no table to need it is found too (played: a record, no table).
    jenv.jg("cancel", str(running), check=True)
    jenv.wait(running)
    if not egress.tables():  # no other session's group holds forwarding on
        record = egress._record_path()
        record.write_text(json.dumps({"lo": "0"}))  # lo's forwarding is never 1: harmless
        try:
            found = json.loads(jenv.jg("doctor", "--json").stdout)["found"]
            assert found["forwarding"] == ["lo"]
            assert jenv.jg("doctor", "--fix").returncode == 0
            assert not record.exists()
        finally:
            record.unlink(missing_ok=True)


def test_without_root_each_node_still_has_its_own_tmp_and_shm(jenv, host):
    """Level `user` (no root: no overlay, no network namespace): /tmp and /var/tmp are
    per-node directories of the job and /dev/shm a tmpfs of the node's own; the rest of the
    root is the host's (see README)."""
    import shutil

    if os.geteuid() == 0:
        jenv.force_level("user")
    if shutil.which("bwrap") is None:
        pytest.skip("needs bubblewrap")
    tag = f"jg-nh-user-{os.getpid()}"
    job = jenv.launch_d(f"""
        name: userlevel
        num_nodes: 2
        run: |
          echo "rank $SKYPILOT_NODE_RANK" > /tmp/{tag}; echo "s$SKYPILOT_NODE_RANK" > /dev/shm/{tag}
          echo "v$SKYPILOT_NODE_RANK" > /var/tmp/{tag}
          sleep 0.5
          echo "READ $(cat /tmp/{tag}) $(cat /dev/shm/{tag}) $(cat /var/tmp/{tag})"
        """)
    final = jenv.wait(job)
    if final.get("isolation") != "user":
        pytest.skip(f"this machine gives level {final.get('isolation')}")
    assert final["status"] == "SUCCEEDED", final
    for r in (0, 1):
        assert f"READ rank {r} s{r} v{r}" in jenv.log(job, "userlevel", r)
    assert not os.path.exists(f"/tmp/{tag}") and not os.path.exists(f"/dev/shm/{tag}")
    assert not os.path.exists(f"/var/tmp/{tag}")
    host.assert_clean()


def test_a_bad_shm_size_is_refused_at_launch(jenv):
    jenv.spec("name: shm\nrun: df /dev/shm\n", "shm.yaml")
    for extra in (["--env", "JOBGROUP_SHM_SIZE=lots"], ["--env", "JOBGROUP_SHM_SIZE=8g,uid=0"]):
        p = jenv.jg("launch", "shm.yaml", "-d", *extra)
        assert p.returncode == 2, p
        assert "JOBGROUP_SHM_SIZE" in p.stderr and "Traceback" not in p.stderr
