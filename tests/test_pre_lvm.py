"""The kickstart's %pre on a real disk in a real kernel: a reinstall over another system's LVM,
and a disk whose I/O sizes would move LVM's data alignment.

QEMU (TCG, no network) boots the lab's rehearsal kernel and initrd (provisioner/lab/rehearsal.py)
with an overlay: lsblk, the LVM command names Anaconda's environment has, a curl that prints what
%pre reports, and an /init that
1. puts "another system" on disk A: a GPT, a volume group named `centos` (not one of the
   layout's) with a swap LV in use and a root LV, all active, as Anaconda finds a disk it reinstalls;
2. runs the controller's rendered %pre against disk A, then does what Anaconda's blivet does on
   the new partitions (blivet/formats/lvmpv.py: pvcreate with data_alignment 0, i.e. LVM's
   default, then vgcreate with the kickstart's 4 MiB extents) and prints each PV's pe_start and
   each VG's extent count;
3. runs the same %pre against disk B, which reports a 4 MiB optimal I/O size: LVM would align
   its PVs' data to 4 MiB there (lvm2 lib/metadata/metadata.c set_pe_align), so %pre must refuse
   it, before wiping anything.
"""

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from provisioner.boot.initrd import pack as pack_initrd
from provisioner.lab import rehearsal
from provisioner.render.kscheck import check_kickstart

CONTROLLER = "52:54:00:0c:00:05"
DISK_BYTES = 80_026_361_856          # the report's controller disk
LVM_NAMES = ("pvs", "vgs", "lvs", "vgchange", "pvcreate", "vgcreate", "lvcreate")
EXTRA_MODULES = ("virtio_pci", "virtio_scsi")

pytestmark = pytest.mark.skipif(
    shutil.which("qemu-system-x86_64") is None or shutil.which("lsblk") is None or shutil.which("sfdisk") is None
    or not list(Path("/boot").glob("vmlinuz-*")) or not Path("/usr/sbin/lvm").exists(),
    reason="needs qemu-system-x86_64, a Debian kernel in /boot, lsblk, sfdisk and lvm2")

INIT = r"""#!/bin/sh
export PATH=/usr/bin:/usr/sbin:/bin:/sbin
mkdir -p /proc /sys /dev /tmp /run/lvm
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
exec > /dev/console 2>&1
say() { echo "PRETEST $*"; }
for list in /etc/modules.order /etc/extra-modules.order; do
    while read -r m; do insmod "/lib/modules/$m" 2>/dev/null; done < "$list"
done
A=""; B=""
for i in $(seq 100); do
    for d in /sys/block/sd*; do
        [ -e "$d/device" ] || continue
        case $(basename "$(readlink -f "$d/device")") in
            *:0) A=/dev/${d##*/} ;;
            *:1) B=/dev/${d##*/} ;;
        esac
    done
    [ -b "$A" ] && [ -b "$B" ] && break
    sleep 0.2
done
say "disks A=$A B=$B B.optimal_io_size=$(cat /sys/block/${B#/dev/}/queue/optimal_io_size)"

# 1. another system on A, active, its swap in use
sfdisk -q "$A" <<'OTHER'
label: gpt
size=512MiB, type=L
size=4GiB, type=V
OTHER
lvm pvcreate -q -y "${A}2" && lvm vgcreate -q centos "${A}2" \
    && lvm lvcreate -q -y -Zn -L 512m -n swap centos && lvm lvcreate -q -y -Zn -L 1g -n root centos \
    && mkswap /dev/mapper/centos-swap >/dev/null && swapon /dev/mapper/centos-swap || say "SETUP FAILED"
say "before: vgs=$(lvm vgs --noheadings -o vg_name | tr -d ' ') swaps=$(($(wc -l < /proc/swaps) - 1))"

# 2. the %pre as Anaconda runs it, then blivet's pvcreate and vgcreate
sed "s|^disk=/dev/.*|disk=$A|" /pre.sh > /tmp/pre-a.sh
sh /tmp/pre-a.sh > /tmp/pre-a.log 2>&1
say "pre A exit $?"
sed 's/^/PRETEST log A: /' /tmp/pre-a.log
say "after: vgs=$(lvm vgs --noheadings -o vg_name 2>/dev/null | tr -d ' ' | tr '\n' ,) swaps=$(($(wc -l < /proc/swaps) - 1))"
while read -r vg parts; do
    pvs=""
    for p in $parts; do pvs="$pvs ${A}${p#sda}"; done
    # shellcheck disable=SC2086
    lvm pvcreate -q -y $pvs >/dev/null && lvm vgcreate -q -s 4m "$vg" $pvs >/dev/null || say "VGCREATE FAILED $vg"
    say "vg $vg extents=$(lvm vgs --noheadings -o vg_extent_count "$vg" | tr -d ' ') pe_start=$(lvm pvs --noheadings --units b --nosuffix -o pe_start $pvs | tr -d ' ' | sort -u | tr '\n' ,)"
done < /volgroups
lvm vgchange -an >/dev/null 2>&1

# 3. a disk whose optimal I/O size LVM would align to
sed "s|^disk=/dev/.*|disk=$B|" /pre.sh > /tmp/pre-b.sh
sh /tmp/pre-b.sh > /tmp/pre-b.log 2>&1
say "pre B exit $?"
sed 's/^/PRETEST log B: /' /tmp/pre-b.log
sync
say DONE
poweroff -f
"""

