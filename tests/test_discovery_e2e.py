"""Discovery for real: a QEMU (TCG) machine whose MAC the registry does not know PXE-boots
through dnsmasq and this service (`provisioner serve`, TFTP and the boot port) in a namespace
the test makes, is handed the inspection ramdisk `provisioner bootfiles import` built (a Debian
kernel, busybox), reports its NICs, its two disks, CPUs, memory and DMI to POST /discover/<mac>,
and powers itself off: QEMU exits. The registry then holds it as `discovered` with the exact
sizes of its disks, and enrolling it checks the layout against the size that was measured.
Once with SeaBIOS and the iPXE ROM (lpxelinux's config), once with OVMF (GRUB's).

Wall time here (the machine is shared, load 20+): BIOS 60-75 s (building the boot files and
starting the service ~10 s, SeaBIOS and iPXE's DHCP and TFTP ~15 s, lpxelinux fetching the
kernel and initrd over HTTP 15-30 s, the kernel and the ramdisk 12-18 s); UEFI about 105 s
(GRUB fetches the kernel and initrd over TFTP)."""

import json
import os
import shutil
import subprocess
from importlib import resources
from pathlib import Path

import pytest

from tests.bootimage import have_boot_tools
from tests.netboot import install_network, provisioner, wait_for
from tests.netns import can_make_namespaces

ROM = "/usr/lib/ipxe/qemu/pxe-e1000.rom"
pytestmark = pytest.mark.skipif(
    not (can_make_namespaces() and shutil.which("qemu-system-x86_64") and shutil.which("dnsmasq")
         and os.path.exists(ROM) and os.path.exists("/usr/lib/PXELINUX/lpxelinux.0") and have_boot_tools()),
    reason="needs root, qemu-system-x86, ipxe-qemu, pxelinux, dnsmasq, busybox-static, a Debian kernel")

MAC = "52:54:00:dd:0e:01"
OTHER_MAC = "52:54:00:dd:0e:02"
GIB = 1 << 30


OVMF_CODE, OVMF_VARS = Path("/usr/share/OVMF/OVMF_CODE_4M.fd"), Path("/usr/share/OVMF/OVMF_VARS_4M.fd")


def bios_machine(tmp_path, disks, console):
    """SeaBIOS, Debian's iPXE ROM on the first e1000 (-> lpxelinux), two disks on an AHCI controller."""
    return ["qemu-system-x86_64", "-machine", "pc", "-accel", "tcg", "-m", "256", "-smp", "2",
            "-cpu", "qemu64,+svm", "-display", "none", "-serial", f"file:{console}",
            "-monitor", "none", "-no-reboot", "-boot", "n",
            "-smbios", "type=1,manufacturer=Acme Servers,product=Rack 1000,serial=SN-DISC-0001",
            "-netdev", "tap,id=n0,ifname=tap0,script=no,downscript=no",
            "-device", f"e1000,netdev=n0,mac={MAC},romfile={ROM}",
            "-netdev", "tap,id=n1,ifname=tap1,script=no,downscript=no",
            "-device", f"e1000,netdev=n1,mac={OTHER_MAC},romfile=",
            "-device", "ahci,id=ahci",
            "-drive", f"file={disks[0]},if=none,id=d0,format=raw",
            "-device", "ide-hd,drive=d0,bus=ahci.0,model=DISK ONE",
            "-drive", f"file={disks[1]},if=none,id=d1,format=raw",
            "-device", "ide-hd,drive=d1,bus=ahci.1,model=DISK TWO"]


def uefi_machine(tmp_path, disks, console):
    """OVMF's own PXE on the first virtio NIC (-> the signed shim and GRUB over TFTP), q35's AHCI."""
    varstore = tmp_path / "OVMF_VARS.fd"
    shutil.copyfile(OVMF_VARS, varstore)
    return ["qemu-system-x86_64", "-machine", "q35", "-accel", "tcg", "-m", "1024", "-smp", "2",
            "-cpu", "qemu64,+svm", "-display", "none", "-serial", f"file:{console}",
            "-monitor", "none", "-no-reboot",
            "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}",
            "-drive", f"if=pflash,format=raw,unit=1,file={varstore}",
            "-fw_cfg", "name=opt/org.tianocore/IPv6PXESupport,string=no",
            "-smbios", "type=1,manufacturer=Acme Servers,product=Rack 1000,serial=SN-DISC-0001",
            "-netdev", "tap,id=n0,ifname=tap0,script=no,downscript=no",
            "-device", f"virtio-net-pci,netdev=n0,mac={MAC},romfile=,bootindex=1",
            "-netdev", "tap,id=n1,ifname=tap1,script=no,downscript=no",
            "-device", f"virtio-net-pci,netdev=n1,mac={OTHER_MAC},romfile=",
            "-drive", f"file={disks[0]},if=none,id=d0,format=raw",
            "-device", "ide-hd,drive=d0,bus=ide.0,model=DISK ONE",
            "-drive", f"file={disks[1]},if=none,id=d1,format=raw",
            "-device", "ide-hd,drive=d1,bus=ide.1,model=DISK TWO"]


