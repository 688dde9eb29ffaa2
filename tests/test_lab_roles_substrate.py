"""The roles lab's substrate for real: a Debian 13 root from debootstrap, one systemd-nspawn
container per registered node, their networks in namespaces made for the test.

One substrate is brought up for the module and shared by its tests; the last test takes it down
and checks nothing is left. The root is cached (~/.cache/provisioner/lab-roles, or
$PROVISIONER_LAB_ROLES_CACHE), so only the first run on a machine pays for the build.
$PROVISIONER_LAB_ROLES_RECIPE=base swaps in the small root when working on the substrate itself.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from provisioner.config import load_site
from provisioner.lab.roles import containers, netns, rootfs
from provisioner.lab.roles.recipe import RECIPES
from provisioner.lab.roles.substrate import Substrate


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network namespaces, overlay mounts, systemd-nspawn)"
    for tool in ("debootstrap", "systemd-nspawn", "nsenter", "ip"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (scripts/bootstrap installs it)"
    if "overlay" not in Path("/proc/filesystems").read_text():
        return "the kernel has no overlayfs"
    return None


needs_substrate = pytest.mark.skipif(_missing() is not None, reason=_missing() or "")
RECIPE = os.environ.get("PROVISIONER_LAB_ROLES_RECIPE", "full")


# -- the cache, without building anything ------------------------------------------------------

def test_cache_key_follows_what_the_root_contains():
    full, base = RECIPES["full"], RECIPES["base"]
    assert rootfs.cache_key(full) == rootfs.cache_key(full)
    assert rootfs.cache_key(full) != rootfs.cache_key(base)
    from dataclasses import replace
    assert rootfs.cache_key(replace(full, preseed=full.preseed + "x x/y boolean true\n")) != rootfs.cache_key(full)
    assert rootfs.cache_key(replace(full, roles=full.roles + ("vim",))) != rootfs.cache_key(full)
    # the order packages are listed in is not what the root contains
    assert rootfs.cache_key(replace(full, roles=tuple(reversed(full.roles)))) == rootfs.cache_key(full)


def test_an_interrupted_build_is_never_used(tmp_path):
    recipe = RECIPES["base"]
    (tmp_path / f".build-{rootfs.cache_key(recipe)}-abc" / "root" / "etc").mkdir(parents=True)
    assert rootfs.cached_root(recipe, tmp_path) is None
    (tmp_path / rootfs.cache_key(recipe) / "root").mkdir(parents=True)
    assert rootfs.cached_root(recipe, tmp_path) == tmp_path / rootfs.cache_key(recipe) / "root"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to mount")
def test_a_failed_build_is_removed_without_walking_into_its_mounts(tmp_path):
    build = tmp_path / ".build-x-1"
    (build / "root" / "proc").mkdir(parents=True)
    subprocess.run(["mount", "-t", "proc", "proc", str(build / "root" / "proc")], check=True)
    rootfs._discard(build)
    assert not build.exists()
    assert str(build) not in Path("/proc/mounts").read_text()


def test_the_mirror_is_the_hosts(tmp_path):
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.example/debian/\nSuites: bookworm\n\n"
        "Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\n")
    (tmp_path / "sources.list.d" / "other.list").write_text("deb https://apt.example/x stable main\n")
    assert rootfs.host_mirrors(tmp_path) == ("http://mirror.example/debian", "http://mirror.example/debian-security")
    assert rootfs.host_mirrors(tmp_path / "none") == (rootfs.DEFAULT_MIRROR, None)


def test_nics_follow_the_registry_and_the_kickstarts_routes():
    site = load_site()
    public = netns.public_addresses()
    plans = {s.hostname: netns.plan_node(s, site.network, site.gateway, public) for s in site.nodes}
    gw = plans["compute1"]
    assert [(n.name, n.bridge, n.address) for n in gw.nics] == [
        ("nic1", netns.INSTALL_BRIDGE, "192.168.0.1/24"), ("nic0", netns.PUBLIC_BRIDGE, "203.0.113.2/24")]
    assert gw.default_via == netns.UPSTREAM
    assert plans["controller"].default_via == site.gateway
    assert [(n.name, n.mac) for n in plans["controller"].nics] == [("nic0", "52:54:00:0c:00:05")]


# -- the substrate -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def registry_nodes(tmp_path_factory):
    from provisioner.app import open_context
    ctx = open_context(tmp_path_factory.mktemp("state"), load_site())
    try:
        yield ctx.registry.list()
    finally:
        ctx.registry.close()


@pytest.fixture(scope="module")
def substrate(registry_nodes):
    if _missing():
        pytest.skip(_missing())
    cache = os.environ.get("PROVISIONER_LAB_ROLES_CACHE") or rootfs.default_cache_dir()
    work = Path(tempfile.mkdtemp(prefix="pvr-test-", dir="/var/tmp"))
    sub = Substrate.from_site(load_site(), registry_nodes, cache, work, recipe=RECIPE,
                              progress=lambda line: print(f"[substrate] {line}", flush=True))
    try:
        sub.up(boot_timeout=600)
        print(f"[substrate] root {'cached' if sub.timings.root_cached else 'built'} in {sub.timings.root:.1f}s; "
              f"networks {sub.timings.network:.1f}s; {len(registry_nodes)} containers booted in "
              f"{sub.timings.boot:.1f}s", flush=True)
        yield sub
    finally:
        sub.down()
        shutil.rmtree(work, ignore_errors=True)


@needs_substrate
def test_every_node_boots_to_running_or_degraded(substrate, registry_nodes):
    states = substrate.status()
    assert set(states) == {n.hostname for n in registry_nodes}
    report = {}
    for host, state in states.items():
        failed = substrate.failed_units(host)
        report[host] = {"state": state, "failed": {
            unit: substrate.exec(host, ["systemctl", "status", "--no-pager", "-n", "3", unit]).stdout.splitlines()[-3:]
            for unit in failed}}
    print(json.dumps(report, indent=2))
    assert all(r["state"] in ("running", "degraded") for r in report.values()), report


@needs_substrate
def test_each_node_has_its_registry_identity(substrate, registry_nodes):
    for node in registry_nodes:
        spec = node.spec
        assert substrate.exec(spec.hostname, ["hostname"]).stdout.strip() == spec.hostname
        links = json.loads(substrate.exec(spec.hostname, ["ip", "-j", "addr"]).stdout)
        by_name = {link["ifname"]: link for link in links}
        install = by_name[spec.interface]
        assert install["address"] == spec.mac
        assert f"{spec.ip}/24" in [f"{a['local']}/{a['prefixlen']}" for a in install["addr_info"]]
        for nic in spec.nics:
            assert by_name[nic.name]["address"] == nic.mac
            if nic.mode == "dhcp":
                addrs = [ipaddress.IPv4Address(a["local"]) for a in by_name[nic.name]["addr_info"]
                         if a["family"] == "inet"]
                assert addrs and all(a in netns.PUBLIC_CIDR for a in addrs)
    machine_ids = {substrate.exec(n.hostname, ["cat", "/etc/machine-id"]).stdout for n in registry_nodes}
    assert len(machine_ids) == len(registry_nodes)


@needs_substrate
def test_nodes_reach_the_service_address(substrate, registry_nodes):
    port = _free_port()
    server = substrate.lab_popen(["python3", "-m", "http.server", "--bind", "192.168.0.254", str(port)],
                                 cwd=tempfile.gettempdir(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while substrate.lab_run(["ss", "-Htln", f"sport = :{port}"]).stdout.strip() == "":
            assert time.monotonic() < deadline, "the test's HTTP server did not start"
            time.sleep(0.1)
        for node in registry_nodes:
            r = substrate.exec(node.hostname, ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}",
                                               "--max-time", "10", f"http://192.168.0.254:{port}/"])
            assert r.stdout == "200", (node.hostname, r.stderr)
    finally:
        server.kill()
        server.wait()


@needs_substrate
def test_nodes_reach_each_other(substrate, registry_nodes):
    for node in registry_nodes:
        others = [n for n in registry_nodes if n.hostname != node.hostname]
        script = " && ".join(f"ping -q -c1 -W3 {n.spec.ip} >/dev/null" for n in others)
        r = substrate.exec(node.hostname, ["sh", "-c", script + " && ping -q -c1 -W3 " + others[0].hostname])
        assert r.returncode == 0, (node.hostname, r.stdout, r.stderr)


@needs_substrate
def test_the_networks_lead_nowhere_else(substrate):
    # nothing leaves the namespaces: the lab's side has only its bridges and the nodes' veths,
    # and no route beyond the two networks
    lab = netns.LabNetwork(substrate._load_state()["lab_id"], "")
    kinds = {link["ifname"]: link.get("linkinfo", {}).get("info_kind")
             for link in json.loads(substrate.lab_run(["ip", "-d", "-j", "link"]).stdout)}
    assert {k for n, k in kinds.items() if n != "lo"} == {"bridge", "veth"}
    routes = json.loads(substrate.lab_run(["ip", "-j", "route"]).stdout)
    assert all(r["dst"] != "default" for r in routes)
    assert lab.name in netns.namespaces()


@needs_substrate
def test_the_root_is_cached(substrate):
    recipe = RECIPES[RECIPE]
    t = time.monotonic()
    root = rootfs.ensure_root(recipe, Path(substrate.root).parent.parent)
    assert root == substrate.root
    assert time.monotonic() - t < 5
    manifest = rootfs.manifest(root)
    print(f"root {manifest['key']}: {manifest['installed']} packages, built in "
          f"{manifest['seconds']['total']:.0f}s ({json.dumps(manifest['seconds'])}); "
          f"not installable: {manifest['missing'] or 'none'}")
    assert manifest["missing"] == {}, manifest["missing"]
    # the shared root stays as built: the nodes wrote into their overlays only
    assert (root / "etc/machine-id").read_text() == ""
    assert not (root / "usr/sbin/policy-rc.d").exists()


@needs_substrate
def test_down_leaves_nothing(substrate):
    state = substrate._load_state()
    pids = [p for n in state["nodes"].values() for p in (n.get("nspawn"), n.get("leader")) if p]
    t = time.monotonic()
    substrate.down()
    print(f"down in {time.monotonic() - t:.1f}s")
    assert substrate.namespaces() == []
    assert not [ns for ns in netns.namespaces() if ns.startswith(f"pvr-{state['lab_id']}")]
    assert containers.mounts_under(substrate.work_dir) == []
    assert str(state["root"]) not in Path("/proc/mounts").read_text()
    assert not any(containers.alive(p) for p in pids)
    assert not (substrate.work_dir / "nodes").exists()
    assert substrate.status() == {}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_cli_status_and_down_with_nothing_up(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from provisioner.cli import main
    monkeypatch.setenv("PROVISIONER_STATE_DIR", str(tmp_path / "state"))
    runner = CliRunner()
    r = runner.invoke(main, ["lab", "roles", "status", "--work-dir", str(tmp_path / "lab")])
    assert r.exit_code == 0 and "no roles lab is up" in r.output
    r = runner.invoke(main, ["lab", "roles", "down", "--work-dir", str(tmp_path / "lab")])
    assert r.exit_code == 0 and "nothing to take down" in r.output
    r = runner.invoke(main, ["lab", "roles", "up", "--help"])
    assert "run the first-boot runner in every one" in " ".join(r.output.split())