CURL = r"""#!/bin/sh
# what %pre's report() would post, on the console
for a; do case $a in @*) echo "PRETEST report $(cat "${a#@}")" ;; esac; done
exit 0
"""


def _module_paths(release: str, names) -> list[str]:
    out = []
    for name in names:
        deps = subprocess.run(["modprobe", "-S", release, "--show-depends", name], capture_output=True,
                              text=True).stdout
        for line in deps.splitlines():
            if line.startswith("insmod "):
                rel = os.path.relpath(line.split()[1], f"/lib/modules/{release}")
                if rel not in out:
                    out.append(rel)
    return out


def _initrd(work: Path, pre: str, volgroups: list[tuple[str, list[str]]]) -> Path:
    kernel = rehearsal.kernel()
    release = kernel.name.removeprefix("vmlinuz-")
    base = rehearsal.build_initrd(work / "base.img", kernel)
    root = work / "overlay"
    for d in ("usr/bin", "usr/sbin", "etc", "lib/modules"):
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "init").write_text(INIT)
    (root / "init").chmod(0o755)
    (root / "pre.sh").write_text(pre)
    (root / "volgroups").write_text("".join(f"{vg} {' '.join(parts)}\n" for vg, parts in volgroups))
    (root / "usr/bin/curl").write_text(CURL)
    (root / "usr/bin/curl").chmod(0o755)
    lsblk = shutil.which("lsblk")
    shutil.copy2(lsblk, root / "usr/bin/lsblk")
    for lib in rehearsal._libraries(lsblk):
        target = root / lib.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(lib, target)
    for name in LVM_NAMES:
        (root / "usr/sbin" / name).symlink_to("/sbin/lvm")
    mods = _module_paths(release, EXTRA_MODULES)
    assert mods, "no virtio_scsi module for the kernel"
    for rel in mods:
        target = root / "lib/modules" / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(Path("/lib/modules") / release / rel, target)
    (root / "etc/extra-modules.order").write_text("\n".join(mods) + "\n")
    # the kernel unpacks concatenated archives in order: the overlay's /init replaces the base's
    initrd = work / "initrd.img"
    initrd.write_bytes(base.read_bytes() + pack_initrd(root))
    return initrd


def _disk(path: Path, table: str | None = None) -> Path:
    with open(path, "wb") as f:
        f.truncate(DISK_BYTES)
    if table:
        subprocess.run(["sfdisk", "-q", str(path)], input=table, text=True, check=True)
    return path


def _partitions(image: Path) -> list[tuple[int, str]]:
    out = json.loads(subprocess.run(["sfdisk", "-J", str(image)], capture_output=True, text=True,
                                    check=True).stdout)["partitiontable"]
    return [(p["size"], p["type"]) for p in out["partitions"]]


