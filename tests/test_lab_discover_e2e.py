"""The lab's emulated BMCs and `lab up --discover`, end to end.

libvirtd in a network namespace this test makes, the service beside it with discovery on and no
nodes of its own, and three QEMU (TCG) VMs the registry has never heard of: the report's 80 GB
controller and two 250 GB compute hosts (sparse qcow2). `provisioner lab up --discover` defines
them and starts the lab's BMCs (sushy-tools' Redfish emulator and VirtualBMC, on the namespace's
loopback); the VMs PXE-boot the inspection ramdisk, which reports their real virtual hardware and
powers them off; the lab enrolls each by MAC with the names, addresses and roles of a site file,
and its BMC (two Redfish, one IPMI), and power-cycles each through it into the rehearsal
installer. Then `rebuild --power-cycle` on one node reinstalls exactly that one.

Wall time: 493 s measured on 2 shared cores under TCG (lab up --discover returned at 114 s, all
three installed and booted from disk at 240 s, the rebuilt one again at 470 s).
"""

import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from importlib import resources
from pathlib import Path

import pytest
import yaml

from tests.netns import can_make_namespaces, namespaces
from tests.labvirt import libvirtd_to_ourselves, start_libvirtd

MARKER = "PROVISIONER-DISK-BOOT"
COMPUTE_DISK, CONTROLLER_DISK = 250_059_350_016, 80_026_361_856      # the report's drives
MACHINES = {"compute2": ("52:54:00:0c:00:02", COMPUTE_DISK), "compute3": ("52:54:00:0c:00:03", COMPUTE_DISK),
            "controller": ("52:54:00:0c:00:05", CONTROLLER_DISK)}
IPMI_NODE = "compute3"
REBUILT = "compute2"
EMULATORS = {"sushy-emulator", "vbmcd"}


