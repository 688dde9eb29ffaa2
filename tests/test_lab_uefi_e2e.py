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

from provisioner.render import storage
from tests.labvirt import libvirtd_to_ourselves, start_libvirtd
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

    from provisioner.lab import vms as lab
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
    with libvirtd_to_ourselves():
        _lab_installs_and_boots(tmp_path, state, site, work)


def _lab_installs_and_boots(tmp_path, state, site, work):
    before = set(live({"qemu-system-x86", "dnsmasq"}))
    started = time.monotonic()
    with namespaces(1) as (ns,):
        ns.run("virtlogd", "-d", "-p", str(tmp_path / "virtlogd.pid"))
        start_libvirtd(ns, tmp_path)
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


# -- UEFI HTTP Boot with a real firmware -----------------------------------------------------------

HTTP_MAC = "52:54:00:0c:00:03"      # compute3 of the embedded site


def http_boot_qemu(varstore: Path, console: Path) -> list[str]:
    return ["qemu-system-x86_64", "-machine", "q35", "-accel", "tcg", "-m", "768",
            "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={OVMF / 'OVMF_CODE_4M.fd'}",
            "-drive", f"if=pflash,format=raw,unit=1,file={varstore}",
            # no PXE boot options at all: what boots must be OVMF's HTTP Boot (its UEFI HTTPv4 option)
            "-fw_cfg", "name=opt/org.tianocore/IPv4PXESupport,string=no",
            "-fw_cfg", "name=opt/org.tianocore/IPv6PXESupport,string=no",
            "-display", "none", "-serial", f"file:{console}", "-monitor", "none", "-no-reboot",
            "-netdev", "tap,id=n0,ifname=tap0,script=no,downscript=no",
            # OVMF's own virtio-net driver and HTTP stack, not an iPXE option ROM
            "-device", f"virtio-net-pci,netdev=n0,mac={HTTP_MAC},romfile=,bootindex=1"]


@pytest.mark.skipif(not (can_make_namespaces() and shutil.which("qemu-system-x86_64") and shutil.which("dnsmasq")
                         and (OVMF / "OVMF_CODE_4M.fd").exists()
                         and shutil.which("grub-mkimage") and os.path.exists("/usr/lib/grub/x86_64-efi/http.mod")),
                    reason="needs root, qemu, ovmf, grub-efi-amd64-bin, dnsmasq")
def test_uefi_http_boot_fetches_grub_config_kernel_and_initrd_by_url_with_no_tftp(tmp_path):
    from tests.bootimage import MARKER as CMDLINE, build_initrd, debian_kernel, have_boot_tools
    from tests.conftest import make_tree
    if not have_boot_tools():
        pytest.skip("needs busybox-static, cpio and a Debian kernel")
    state = tmp_path / "state"

    def run(*args):
        r = subprocess.run([sys.executable, "-m", "provisioner", "--state-dir", str(state), *args],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        return r.stdout

    run("bootfiles", "import")
    initrd = build_initrd(tmp_path / "initrd.img")
    run("distro", "import", "--from", str(make_tree(tmp_path / "tree", kernel=debian_kernel().read_bytes(),
                                                       initrd=initrd.read_bytes())))
    (tmp_path / "dnsmasq.conf").write_text(run("dnsmasq-config", "--interface", "br0", "--no-ipxe"))
    varstore = tmp_path / "OVMF_VARS.fd"
    shutil.copyfile(OVMF / "OVMF_VARS_4M.fd", varstore)
    console = tmp_path / "console.log"
    started = time.monotonic()
    with namespaces(1) as (ns,):
        ns.bridge("br0", "192.168.0.254/24")
        ns.tap("tap0", "br0")
        service_log = open(tmp_path / "service.log", "w")
        # no TFTP server anywhere in this namespace: whatever the firmware loads comes over HTTP
        service = ns.popen([sys.executable, "-m", "provisioner", "--state-dir", str(state), "serve",
                            "--http", "192.168.0.254:8080", "--no-tftp"],
                           stdout=service_log, stderr=subprocess.STDOUT)
        dnsmasq_log = open(tmp_path / "dnsmasq.log", "w")
        dnsmasq = ns.popen(["dnsmasq", "--keep-in-foreground", "--log-facility=-", "-C", str(tmp_path / "dnsmasq.conf"),
                            f"--dhcp-leasefile={tmp_path / 'leases'}", f"--pid-file={tmp_path / 'dnsmasq.pid'}"],
                           stdout=dnsmasq_log, stderr=subprocess.STDOUT)
        qemu = None
        try:
            deadline = time.monotonic() + 30
            while ns.run("curl", "-sf", "http://192.168.0.254:8081/bootfiles/shimx64.efi", "-o", "/dev/null",
                         check=False).returncode:
                assert time.monotonic() < deadline, "the service did not start"
                time.sleep(0.5)
            qemu = ns.popen(http_boot_qemu(varstore, console), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            deadline = time.monotonic() + 240
            while time.monotonic() < deadline and qemu.poll() is None:
                text = console.read_text(errors="replace") if console.exists() else ""
                if CMDLINE in text or "grub> " in text:     # the kernel, or GRUB's prompt (a failure)
                    break
                time.sleep(0.5)
        finally:
            for p in (qemu, dnsmasq, service):
                if p is not None and p.poll() is None:
                    p.kill()
                    p.wait()
            service_log.close()
            dnsmasq_log.close()
    print(f"UEFI HTTP Boot: {time.monotonic() - started:.0f} s")
    text = console.read_text(errors="replace") if console.exists() else ""
    log = (tmp_path / "service.log").read_text()
    # the firmware asked as an HTTP Boot client and was answered with the URL of the GRUB built at
    # import (option 60 said HTTPClient back) and fetched it from the boot port: no TFTP server
    # runs here and OVMF has no PXE option, so whatever started came over HTTP
    dhcp = (tmp_path / "dnsmasq.log").read_text()
    assert "HTTPClient" in dhcp and "http://192.168.0.254:8081/bootfiles/grubx64-http.efi" in dhcp, dhcp[-2000:]
    assert "UEFI HTTPv4" in text and "URI: http://192.168.0.254:8081/bootfiles/grubx64-http.efi" in text, text[-3000:]
    assert "UEFI PXEv4" not in text
    # the GRUB `bootfiles import` built with http (Debian 12's network GRUB has none): it takes its
    # server from the firmware's URI device path ((http,192.168.0.254:8081)), asks /grub/grub.cfg
    # (the generic config, not a 404 body it would run), then its per-MAC config, and loads the
    # kernel and initrd from the boot port, all with no TFTP server
    assert "Welcome to GRUB!" in text, text[-3000:]
    assert CMDLINE in text, text[-3000:] + "\n--- service ---\n" + log[-3000:]
    line = next(ln for ln in text.splitlines() if CMDLINE in ln)
    assert f"inst.ks=http://192.168.0.254:8081/ks/{HTTP_MAC}" in line
    assert "can't find command" not in text, text[-3000:]
    assert "asked /grub/grub.cfg, answered the generic config" in log, log[-3000:]
    assert f"asked /grub/grub.cfg-01-{HTTP_MAC}, answered install" in log, log[-3000:]
