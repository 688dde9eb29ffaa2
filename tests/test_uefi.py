"""UEFI: a node's firmware (set, or learned from the loader that asked), Tables 1 and 2 on GPT
with an EFI System Partition, the fit check and %pre's refusal of a firmware mismatch, and a
real install: QEMU (TCG) on OVMF PXE-boots through dnsmasq and this service into the rehearsal
installer, which lays Table 1 out on GPT with the ESP, reports it, and reboots; the second boot
comes from the disk's ESP (its GRUB prints the marker)."""

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from provisioner.lab import vms as lab
from provisioner.lab import rehearsal
from provisioner.render import storage
from provisioner.boot.dhcp import dnsmasq_config
from tests.conftest import REPORT_COMPUTE_DISK, REPORT_CONTROLLER_DISK
from tests.netboot import install_network, provisioner
from tests.netns import can_make_namespaces, namespaces

ESP = storage.ESP_MIB
TABLE1_PARTS = {"sda1": 500, "sda2": 21000, "sda3": 216974}
TABLE1_VGS = {"vg_base": 20996, "vg_gluster": 216972}
TABLE1_LVS = {"vg_base/lv_root": 10000, "vg_base/lv_swap": 6000, "vg_base/lv_home": 4996,
              "vg_gluster/lv_gluster": 216972}
TABLE2_PARTS = {"sda1": 500, "sda2": 17000, "sda3": 30000, "sda5": 28788}     # sda4 was msdos's extended


# -- layouts -------------------------------------------------------------------------------------

def test_uefi_layouts_are_the_tables_on_gpt_with_an_esp_after_them(site):
    for name, parts, esp in (("compute", TABLE1_PARTS, "sda4"), ("controller", TABLE2_PARTS, "sda6")):
        layout = storage.for_firmware(site.layouts[name], "uefi")
        assert layout.label == "gpt"
        assert {p.name: p.size for p in layout.table_partitions if not p.extended} == parts
        extra = [p for p in layout.partitions if p.kind]
        assert [(p.name, p.size, p.mount, p.fstype) for p in extra] == [(esp, ESP, "/boot/efi", "efi")]
        # LVM's arithmetic is the table's: the same volume groups and volumes, MiB for MiB
        assert storage.plan(layout).volumes == storage.plan(site.layouts[name]).volumes
    bios = storage.for_firmware(site.layouts["compute"], "bios")
    assert bios.label == "dos" and bios.partitions == site.layouts["compute"].partitions


def test_a_bios_machine_on_gpt_gets_a_biosboot_partition(site):
    from dataclasses import replace
    layout = storage.for_firmware(replace(site.layouts["compute"], label="gpt"), "bios")
    assert [(p.name, p.size, p.kind) for p in layout.partitions if p.kind] == [("sda4", 1, "biosboot")]
    script = storage.sfdisk_script(layout)
    assert "label: gpt" in script and "/dev/sda4 : start=488396800, size=1MiB, type=21686148-6449-6E6F-744E-656564454649" in script
    # on GPT, a BIOS machine's GRUB finds /boot by the legacy-bootable attribute
    assert "/dev/sda1 : start=2048, size=500MiB, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, attrs=LegacyBIOSBootable" in script


def test_the_reports_250gb_disk_has_no_room_for_an_esp(site):
    table1 = site.layouts["compute"]
    storage.check_fit(table1, REPORT_COMPUTE_DISK, "bios")
    with pytest.raises(storage.LayoutError) as e:
        storage.check_fit(table1, REPORT_COMPUTE_DISK, "uefi")
    assert f"UEFI needs {ESP} MiB for the EFI System Partition; this disk has 0 MiB left" in str(e.value)
    # nor the 80 GB controller disk
    with pytest.raises(storage.LayoutError, match=f"UEFI needs {ESP} MiB .* this disk has 26 MiB left"):
        storage.check_fit(site.layouts["controller"], REPORT_CONTROLLER_DISK, "uefi")
    storage.check_fit(table1, REPORT_COMPUTE_DISK + ESP * storage.MIB + storage.MIB, "uefi")