def test_pre_takes_over_a_disk_with_another_systems_active_lvm_and_refuses_a_misaligning_one(client, tmp_path):
    ks = client.get(f"/ks/{CONTROLLER}").get_data(as_text=True)
    h = check_kickstart(ks).handler
    pre = h.scripts[0].script
    assert h.scripts[0].type == 0 and "lsblk" in pre
    volgroups = [(vg.vgname, [p.removeprefix("pv.") for p in vg.physvols]) for vg in h.volgroup.vgList]
    lv_mib = {}
    for lv in h.logvol.lvList:
        lv_mib[lv.vgname] = lv_mib.get(lv.vgname, 0) + lv.size
    sfdisk = re.search(r"<<'SFDISK'.*?\n(.*?)SFDISK\n", pre, re.S).group(1)
    wanted = []
    for line in sfdisk.splitlines():
        m = re.match(r"size=(\d+)MiB, type=(\w+)", line)
        if m:
            wanted.append((int(m.group(1)) * 2048, m.group(2)))
    part_mib = {f"sda{i + 1}": sectors // 2048 for i, (sectors, _) in enumerate(wanted)}

    a = _disk(tmp_path / "a.img")
    b = _disk(tmp_path / "b.img", "label: dos\nsize=100MiB, type=83\n")
    b_before = _partitions(b)
    console = tmp_path / "console.log"
    initrd = _initrd(tmp_path, pre, volgroups)
    qemu = subprocess.Popen(
        ["qemu-system-x86_64", "-machine", "pc", "-accel", "tcg", "-m", "512", "-smp", "1",
         "-display", "none", "-monitor", "none", "-serial", f"file:{console}", "-nic", "none", "-no-reboot",
         "-kernel", str(rehearsal.kernel()), "-initrd", str(initrd),
         "-append", "console=ttyS0 panic=-1 loglevel=4",
         "-device", "virtio-scsi-pci,id=scsi0",
         "-drive", f"file={a},if=none,id=da,format=raw,cache=unsafe",
         "-device", "scsi-hd,drive=da,bus=scsi0.0,channel=0,scsi-id=0,lun=0",
         "-drive", f"file={b},if=none,id=db,format=raw,cache=unsafe",
         "-device", "scsi-hd,drive=db,bus=scsi0.0,channel=0,scsi-id=0,lun=1,opt_io_size=4194304"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 170
        while qemu.poll() is None and time.monotonic() < deadline:
            time.sleep(1)
        text = console.read_text(errors="replace") if console.exists() else ""
        assert qemu.poll() is not None, "the VM did not finish in time:\n" + text[-4000:]
    finally:
        if qemu.poll() is None:
            qemu.kill()
            qemu.wait()
    lines = [ln.removeprefix("PRETEST ").rstrip("\r") for ln in text.splitlines() if ln.startswith("PRETEST ")]
    said = "\n".join(lines)
    assert "DONE" in lines, text[-4000:]
    assert "SETUP FAILED" not in said, said

    # the other system was there, active, swapping...
    assert "before: vgs=centos swaps=1" in lines, said
    # ...and %pre took the disk over: the table is the layout's, nothing of the old system is active
    assert "pre A exit 0" in lines, said
    assert "after: vgs= swaps=0" in lines, said
    assert _partitions(a) == wanted
    # blivet's own pvcreate then starts every PV's data at 1 MiB, so each VG has the extents
    # the table's arithmetic gives and holds its logical volumes
    for vg, parts in volgroups:
        extents = sum((part_mib[p] - 1) // 4 for p in parts)
        assert f"vg {vg} extents={extents} pe_start=1048576," in lines, said
        assert lv_mib.get(vg, 0) <= extents * 4, vg

    # disk B: refused with the reason, before anything was wiped
    assert "B.optimal_io_size=4194304" in said, said
    assert "pre B exit 1" in lines, said
    # the curl stub prints to %pre's own output, which the init logs per disk
    reports = {disk: [json.loads(ln.removeprefix(f"log {disk}: PRETEST report ")) for ln in lines
                      if ln.startswith(f"log {disk}: PRETEST report ")] for disk in "AB"}
    assert [r["type"] for r in reports["A"]] == ["installing"], said
    assert [r["type"] for r in reports["B"]] == ["installing", "failed"], said
    failed = reports["B"][1:]
    assert len(failed) == 1, said
    assert re.match(r"/dev/sd[a-z] reports optimal_io_size=4194304 bytes, which does not divide 1 MiB",
                    failed[0]["detail"]), failed
    assert _partitions(b) == b_before
