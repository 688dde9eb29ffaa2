"""The dress rehearsal, end to end: libvirtd in a network namespace this test makes, the service
beside it, and the report's five nodes as QEMU (TCG) VMs that PXE-boot through DHCP, TFTP and
HTTP into the rehearsal installer, lay their disks out as Tables 1 and 2, report, reboot, and boot
their second time from disk."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.netns import can_make_namespaces, namespaces
from tests.labvirt import libvirtd_to_ourselves, start_libvirtd

pytestmark = pytest.mark.skipif(
    not (can_make_namespaces() and shutil.which("libvirtd") and shutil.which("virtlogd")
         and shutil.which("qemu-system-x86_64") and shutil.which("lvm") and shutil.which("mkfs.xfs")
         and os.path.exists("/usr/lib/PXELINUX/lpxelinux.0")),
    reason="needs root, libvirt-daemon-system, qemu, lvm2, xfsprogs, pxelinux")

# Tables 1 and 2, MiB for MiB (lv_images: 28784, the Table 2 exception the layout makes visible)
TABLE1 = {"partitions": {"sda1": 500, "sda2": 21000, "sda3": 216974},
          "volume_groups": {"vg_base": 20996, "vg_gluster": 216972},
          "logical_volumes": {"vg_base/lv_root": 10000, "vg_base/lv_swap": 6000, "vg_base/lv_home": 4996,
                              "vg_gluster/lv_gluster": 216972}}
TABLE2 = {"partitions": {"sda1": 500, "sda2": 17000, "sda3": 30000, "sda4": 28792, "sda5": 28788},
          "volume_groups": {"nova-volumes": 29996, "vg_base": 16996, "vg_images": 28784},
          "logical_volumes": {"vg_base/lv_root": 10000, "vg_base/lv_swap": 2000, "vg_base/lv_home": 4996,
                              "vg_images/lv_images": 28784}}
MARKER = "PROVISIONER-DISK-BOOT"


def cli(state, *args, ns=None, **kw):
    cmd = [sys.executable, "-m", "provisioner", "--state-dir", str(state), *args]
    if ns is not None:
        cmd = ["ip", "netns", "exec", ns.name, *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def live(pid_names):
    out = subprocess.run(["ps", "-eo", "stat=,comm="], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if line.split()[0][0] != "Z" and line.split()[-1] in pid_names]


def test_the_five_node_testbed_installs_and_boots_from_disk(tmp_path):
    state = tmp_path / "state"
    work = Path(tempfile.mkdtemp(prefix="pv-lab-", dir="/var/tmp"))   # qemu's user must reach it
    work.chmod(0o755)
    assert cli(state, "bootfiles", "import").returncode == 0
    # libvirtd's socket and definitions are the host's: never at once with the UEFI lab test
    with libvirtd_to_ourselves():
        _five_nodes_install_and_boot(tmp_path, state, work)


def _five_nodes_install_and_boot(tmp_path, state, work):
    before = {p for p in live({"qemu-system-x86", "dnsmasq"})}
    with namespaces(1) as (ns,):
        ns.run("virtlogd", "-d", "-p", str(tmp_path / "virtlogd.pid"))
        start_libvirtd(ns, tmp_path)
        serve_log = open(tmp_path / "serve.log", "w")
        service = ns.popen([sys.executable, "-m", "provisioner", "--state-dir", str(state), "serve",
                            "--http", "0.0.0.0:8080", "--boot", "0.0.0.0:8081", "--tftp", "0.0.0.0:69"],
                           stdout=serve_log, stderr=subprocess.STDOUT)
        try:
            up = cli(state, "lab", "up", "--uri", "qemu:///system", "--work-dir", str(work), "--no-watch",
                     ns=ns, timeout=300)
            assert up.returncode == 0, up.stderr + up.stdout
            assert "rehearsal installer imported as centos-stream-9-x86_64" in up.stdout

            reader = f"Authorization: Bearer {cli(state, 'token', '--read-only').stdout.strip()}"

            def nodes():
                r = ns.run("curl", "-sf", "-H", reader, "http://127.0.0.1:8080/api/v1/nodes", check=False)
                return json.loads(r.stdout)["nodes"] if r.returncode == 0 else []

            deadline = time.monotonic() + 1200
            while time.monotonic() < deadline:
                states = {n["hostname"]: n["state"] for n in nodes()}
                booted = {h: MARKER in (work / "consoles" / f"{h}.log").read_text(errors="replace")
                          for h in states if (work / "consoles" / f"{h}.log").exists()}
                if states and all(s == "installed" for s in states.values()) and all(booted.values()) \
                        and len(booted) == 5:
                    break
                if any(s == "failed" for s in states.values()):
                    break
                time.sleep(5)
            assert {n["hostname"]: n["state"] for n in nodes()} == {
                h: "installed" for h in ("compute1", "compute2", "compute3", "compute4", "controller")}

            for node in nodes():
                events = json.loads(ns.run("curl", "-sf", "-H", reader,
                                           f"http://127.0.0.1:8080/api/v1/nodes/{node['mac']}/events").stdout)["events"]
                layout = [e["detail"] for e in events if e["type"] == "layout"][-1]
                got = {"partitions": {p["name"]: p["mib"] for p in layout["partitions"]},
                       "volume_groups": {v["name"]: v["mib"] for v in layout["volume_groups"]},
                       "logical_volumes": {f"{lv['vg']}/{lv['name']}": lv["mib"] for lv in layout["logical_volumes"]}}
                assert got == (TABLE2 if "controller" in node["roles"] else TABLE1), node["hostname"]
                # the second boot came from the disk: its boot sector's marker, after the installer
                console = (work / "consoles" / f"{node['hostname']}.log").read_text(errors="replace")
                assert console.index("rehearsal: installed; rebooting") < console.index(MARKER)
                assert console.count("rehearsal: installed") == 1    # not installed a second time
            log = (tmp_path / "serve.log").read_text()
            assert "asked pxelinux.cfg/01-52-54-00-0c-00-02, answered local: installed, netboot disarmed" in log
        finally:
            down = cli(state, "lab", "down", "--uri", "qemu:///system", "--work-dir", str(work), ns=ns, timeout=300)
            service.terminate()
            service.wait(timeout=30)
            serve_log.close()
        assert down.returncode == 0, down.stderr
        for what in ("list", "net-list", "pool-list", "vol-list pv-lab"):
            out = ns.run("virsh", "-c", "qemu:///system", *what.split(), "--all" if what != "vol-list pv-lab" else "",
                         check=False).stdout
            assert "pv-" not in out, what
        assert not list((work / "pool").glob("*.qcow2"))
        for pidfile in ("libvirtd.pid", "virtlogd.pid"):
            try:
                os.kill(int((tmp_path / pidfile).read_text()), 15)
            except (OSError, ValueError):
                pass
        time.sleep(1)
    # nothing the lab started is still running: no VM, no dnsmasq of its networks
    assert {p for p in live({"qemu-system-x86", "dnsmasq"})} <= before
    shutil.rmtree(work, ignore_errors=True)