def _sfdisk(tmp_path, layout, disk_bytes):
    img = tmp_path / f"{layout.name}-{layout.label}.img"
    with open(img, "wb") as f:
        f.truncate(disk_bytes)
    subprocess.run(["sfdisk", "--quiet", str(img)], input=storage.sfdisk_script(layout), text=True,
                   check=True, capture_output=True)
    table = json.loads(subprocess.run(["sfdisk", "--json", str(img)], check=True, capture_output=True,
                                      text=True).stdout)["partitiontable"]
    return table["label"], {p["node"][len(str(img)):]: (p["start"] // 2048, p["size"] // 2048, p["type"])
                            for p in table["partitions"]}


@pytest.mark.skipif(shutil.which("sfdisk") is None, reason="needs sfdisk")
def test_sfdisk_lays_the_uefi_tables_out_with_the_msdos_offsets(tmp_path, site):
    lvm, linux, esp = (storage._GPT_TYPES[k] for k in ("lvm", "linux", "esp"))
    disk = REPORT_COMPUTE_DISK + 2 * ESP * storage.MIB
    label, parts = _sfdisk(tmp_path, storage.for_firmware(site.layouts["compute"], "uefi"), disk)
    _, msdos = _sfdisk(tmp_path, site.layouts["compute"], disk)
    assert label == "gpt"
    assert parts == {"1": (1, 500, linux), "2": (501, 21000, lvm), "3": (21501, 216974, lvm),
                     "4": (238475, ESP, "C12A7328-F81F-11D2-BA4B-00A0C93EC93B")}
    assert {k: v[:2] for k, v in msdos.items()} == {k: v[:2] for k, v in parts.items() if k != "4"}
    label, parts = _sfdisk(tmp_path, storage.for_firmware(site.layouts["controller"], "uefi"),
                           REPORT_CONTROLLER_DISK + 2 * ESP * storage.MIB)
    _, msdos = _sfdisk(tmp_path, site.layouts["controller"], REPORT_CONTROLLER_DISK)
    assert {k: v[1] for k, v in parts.items()} == {"1": 500, "2": 17000, "3": 30000, "5": 28788, "6": ESP}
    assert parts["5"][0] == msdos["5"][0]      # sda5 where the msdos layout has it, inside sda4's span
    assert esp == "U"


# -- the node's firmware ---------------------------------------------------------------------------

NODE = {"mac": "52:54:00:aa:00:10", "hostname": "compute5", "ip": "192.168.0.6", "roles": ["compute"],
        "interface": "eth1"}


def test_firmware_is_set_through_the_api_and_checked_against_the_disk(client, admin):
    r = client.post("/api/v1/nodes", json={**NODE, "firmware": "uefi", "disk_bytes": REPORT_COMPUTE_DISK},
                    headers=admin)
    assert r.status_code == 400 and r.get_json()["field"] == "disk_bytes"
    assert "UEFI needs 600 MiB for the EFI System Partition; this disk has 0 MiB left" in r.get_json()["detail"]
    r = client.post("/api/v1/nodes", json={**NODE, "firmware": "efi"}, headers=admin)
    assert r.status_code == 400 and r.get_json()["field"] == "firmware"
    r = client.post("/api/v1/nodes", json={**NODE, "firmware": "uefi"}, headers=admin)
    assert r.status_code == 201 and r.get_json()["firmware"] == "uefi"
    r = client.patch(f"/api/v1/nodes/{NODE['mac']}", json={"firmware": "bios"}, headers=admin)
    assert r.status_code == 200 and r.get_json()["firmware"] == "bios"
    r = client.patch(f"/api/v1/nodes/{NODE['mac']}", json={"firmware": None}, headers=admin)
    assert r.status_code == 200 and r.get_json()["firmware"] is None


def test_firmware_is_learned_from_the_loader_that_asks_and_recorded(app, registry):
    boot = app.extensions["provisioner"].boot
    mac = "52:54:00:0c:00:02"
    assert registry.get(mac).spec.firmware is None
    boot.tftp_resolve(f"grub/grub.cfg-01-{mac}", ("192.168.0.2", 1000))
    assert registry.get(mac).spec.firmware == "uefi"
    events = [e for e in registry.events(mac) if e.type == "firmware"]
    assert len(events) == 1 and events[0].detail["firmware"] == "uefi"
    assert "grub asked grub/grub.cfg-01-" in events[0].detail["learned_from"]
    boot.tftp_resolve(f"grub.cfg-01-{mac}", ("192.168.0.2", 1000))      # again: nothing new
    assert len([e for e in registry.events(mac) if e.type.startswith("firmware")]) == 1
    # a BIOS loader for the same machine contradicts it: kept, and said once
    for _ in range(2):
        boot.tftp_resolve(f"pxelinux.cfg/01-{mac.replace(':', '-')}", ("192.168.0.2", 1000))
    assert registry.get(mac).spec.firmware == "uefi"
    mismatch = [e for e in registry.events(mac) if e.type == "firmware-mismatch"]
    assert len(mismatch) == 1 and mismatch[0].detail["seen"] == "bios"
    # pxelinux for an unknown one says BIOS
    boot.tftp_resolve("pxelinux.cfg/01-52-54-00-0c-00-03", ("192.168.0.3", 1000))
    assert registry.get("52:54:00:0c:00:03").spec.firmware == "bios"


def test_a_learned_firmware_survives_a_restart_with_the_site(app, registry, site):
    registry.learn_firmware("52:54:00:0c:00:04", "uefi", "test")
    assert registry.sync_site(site) == []
    assert registry.get("52:54:00:0c:00:04").spec.firmware == "uefi"


def test_cli_sets_and_forgets_firmware(tmp_path):
    def cli(*args):
        return subprocess.run([sys.executable, "-m", "provisioner", "--state-dir", str(tmp_path / "s"), *args],
                              capture_output=True, text=True)
    r = cli("nodes", "add", "--mac", NODE["mac"], "--hostname", "compute5", "--ip", "192.168.0.6",
            "--role", "compute", "--firmware", "uefi")
    assert r.returncode == 0, r.stderr
    assert json.loads(cli("nodes", "show", NODE["mac"]).stdout)["firmware"] == "uefi"
    assert cli("nodes", "change", NODE["mac"], "--firmware", "learn").returncode == 0
    assert json.loads(cli("nodes", "show", NODE["mac"]).stdout)["firmware"] is None
    r = cli("nodes", "change", NODE["mac"], "--firmware", "efi")
    assert r.returncode != 0 and "efi" in r.stderr


# -- kickstarts ----------------------------------------------------------------------------------

def _kickstart(app, registry, mac, firmware):
    from dataclasses import replace
    node = registry.get(mac)
    node = replace(node, spec=replace(node.spec, firmware=firmware))
    return app.extensions["provisioner"].renderer.kickstart(node)


def test_uefi_kickstarts_parse_and_carry_the_esp(app, registry):
    from provisioner.render.kscheck import check_kickstart
    for mac, esp in (("52:54:00:0c:00:02", "sda4"), ("52:54:00:0c:00:05", "sda6")):
        text = _kickstart(app, registry, mac, "uefi")
        result = check_kickstart(text)
        assert result.errors == [] and result.warnings == [], (result.errors, result.warnings)
        assert f"part /boot/efi --fstype=efi --onpart={esp}" in text
        assert "label: gpt" in text and f"/dev/{esp} : start=" in text
        assert "PROVISIONER_FIRMWARE=uefi" in text
        bios = _kickstart(app, registry, mac, "bios")
        assert "label: dos" in bios and "/boot/efi" not in bios and "PROVISIONER_FIRMWARE=bios" in bios


def test_pre_refuses_a_firmware_mismatch_before_touching_the_disk(app, registry, tmp_path):
    text = _kickstart(app, registry, "52:54:00:0c:00:02", "uefi")
    pre = text[text.index("%pre --"):]
    pre = pre[pre.index("\n") + 1:pre.index("%end")]
    check = pre[pre.index("PROVISIONER_FIRMWARE="):pre.index("# Partition")]
    assert pre.index("PROVISIONER_FIRMWARE=") < pre.index("wipefs") and pre.index("sfdisk")
    script = tmp_path / "pre.sh"
    # the check as %pre runs it, with report/fail as in the kickstart but recording, and the
    # firmware directory pointed at a scratch path
    script.write_text('fail() { echo "FAILED: $1"; exit 1; }\n' + check.replace("/sys/firmware/efi", str(tmp_path / "efi"))
                      + "\necho passed\n")
    r = subprocess.run(["sh", str(script)], capture_output=True, text=True)
    assert r.returncode == 1 and "booted with bios firmware but its layout is for uefi" in r.stdout
    assert "the disk was not touched" in r.stdout
    (tmp_path / "efi").mkdir()
    assert subprocess.run(["sh", str(script)], capture_output=True, text=True).stdout.strip() == "passed"


# -- lab -----------------------------------------------------------------------------------------

def test_lab_domains_follow_the_firmware(registry, site, tmp_path):
    from dataclasses import replace
    settings = lab.LabSettings(tmp_path)
    node = registry.get("52:54:00:0c:00:02")
    bios = lab.domain_xml(node, settings, "/d.qcow2")
    assert "<loader" not in bios and "machine='pc'" in bios
    uefi = lab.domain_xml(replace(node, spec=replace(node.spec, firmware="uefi")), settings, "/d.qcow2")
    assert "OVMF_CODE_4M.fd" in uefi and "<nvram template=" in uefi and "<model type='virtio'/>" in uefi
    sb = lab.domain_xml(replace(node, spec=replace(node.spec, firmware="uefi")),
                        replace(settings, secure_boot=True), "/d.qcow2")
    assert "OVMF_CODE_4M.ms.fd" in sb and "secure='yes'" in sb and "<smm state='on'/>" in sb
    net = lab.install_network_xml(site, registry.list())
    assert "dhcp-boot=tag:efi-x86_64,shimx64.efi,,192.168.0.254" in net and '<bootp file="lpxelinux.0"' in net


def test_the_rehearsal_initrd_carries_the_esp_loader(tmp_path):
    if not (rehearsal.kernel and Path("/bin/busybox").exists() and shutil.which("cpio")):
        pytest.skip("needs busybox and cpio")
    cfg = rehearsal.esp_grub_cfg()
    assert "echo PROVISIONER-DISK-BOOT" in cfg and "halt" in cfg


# -- a real UEFI install and second boot ------------------------------------------------------------

OVMF_CODE, OVMF_VARS = Path("/usr/share/OVMF/OVMF_CODE_4M.fd"), Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
VM_MAC = "52:54:00:0c:00:06"


def _vm_ready() -> bool:
    return bool(can_make_namespaces() and shutil.which("qemu-system-x86_64") and shutil.which("qemu-img")
                and shutil.which("dnsmasq") and OVMF_CODE.exists() and shutil.which("lvm")
                and shutil.which("mkfs.xfs") and Path("/usr/sbin/mkfs.fat").exists()
                and Path("/usr/lib/shim/shimx64.efi.signed").exists())


def uefi_qemu(varstore: Path, disk: Path, console: Path) -> list[str]:
    return ["qemu-system-x86_64", "-machine", "q35", "-accel", "tcg", "-m", "1024",
            "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}",
            "-drive", f"if=pflash,format=raw,unit=1,file={varstore}",
            "-fw_cfg", "name=opt/org.tianocore/IPv6PXESupport,string=no",
            "-display", "none", "-serial", f"file:{console}", "-monitor", "none",
            "-drive", f"file={disk},if=none,id=d0,format=qcow2,cache=unsafe",
            "-device", "ide-hd,drive=d0,bus=ide.0,bootindex=2",
            "-netdev", "tap,id=n0,ifname=tap0,script=no,downscript=no",
            "-device", f"virtio-net-pci,netdev=n0,mac={VM_MAC},romfile=,bootindex=1"]


@pytest.mark.skipif(not _vm_ready(), reason="needs root, qemu, ovmf, shim-signed, dnsmasq, lvm2, xfsprogs, dosfstools")
def test_uefi_machine_installs_table1_on_gpt_with_an_esp_and_boots_from_its_disk(tmp_path):
    state = tmp_path / "state"

    def cli(*args):
        return provisioner(state, *args)

    cli("bootfiles", "import")
    cli("distro", "import", "--from", str(rehearsal.make_tree(tmp_path)))
    # the report's 250 GB disk cannot take an ESP too (see above): this machine's is 1 GiB larger.
    # No firmware given: the loader that asks tells the service.
    disk_bytes = REPORT_COMPUTE_DISK + 1024 * storage.MIB
    cli("nodes", "add", "--mac", VM_MAC, "--hostname", "compute5", "--ip", "192.168.0.6", "--role", "compute",
        "--interface", "eth1", "--disk-bytes", str(disk_bytes))
    disk = tmp_path / "disk.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), str(disk_bytes)], check=True)
    varstore = tmp_path / "OVMF_VARS.fd"
    shutil.copyfile(OVMF_VARS, varstore)
    console = tmp_path / "console.log"
    started = time.monotonic()
    with install_network(tmp_path, state) as ns:
        qemu = ns.popen(uefi_qemu(varstore, disk, console), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 230
            while time.monotonic() < deadline and qemu.poll() is None:
                text = console.read_text(errors="replace") if console.exists() else ""
                if "rehearsal: FAILED" in text:
                    break
                if "rehearsal: installed" in text and rehearsal.DISK_MARKER.decode() in text.split("rehearsal: installed")[1]:
                    break
                time.sleep(1)
        finally:
            if qemu.poll() is None:
                qemu.kill()
                qemu.wait()
    print(f"UEFI install and boot from disk: {time.monotonic() - started:.0f} s")
    text = console.read_text(errors="replace")
    assert "rehearsal: installed; rebooting" in text, text[-3000:]
    marker = rehearsal.DISK_MARKER.decode()
    assert text.index("rehearsal: installed; rebooting") < text.rindex(marker), text[-3000:]
    assert text.count("rehearsal: installed") == 1
    shown = json.loads(cli("nodes", "show", VM_MAC))
    assert shown["state"] == "installed" and shown["firmware"] == "uefi"
    events = shown["events"]
    assert any(e["type"] == "firmware" and e["detail"]["firmware"] == "uefi" for e in events)
    layout = [e["detail"] for e in events if e["type"] == "layout"][-1]
    assert {p["name"]: p["mib"] for p in layout["partitions"]} == {**TABLE1_PARTS, "sda4": ESP}
    assert {v["name"]: v["mib"] for v in layout["volume_groups"]} == TABLE1_VGS
    assert {f"{lv['vg']}/{lv['name']}": lv["mib"] for lv in layout["logical_volumes"]} == TABLE1_LVS
    log = (tmp_path / "service.log").read_text()
    assert f"(compute5): asked grub/grub.cfg-01-{VM_MAC}, answered local: installed, netboot disarmed" in log


def test_dnsmasq_answers_an_http_boot_client_with_a_url(tmp_path, registry, site):
    """A real DHCP client that says HTTPClient (as UEFI HTTP Boot firmware does) gets the
    URL of the HTTP-capable GRUB on the boot port and option 60 back; a PXE client on the same
    network still gets TFTP and the shim."""
    from tests.test_dhcp import _dnsmasq, _lease
    if not can_make_namespaces() or not shutil.which("dnsmasq") or not Path("/bin/busybox").exists():
        pytest.skip("needs root, dnsmasq and busybox")
    conf = dnsmasq_config(site, registry.list(), interface="br0")
    with namespaces(2) as (server, client):
        server.bridge("br0")
        server.veth_to(client, "br0", "52:54:00:0c:00:02")
        dnsmasq = _dnsmasq(server, tmp_path, conf)
        try:
            time.sleep(0.5)
            http = _lease(client, tmp_path, "-V", "HTTPClient:Arch:00016:UNDI:003001", "-x", "0x5d:0010")
            assert http is not None
            assert http["boot_file"] == "http://192.168.0.254:8081/bootfiles/grubx64-http.efi"
            efi = _lease(client, tmp_path, "-V", "PXEClient:Arch:00007:UNDI:003000", "-x", "0x5d:0007")
            assert efi["boot_file"] == "shimx64.efi" and efi["siaddr"] == "192.168.0.254"
        finally:
            dnsmasq.kill()
            dnsmasq.wait()
            log = dnsmasq.stdout.read()
            dnsmasq.stdout.close()
    # the firmware takes the offer only if option 60 says HTTPClient back (log-dhcp shows what was sent)
    assert "option: 60 vendor-class  " + ":".join(f"{b:02x}" for b in b"HTTPClient") in log, log[-3000:]
    assert log.count("option: 60 vendor-class") == 2      # both answers to the HTTP client, not the PXE one
