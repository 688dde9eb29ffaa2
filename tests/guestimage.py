"""The verification VM's disk: a tiny guest that boots under plain QEMU and reaches a login prompt
on its serial console, built here from this machine's own Debian kernel and busybox.

Why not CirrOS: nothing inside the lab reaches the internet, and CirrOS is not packaged. What
this is instead is what CirrOS is, minus its userland: a whole-disk image with a boot loader
(SYSLINUX on a FAT file system, as CirrOS's own images once did), a real distribution kernel,
and an initramfs whose init (busybox) runs getty on ttyS0, which prints "<hostname> login:".
Nova boots it like any other image (BIOS -> boot sector -> kernel), so a prompt on the console
means the instance really booted; the image itself knows nothing of OpenStack. It also loads
virtio-net and asks for a DHCP lease, and prints what it got, so a console shows whether
Neutron's DHCP agent answered (the check is the prompt; the lease is told, not required).
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
from pathlib import Path

from provisioner.boot.initrd import pack as pack_initrd

HOSTNAME = "test-vm"
# virtio-net and what it needs, in load order (Debian builds them as modules)
MODULES = ("virtio_ring", "virtio", "virtio_pci_legacy_dev", "virtio_pci_modern_dev", "virtio_pci",
           "failover", "net_failover", "virtio_net")

INIT = """#!/bin/busybox sh
/bin/busybox --install -s /bin
mkdir -p /proc /sys /dev /etc /root /tmp
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
hostname {hostname}
for m in {modules}; do [ -f /lib/modules/$m.ko ] && insmod /lib/modules/$m.ko 2>/dev/null; done
exec /bin/init
"""

UDHCPC = """#!/bin/sh
[ "$1" = bound ] && ip addr add "$ip/${mask:-24}" dev "$interface" && echo "$ip" > /tmp/lease
exit 0
"""

# the lease is asked for beside getty (once), so a network that never answers cannot hold the prompt
DHCP = """#!/bin/sh
ip link set lo up
if udhcpc -i eth0 -n -q -t 5 -T 2 -s /etc/udhcpc.script >/dev/null 2>&1; then
    echo "test-vm: DHCP lease $(cat /tmp/lease)"
else
    echo "test-vm: no DHCP lease"
fi
"""

INITTAB = "::once:/etc/dhcp.sh\nttyS0::respawn:/bin/getty -L 115200 ttyS0 vt100\n"

SYSLINUX_CFG = """DEFAULT linux
PROMPT 0
TIMEOUT 0
SERIAL 0 115200
LABEL linux
  KERNEL vmlinuz
  INITRD initrd.gz
  APPEND console=tty0 console=ttyS0,115200
"""


def kernel() -> Path | None:
    found = sorted(glob.glob("/boot/vmlinuz-*"))
    return Path(found[-1]) if found else None


def missing_tools() -> str | None:
    if kernel() is None:
        return "no kernel under /boot (linux-image-amd64)"
    for tool, pkg in (("syslinux", "syslinux"), ("mcopy", "mtools"), ("mkfs.vfat", "dosfstools"),
                      ("qemu-img", "qemu-utils"), ("cpio", "cpio")):
        if shutil.which(tool) is None:
            return f"{tool} is not installed ({pkg}; scripts/bootstrap installs it)"
    if not os.path.exists("/bin/busybox"):
        return "no /bin/busybox (busybox-static)"
    return None


def build(work: Path) -> Path:
    """Build the image under work/; returns the qcow2 file (about 12 MiB)."""
    vmlinuz = kernel()
    release = vmlinuz.name.removeprefix("vmlinuz-")
    root = work / "guest-initrd"
    for d in ("bin", "etc", "lib/modules"):
        (root / d).mkdir(parents=True, exist_ok=True)
    shutil.copy2("/bin/busybox", root / "bin" / "busybox")
    for name in MODULES:
        found = glob.glob(f"/lib/modules/{release}/kernel/**/{name}.ko", recursive=True)
        if found:
            shutil.copy2(found[0], root / "lib/modules" / f"{name}.ko")
    (root / "init").write_text(INIT.format(hostname=HOSTNAME, modules=" ".join(MODULES)))
    (root / "init").chmod(0o755)
    (root / "etc/udhcpc.script").write_text(UDHCPC)
    (root / "etc/udhcpc.script").chmod(0o755)
    (root / "etc/dhcp.sh").write_text(DHCP)
    (root / "etc/dhcp.sh").chmod(0o755)
    (root / "etc/inittab").write_text(INITTAB)
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "etc/shadow").write_text("root:*:1:0:99999:7:::\n")     # no password logs in
    initrd = work / "initrd.gz"
    initrd.write_bytes(pack_initrd(root))

    # a FAT file system over the whole disk, SYSLINUX in its boot sector: the BIOS boots it
    size_kib = (vmlinuz.stat().st_size + initrd.stat().st_size) // 1024 + 2048
    raw = work / "guest.raw"
    raw.unlink(missing_ok=True)
    _run(["mkfs.vfat", "-C", "-n", "TESTVM", str(raw), str(size_kib)])
    _run(["syslinux", "--install", str(raw)])
    (work / "syslinux.cfg").write_text(SYSLINUX_CFG)
    _run(["mcopy", "-i", str(raw), str(vmlinuz), "::vmlinuz"])
    _run(["mcopy", "-i", str(raw), str(initrd), "::initrd.gz"])
    _run(["mcopy", "-i", str(raw), str(work / "syslinux.cfg"), "::syslinux.cfg"])
    image = work / "test-vm.qcow2"
    _run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(image)])
    raw.unlink()
    return image


def _run(argv: list[str]) -> None:
    r = subprocess.run(argv, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {r.stderr.strip() or r.stdout.strip()}")