def _free_port(kind=socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _procs(names):
    out = subprocess.run(["ps", "-eo", "pid=,stat=,comm="], capture_output=True, text=True).stdout
    return {int(line.split()[0]) for line in out.splitlines()
            if line.split()[1][0] != "Z" and line.split()[-1] in names}


# -- the BMCs on their own, against libvirt's test driver (seconds, no root) ------------------------

@pytest.mark.skipif(not (shutil.which("sushy-emulator") and shutil.which("vbmcd")),
                    reason="needs sushy-tools and virtualbmc")
def test_lab_bmcs_answer_redfish_and_ipmi_on_loopback_and_stop_leaves_nothing(tmp_path):
    import requests

    from provisioner.lab.bmc import BmcError, LabBmcs, Machine
    from provisioner.power import control
    from provisioner.power.bmc import Bmc
    from tests.test_power import FAST, SYSTEM, node_with
    state = tmp_path / "state"
    state.mkdir()
    with pytest.raises(BmcError, match="loopback address only"):
        LabBmcs(tmp_path, state, "test:///default", address="192.168.0.254")
    bmcs = LabBmcs(tmp_path, state, "test:///default", redfish_port=_free_port(),
                   ipmi_base_port=_free_port(socket.SOCK_DGRAM), control_port=_free_port())
    before = _procs(EMULATORS)
    try:
        lines = []
        endpoints = bmcs.start([Machine("test", "test", SYSTEM)], progress=lines.append)
        user, password = bmcs.credentials()
        assert bmcs.credentials() == (user, password)      # one per lab, kept
        ep = endpoints["test"]
        assert ep.redfish == f"redfish://127.0.0.1:{bmcs.redfish_port}/redfish/v1/Systems/{SYSTEM}"
        assert ep.ipmi == f"ipmi://127.0.0.1:{bmcs.ipmi_base_port}"
        base = f"http://127.0.0.1:{bmcs.redfish_port}/redfish/v1/Systems"
        # only the lab's machines: the test driver's other domains are not handed out
        assert requests.get(base, auth=(user, password), timeout=10).json()["Members"] == [
            {"@odata.id": f"/redfish/v1/Systems/{SYSTEM}"}]
        assert requests.get(base, auth=(user, "wrong"), timeout=10).status_code == 401
        for url in (ep.redfish, ep.ipmi):
            assert control.act(node_with(Bmc(url, user, password)), "status", settings=FAST) == "on"
        # the password is sealed at rest, in no command line and in no file but vbmcd's own
        # configuration, which only root reads
        d = tmp_path / "bmc"
        assert stat.S_IMODE(d.stat().st_mode) == 0o700
        assert password not in (d / "password.sealed").read_text()
        holders = [p for p in d.rglob("*") if p.is_file() and password.encode() in p.read_bytes()]
        assert holders == [d / "vbmc" / "domains" / "test" / "config"]
        assert stat.S_IMODE(holders[0].stat().st_mode) == 0o600
        ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
        assert password not in ps and password not in "\n".join(lines)
        assert len(_procs(EMULATORS) - before) >= 2
    finally:
        bmcs.stop()
    time.sleep(0.5)
    assert _procs(EMULATORS) <= before
    assert not (tmp_path / "bmc").exists()


def test_discovery_network_lends_a_pool_and_reserves_after_enrollment(tmp_path, site, registry):
    libvirt = pytest.importorskip("libvirt")
    from provisioner.lab.vms import INSTALL_NET, Lab, LabSettings
    conn = libvirt.open("test:///default")
    lab = Lab(conn, site, LabSettings(tmp_path / "lab"))
    nodes = registry.list()[:2]
    try:
        lab.up(nodes, start=False, reserve=False, pool=("192.168.0.222", "192.168.0.253"))
        ip = ET.fromstring(conn.networkLookupByName(INSTALL_NET).XMLDesc()).find("ip/dhcp")
        assert ip.findall("host") == []
        assert (ip.find("range").get("start"), ip.find("range").get("end")) == ("192.168.0.222", "192.168.0.253")
        assert [m.hostname for m in lab.machines(nodes)] == [n.hostname for n in nodes]
        lab.reserve(nodes)
        lab.reserve(nodes)      # once each
        ip = ET.fromstring(conn.networkLookupByName(INSTALL_NET).XMLDesc()).find("ip/dhcp")
        assert sorted((h.get("mac"), h.get("ip")) for h in ip.findall("host")) == sorted(
            (n.mac, n.spec.ip) for n in nodes)
    finally:
        lab.down()
        conn.close()


# -- end to end ------------------------------------------------------------------------------------

needs_vms = pytest.mark.skipif(
    not (can_make_namespaces() and shutil.which("libvirtd") and shutil.which("virtlogd")
         and shutil.which("qemu-system-x86_64") and shutil.which("lvm") and shutil.which("mkfs.xfs")
         and shutil.which("sushy-emulator") and shutil.which("vbmcd")
         and os.path.exists("/usr/lib/PXELINUX/lpxelinux.0")),
    reason="needs root, libvirt-daemon-system, qemu, lvm2, xfsprogs, pxelinux, sushy-tools, virtualbmc")


def _sites(tmp_path: Path) -> tuple[Path, Path]:
    """The service's site (discovery on, no nodes) and the machines' (three of the testbed's)."""
    data = yaml.safe_load(resources.files("provisioner").joinpath("site.yaml").read_text())
    machines = dict(data, nodes=[n for n in data["nodes"] if n["hostname"] in MACHINES])
    service = dict(data, nodes=[], discovery={"enabled": True})
    (tmp_path / "service.yaml").write_text(yaml.safe_dump(service))
    (tmp_path / "machines.yaml").write_text(yaml.safe_dump(machines))
    return tmp_path / "service.yaml", tmp_path / "machines.yaml"


def cli(state, site, *args, ns=None, **kw):
    cmd = [sys.executable, "-m", "provisioner", "--state-dir", str(state), "--site", str(site), *args]
    if ns is not None:
        cmd = ["ip", "netns", "exec", ns.name, *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


@needs_vms
def test_unknown_vms_are_discovered_enrolled_installed_through_their_bmcs_and_one_rebuilt(tmp_path):
    state = tmp_path / "state"
    service_site, machines = _sites(tmp_path)
    work = Path(tempfile.mkdtemp(prefix="pv-lab-disc-", dir="/var/tmp"))   # qemu's user must reach it
    work.chmod(0o755)
    imported = cli(state, service_site, "bootfiles", "import")
    assert imported.returncode == 0, imported.stderr
    with libvirtd_to_ourselves():
        _discover_install_rebuild(tmp_path, state, service_site, machines, work)


def _discover_install_rebuild(tmp_path, state, site, machines, work):
    before_vms = _procs({"qemu-system-x86", "dnsmasq"})
    before_bmcs = _procs(EMULATORS)
    started = time.monotonic()
    with namespaces(1) as (ns,):
        ns.run("virtlogd", "-d", "-p", str(tmp_path / "virtlogd.pid"))
        start_libvirtd(ns, tmp_path)
        serve_log = open(tmp_path / "serve.log", "w")
        service = ns.popen([sys.executable, "-m", "provisioner", "--state-dir", str(state), "--site", str(site),
                            "serve", "--http", "0.0.0.0:8080", "--boot", "0.0.0.0:8081", "--tftp", "0.0.0.0:69"],
                           stdout=serve_log, stderr=subprocess.STDOUT)
        down = None
        up_log = open(tmp_path / "up.log", "w")
        up = None
        try:
            reader = f"Authorization: Bearer {cli(state, site, 'token', '--read-only').stdout.strip()}"

            def api(path):
                r = ns.run("curl", "-sf", "-H", reader, f"http://127.0.0.1:8080/api/v1{path}", check=False)
                return json.loads(r.stdout) if r.returncode == 0 else None

            def nodes():
                return {n["mac"]: n for n in (api("/nodes") or {"nodes": []})["nodes"]}

            def console(h):
                path = work / "consoles" / f"{h}.log"
                return path.read_text(errors="replace") if path.exists() else ""

            assert not set(nodes()) & {mac for mac, _ in MACHINES.values()}    # unknown to the service
            up = ns.popen([sys.executable, "-m", "provisioner", "--state-dir", str(state), "--site", str(site),
                           "lab", "up", "--discover", "--machines", str(machines), "--ipmi-node", IPMI_NODE,
                           "--uri", "qemu:///system", "--work-dir", str(work), "--no-watch"],
                          stdout=up_log, stderr=subprocess.STDOUT)
            # while the lab waits for them: unknown machines appear as discovered, with their hardware
            seen = {}
            deadline = time.monotonic() + 900
            while up.poll() is None and time.monotonic() < deadline:
                for mac, n in nodes().items():
                    if n["state"] == "discovered":
                        seen[mac] = n
                time.sleep(1)
            if up.poll() is None:
                up.kill()
            up.wait()
            up_log.close()
            out = (tmp_path / "up.log").read_text()
            assert up.returncode == 0, out + "\n--- service ---\n" + (tmp_path / "serve.log").read_text()[-3000:]
            print(f"lab up --discover returned after {time.monotonic() - started:.0f} s")
            assert seen, "no machine was ever listed as discovered"
            for mac, n in seen.items():
                assert n["hostname"] is None and n["inventory"]["boot_mac"] == mac
            for h, (mac, disk) in MACHINES.items():
                assert f"enrolled {h} ({mac}" in out, out

            # the emulators listen on the namespace's loopback and nowhere else
            listening = ns.run("ss", "-Hlntu").stdout
            bound = [line.split()[4] for line in listening.splitlines()
                     if line.split()[4].rsplit(":", 1)[1] in {"8000", "6230", "6231", "6232"}]
            assert sorted(bound) == sorted(["127.0.0.1:8000", "127.0.0.1:6230", "127.0.0.1:6231", "127.0.0.1:6232"]), \
                listening

            deadline = time.monotonic() + 1200
            while time.monotonic() < deadline:
                states = {n["hostname"]: n["state"] for n in nodes().values()}
                if any(s == "failed" for s in states.values()) \
                        or any("rehearsal: FAILED" in console(h) for h in MACHINES):
                    break
                if all(states.get(h) == "installed" and MARKER in console(h).split("rehearsal: installed", 1)[-1]
                       and "rehearsal: installed" in console(h) for h in MACHINES):
                    break
                time.sleep(5)
            print(f"discovered, enrolled and installed: {time.monotonic() - started:.0f} s")
            tails = {h: console(h)[-2500:] for h in MACHINES}
            by_name = {n["hostname"]: n for n in nodes().values()}
            assert {h: by_name[h]["state"] for h in MACHINES} == {h: "installed" for h in MACHINES}, tails

            events = {}
            for h, (mac, disk) in MACHINES.items():
                node = by_name[h]
                assert node["mac"] == mac
                # the inspection ramdisk's report: the VM's disk as its kernel saw it, and its NIC
                assert {d["name"]: d["bytes"] for d in node["inventory"]["disks"]} == {"sda": disk}, node["inventory"]
                assert mac in [nic["mac"] for nic in node["inventory"]["nics"]]
                assert node["disk_bytes"] == disk
                assert node["bmc"]["url"].startswith("ipmi://127.0.0.1:" if h == IPMI_NODE else
                                                     "redfish://127.0.0.1:8000/redfish/v1/Systems/")
                assert node["bmc"]["password_set"] is True
                ev = api(f"/nodes/{mac}/events")["events"]
                events[h] = ev
                types = [e["type"] for e in ev]
                assert types.index("discovered") < types.index("enrolled") < types.index("power"), types
                power = [e["detail"] for e in ev if e["type"] == "power"]
                assert power == [{"action": "cycle", "url": node["bmc"]["url"], "result": "ok", "boot": "pxe once",
                                  "power": "on"}], power
                text = console(h)
                assert text.count("rehearsal: installed") == 1, tails[h]
                # inspected, powered off, then network-booted into the installer by its BMC
                assert text.index("inspect: inspected; powering off") < text.index("rehearsal: installed"), tails[h]
            log = (tmp_path / "serve.log").read_text()
            for h, (mac, _) in MACHINES.items():
                assert f"asked pxelinux.cfg/01-{mac.replace(':', '-')}, answered inspect" in log, log[-3000:]
            # the Redfish resets went to the two Redfish systems, through the emulator
            sushy_log = (work / "bmc" / "sushy.log").read_text(errors="replace")
            for h in MACHINES:
                if h != IPMI_NODE:
                    uuid = by_name[h]["bmc"]["url"].rsplit("/", 1)[1]
                    assert f"/redfish/v1/Systems/{uuid}/Actions/ComputerSystem.Reset" in sushy_log

            # rebuild one, through its BMC: it alone installs again
            rebuilt = cli(state, site, "rebuild", "--power-cycle", REBUILT, ns=ns, timeout=300)
            assert rebuilt.returncode == 0, rebuilt.stderr
            deadline = time.monotonic() + 900
            while time.monotonic() < deadline:
                text = console(REBUILT)
                n = next(n for n in nodes().values() if n["hostname"] == REBUILT)
                if n["state"] == "failed" or "rehearsal: FAILED" in text:
                    break
                if n["state"] == "installed" and text.count("rehearsal: installed") == 2 \
                        and MARKER in text.rsplit("rehearsal: installed", 1)[1]:
                    break
                time.sleep(5)
            print(f"and one rebuilt: {time.monotonic() - started:.0f} s")
            by_name = {n["hostname"]: n for n in nodes().values()}
            assert by_name[REBUILT]["state"] == "installed", console(REBUILT)[-2500:]
            assert console(REBUILT).count("rehearsal: installed") == 2
            after = api(f"/nodes/{MACHINES[REBUILT][0]}/events")["events"]
            new = [e for e in after if e["id"] > events[REBUILT][-1]["id"]]
            types = [e["type"] for e in new]
            assert types[:2] == ["rebuild", "power"] and new[1]["detail"]["boot"] == "pxe once", types
            assert "installed" in types
            for h in MACHINES:
                if h != REBUILT:
                    assert by_name[h]["state"] == "installed"
                    assert api(f"/nodes/{MACHINES[h][0]}/events")["events"] == events[h], h
                    assert console(h).count("rehearsal: installed") == 1, h
            bmc_pids = [int((work / "bmc" / f"{n}.pid").read_text()) for n in ("sushy", "vbmcd")]
        finally:
            if up is not None and up.poll() is None:
                up.kill()
                up.wait()
            for name in ("sushy.log", "vbmcd.log"):       # `lab down` removes them
                if (work / "bmc" / name).exists():
                    shutil.copy(work / "bmc" / name, tmp_path / name)
            down = cli(state, site, "lab", "down", "--uri", "qemu:///system", "--work-dir", str(work), ns=ns,
                       timeout=300)
            service.terminate()
            service.wait(timeout=30)
            serve_log.close()
        assert down.returncode == 0, down.stderr
        assert "stopped sushy-emulator" in down.stdout and "stopped vbmcd" in down.stdout
        for what in ("list", "net-list", "pool-list"):
            out = ns.run("virsh", "-c", "qemu:///system", what, "--all", check=False).stdout
            assert "pv-" not in out, what
        assert not (work / "bmc").exists()
        assert not list((work / "pool").glob("*.qcow2"))
        for pidfile in ("libvirtd.pid", "virtlogd.pid"):
            try:
                os.kill(int((tmp_path / pidfile).read_text()), 15)
            except (OSError, ValueError):
                pass
        time.sleep(1)
    assert not [p for p in bmc_pids if p in _procs(EMULATORS)]
    assert _procs(EMULATORS) <= before_bmcs
    assert _procs({"qemu-system-x86", "dnsmasq"}) <= before_vms
    shutil.rmtree(work, ignore_errors=True)


def test_discover_refuses_a_site_without_discovery_and_machines_already_registered(tmp_path):
    state = tmp_path / "state"
    service_site, machines = _sites(tmp_path)

    def up(site, *args, state=state):
        return cli(state, site, "lab", "up", "--discover", "--uri", "test:///default", "--no-watch",
                   "--installer", "anaconda", "--work-dir", str(tmp_path / "lab"), *args, timeout=120)
    # a site with discovery off (whose nodes are registered as it is read: another state directory)
    off = up(machines, state=tmp_path / "other-state")
    assert off.returncode == 1 and "has discovery off" in off.stderr, off.stderr
    mine = up(service_site, "--machines", str(service_site))
    assert mine.returncode == 1 and "has no nodes: nothing to build" in mine.stderr, mine.stderr
    known = up(service_site, "--machines", str(machines), "--ipmi-node", "compute9")
    assert known.returncode == 1 and "--ipmi-node: no such node: compute9" in known.stderr, known.stderr
    # a machine the service has registered is never discovered: refused before anything is built
    registered = subprocess.run([sys.executable, "-m", "provisioner", "--state-dir", str(state), "--site",
                                 str(service_site), "nodes", "add", "--mac", MACHINES["compute2"][0], "--hostname",
                                 "compute2", "--ip", "192.168.0.2", "--role", "compute"],
                                capture_output=True, text=True)
    assert registered.returncode == 0, registered.stderr
    again = up(service_site, "--machines", str(machines))
    assert again.returncode == 1 and "registered already, so never discovered: compute2 (52:54:00:0c:00:02)" \
        in again.stderr, again.stderr
    assert not (tmp_path / "lab").exists()