@pytest.mark.parametrize("firmware, loader, machine", [
    ("bios", "pxelinux.cfg/01-52-54-00-dd-0e-01", bios_machine),
    pytest.param("uefi", "grub/grub.cfg-01-52:54:00:dd:0e:01", uefi_machine, marks=pytest.mark.skipif(
        not (OVMF_CODE.exists() and os.path.exists("/usr/lib/shim/shimx64.efi.signed")),
        reason="needs ovmf and shim-signed")),
])
def test_an_unknown_machine_is_inspected_and_appears_discovered(tmp_path, monkeypatch, firmware, loader, machine):
    site = tmp_path / "site.yaml"
    text = resources.files("provisioner").joinpath("site.yaml").read_text()
    site.write_text(text + "\ndiscovery:\n  enabled: true\n")
    monkeypatch.setenv("PROVISIONER_SITE", str(site))
    state = tmp_path / "state"
    out = provisioner(state, "bootfiles", "import")
    assert "built    inspect/initrd.img" in out
    disks = []
    for name, size in (("one", GIB), ("two", 2 * GIB)):
        disk = tmp_path / f"{name}.img"
        with open(disk, "wb") as f:
            f.truncate(size)        # sparse
        disks.append(disk)
    console = tmp_path / "console.log"

    with install_network(tmp_path, state) as ns:
        ns.run("ip", "tuntap", "add", "dev", "tap1", "mode", "tap")     # the second NIC: on no network
        ns.run("ip", "link", "set", "tap1", "up")
        qemu = ns.popen(machine(tmp_path, disks, console),
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            # the ramdisk powers the machine off once it has reported: QEMU exits by itself
            wait_for(lambda: qemu.poll() is not None, 300, "the inspected machine to power off")
        finally:
            if qemu.poll() is None:
                qemu.kill()
                qemu.wait()
        serial = console.read_text(errors="replace")
        assert "inspect: reported to" in serial, serial[-3000:]
        log = (tmp_path / "service.log").read_text()

    assert f"{MAC}: asked {loader}, answered inspect: not registered, discovery on" in log
    assert f"discover {MAC} from 192.168.0." in log and "new machine" in log
    node = json.loads(provisioner(state, "nodes", "show", MAC))
    assert node["state"] == "discovered" and node["netboot"] is False and node["hostname"] is None
    inv = node["inventory"]
    # the kernel probes the AHCI ports in parallel: which disk is sda differs from boot to boot
    assert sorted((d["bytes"], d["model"]) for d in inv["disks"]) == [(GIB, "DISK ONE"), (2 * GIB, "DISK TWO")]
    assert sorted(d["name"] for d in inv["disks"]) == ["sda", "sdb"]
    sda = next(d["bytes"] for d in inv["disks"] if d["name"] == "sda")
    assert [(n["mac"], n["name"]) for n in inv["nics"]] == [(MAC, "eth0"), (OTHER_MAC, "eth1")]
    assert inv["nics"][0]["link"] is True
    assert inv["cpus"] == 2 and inv["virt"] == "svm" and inv["firmware"] == firmware
    assert 128 << 20 < inv["memory_bytes"] <= (256 << 20 if firmware == "bios" else 1 << 30)     # MemTotal
    assert inv["system"] == {"vendor": "Acme Servers", "model": "Rack 1000", "serial": "SN-DISC-0001"}
    assert [e["type"] for e in node["events"]] == ["discovered"]
    # enroll checks the layout against the size measured of sda (the disk it installs to):
    # neither disk holds the compute layout
    r = subprocess.run([*provisioner_cmd(state), "nodes", "enroll", MAC, "--hostname", "compute9",
                        "--ip", "192.168.0.19", "--role", "compute"], capture_output=True, text=True)
    assert r.returncode == 1, r.stdout
    assert f"layout compute needs 238475 MiB but the disk has {sda >> 20} MiB ({sda} bytes)" in r.stderr, r.stderr


def provisioner_cmd(state):
    import sys
    return [sys.executable, "-m", "provisioner", "--state-dir", str(state)]
