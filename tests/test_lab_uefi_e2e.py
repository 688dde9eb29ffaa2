"""UEFI and Secure Boot through the libvirt lab, end to end: libvirtd in a network namespace this
test makes, the service beside it, and two compute nodes that `provisioner lab up` defines as
UEFI machines, one on plain OVMF and one on OVMF with Microsoft's keys enrolled and Secure Boot
on (q35 with SMM). Both PXE-boot through libvirt's dnsmasq and this service's TFTP (Debian's
signed shim -> signed GRUB -> the rehearsal's Debian kernel and initrd), lay Table 1 out on GPT
with the EFI System Partition, report, reboot, and boot their second time from the disk's ESP
(the signed shim and GRUB the installer put there), the Secure Boot one still under Secure Boot.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path

import pytest

from provisioner import storage
from tests.netns import can_make_namespaces, namespaces

OVMF = Path("/usr/share/OVMF")
needs_vms = pytest.mark.skipif(
    not (can_make_namespaces() and shutil.which("libvirtd") and shutil.which("virtlogd")
         and shutil.which("qemu-system-x86_64") and shutil.which("lvm") and shutil.which("mkfs.xfs")
         and os.path.exists("/usr/sbin/mkfs.fat") and (OVMF / "OVMF_CODE_4M.ms.fd").exists()
         and os.path.exists("/usr/lib/shim/shimx64.efi.signed")
         and os.path.exists("/usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed")),
    reason="needs root, libvirt-daemon-system, qemu, ovmf, shim-signed, grub-efi-amd64-signed, lvm2, xfsprogs, "
           "dosfstools")

TABLE1 = {"partitions": {"sda1": 500, "sda2": 21000, "sda3": 216974, "sda4": storage.ESP_MIB},
          "volume_groups": {"vg_base": 20996, "vg_gluster": 216972},
          "logical_volumes": {"vg_base/lv_root": 10000, "vg_base/lv_swap": 6000, "vg_base/lv_home": 4996,
                              "vg_gluster/lv_gluster": 216972}}
MARKER = "PROVISIONER-DISK-BOOT"
# The report's 250 GB disk has no room left for an ESP after Table 1 (tests/test_uefi.py):
# these machines' disks are 260 GB.
DISK_BYTES = 260_000_000_000
NODES = {"compute2": ("52:54:00:0c:00:02", "192.168.0.2"), "compute3": ("52:54:00:0c:00:03", "192.168.0.3")}
SECURE = "compute3"


def two_node_site(path: Path) -> Path:
    text = resources.files("provisioner").joinpath("site.yaml").read_text()
    text = text[:text.index("\nnodes:\n")] + "\nnodes:\n" + "".join(
        f"  - {{hostname: {h}, mac: \"{mac}\", interface: nic1, ip: {ip}, roles: [compute], "
        f"disk_bytes: {DISK_BYTES}, firmware: uefi}}\n" for h, (mac, ip) in NODES.items())
    path.write_text(text)
    return path


def cli(state, site, *args, ns=None, **kw):
    cmd = [sys.executable, "-m", "provisioner", "--state-dir", str(state), "--site", str(site), *args]
    if ns is not None:
        cmd = ["ip", "netns", "exec", ns.name, *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def live(names):
    out = subprocess.run(["ps", "-eo", "stat=,comm="], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if line.split()[0][0] != "Z" and line.split()[-1] in names]


def test_secure_boot_is_chosen_per_node(tmp_path, registry):
    from dataclasses import replace

    from provisioner import lab
    settings = lab.LabSettings(tmp_path, secure_boot_nodes=frozenset({"compute3"}))

    def with_firmware(mac, firmware):
        node = registry.get(mac)
        return replace(node, spec=replace(node.spec, firmware=firmware))

    plain = lab.domain_xml(with_firmware("52:54:00:0c:00:02", "uefi"), settings, "/d.qcow2")
    assert "OVMF_CODE_4M.fd" in plain and "secure='no'" in plain and "<smm" not in plain
    for firmware in ("uefi", None):     # picked for Secure Boot before its firmware is learned: UEFI
        sb = lab.domain_xml(with_firmware("52:54:00:0c:00:03", firmware), settings, "/d.qcow2")
        assert "OVMF_CODE_4M.ms.fd" in sb and "OVMF_VARS_4M.ms.fd" in sb and "secure='yes'" in sb
        assert "<smm state='on'/>" in sb and "machine='q35'" in sb
    with pytest.raises(lab.LabError, match="compute3 is registered with bios firmware"):
        lab.domain_xml(with_firmware("52:54:00:0c:00:03", "bios"), settings, "/d.qcow2")
    # --secure-boot: every UEFI node, and a BIOS one stays BIOS
    every = replace(settings, secure_boot=True, secure_boot_nodes=frozenset())
    assert "secure='yes'" in lab.domain_xml(with_firmware("52:54:00:0c:00:02", "uefi"), every, "/d.qcow2")
    assert "<loader" not in lab.domain_xml(with_firmware("52:54:00:0c:00:02", "bios"), every, "/d.qcow2")


@needs_vms
def test_lab_installs_a_uefi_and_a_secure_boot_node_and_boots_them_from_disk(tmp_path):
    state = tmp_path / "state"
    site = two_node_site(tmp_path / "site.yaml")
    work = Path(tempfile.mkdtemp(prefix="pv-lab-uefi-", dir="/var/tmp"))   # qemu's user must reach it
    work.chmod(0o755)
    imported = cli(state, site, "bootfiles", "import")
    assert imported.returncode == 0, imported.stderr
    before = set(live({"qemu-system-x86", "dnsmasq"}))
    started = time.monotonic()
    with namespaces(1) as (ns,):
        ns.run("virtlogd", "-d", "-p", str(tmp_path / "virtlogd.pid"))
        ns.run("libvirtd", "-d", "-p", str(tmp_path / "libvirtd.pid"))
        serve_log = open(tmp_path / "serve.log", "w")
        service = ns.popen([sys.executable, "-m", "provisioner", "--state-dir", str(state), "--site", str(site),
                            "serve", "--http", "0.0.0.0:8080", "--boot", "0.0.0.0:8081", "--tftp", "0.0.0.0:69"],
                           stdout=serve_log, stderr=subprocess.STDOUT)
        down = None
        try:
            up = cli(state, site, "lab", "up", "--uri", "qemu:///system", "--work-dir", str(work), "--no-watch",
                     "--secure-boot-node", SECURE, ns=ns, timeout=300)
            assert up.returncode == 0, up.stderr + up.stdout
            domains = {h: ns.run("virsh", "-c", "qemu:///system", "dumpxml", f"pv-{h}").stdout for h in NODES}
            assert "OVMF_CODE_4M.fd" in domains["compute2"] and "secure='yes'" not in domains["compute2"]
            assert "OVMF_CODE_4M.ms.fd" in domains[SECURE] and "secure='yes'" in domains[SECURE]
            assert "<smm state='on'/>" in domains[SECURE]

            reader = f"Authorization: Bearer {cli(state, site, 'token', '--read-only').stdout.strip()}"

            def nodes():
                r = ns.run("curl", "-sf", "-H", reader, "http://127.0.0.1:8080/api/v1/nodes", check=False)
                return json.loads(r.stdout)["nodes"] if r.returncode == 0 else []

            def console(h):
                path = work / "consoles" / f"{h}.log"
                return path.read_text(errors="replace") if path.exists() else ""

            def booted_from_disk(h):
                text = console(h)
                return "rehearsal: installed" in text and MARKER in text.split("rehearsal: installed", 1)[1]

            deadline = time.monotonic() + 900
            while time.monotonic() < deadline:
                states = {n["hostname"]: n["state"] for n in nodes()}
                if any(s == "failed" for s in states.values()) or any("rehearsal: FAILED" in console(h) for h in NODES):
                    break
                if all(states.get(h) == "installed" and booted_from_disk(h) for h in NODES):
                    break
                time.sleep(5)
            print(f"lab: two UEFI installs and boots from disk: {time.monotonic() - started:.0f} s")
            for h in NODES:
                print(h, [ln.strip()[-90:] for ln in console(h).splitlines() if any(
                    k in ln for k in ("rehearsal:", MARKER, "lockdown=", "secureboot:", "Booting `"))])
            tails = {h: console(h)[-2500:] for h in NODES}
            assert {n["hostname"]: n["state"] for n in nodes()} == {h: "installed" for h in NODES}, tails

            for node in nodes():
                h = node["hostname"]
                events = json.loads(ns.run("curl", "-sf", "-H", reader,
                                           f"http://127.0.0.1:8080/api/v1/nodes/{node['mac']}/events").stdout)["events"]
                layout = [e["detail"] for e in events if e["type"] == "layout"][-1]
                got = {"partitions": {p["name"]: p["mib"] for p in layout["partitions"]},
                       "volume_groups": {v["name"]: v["mib"] for v in layout["volume_groups"]},
                       "logical_volumes": {f"{lv['vg']}/{lv['name']}": lv["mib"] for lv in layout["logical_volumes"]}}
                assert got == TABLE1, h
                text = console(h)
                assert text.count("rehearsal: installed") == 1, tails[h]     # not installed a second time
                after = text.split("rehearsal: installed", 1)[1]
                assert MARKER in after, tails[h]
                if h == SECURE:
                    # the installer's kernel saw the firmware enforcing Secure Boot, and so did the
                    # disk's GRUB on the second boot (GRUB 2.06 sets lockdown=y under Secure Boot)
                    assert "secureboot: Secure boot enabled" in text.split("rehearsal: installed", 1)[0], tails[h]
                    assert "secure boot lockdown=y" in after, tails[h]
                else:
                    assert "Secure boot enabled" not in text, tails[h]
                    assert "secure boot lockdown=" in after and "secure boot lockdown=y" not in after, tails[h]
            log = (tmp_path / "serve.log").read_text()
            for h, (mac, _) in NODES.items():
                assert f"({h}): asked grub/grub.cfg-01-{mac}, answered install" in log
                assert f"({h}): asked grub/grub.cfg-01-{mac}, answered local: installed, netboot disarmed" in log
        finally:
            down = cli(state, site, "lab", "down", "--uri", "qemu:///system", "--work-dir", str(work), ns=ns,
                       timeout=300)
            service.terminate()
            service.wait(timeout=30)
            serve_log.close()
        assert down.returncode == 0, down.stderr
        for what in ("list", "net-list", "pool-list"):
            out = ns.run("virsh", "-c", "qemu:///system", what, "--all", check=False).stdout
            assert "pv-" not in out, what
        assert not list((work / "pool").glob("*.qcow2"))
        assert not list((work / "pool").glob("*_VARS.fd"))      # the variable stores went with the domains
        for pidfile in ("libvirtd.pid", "virtlogd.pid"):
            try:
                os.kill(int((tmp_path / pidfile).read_text()), 15)
            except (OSError, ValueError):
                pass
        time.sleep(1)
    assert set(live({"qemu-system-x86", "dnsmasq"})) <= before
    shutil.rmtree(work, ignore_errors=True)
