"""The lab's offline installer: a Debian kernel and an initrd built here from Debian's packages
(busybox, sfdisk, wipefs, LVM, mke2fs, mkfs.xfs and the kernel modules they need).

Its /init (provisioner/data/rehearsal/init) does what Anaconda does with the node's kickstart, for the
parts a rehearsal needs: the disk layout with real tools, the hosts and network files, the
callbacks, and a boot sector that prints a marker so the second boot can be told from the first.
A boot sector means nothing to UEFI: on a layout with an EFI System Partition it writes Debian's
signed shim as the removable-media loader (EFI/BOOT/BOOTX64.EFI), Debian's signed GRUB beside it
and a grub.cfg that prints the same marker and powers off: one chain for plain UEFI and Secure
Boot alike.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from provisioner.boot import initrd
from provisioner.render.renderer import PACKAGE_DIR

INIT = PACKAGE_DIR / "data" / "rehearsal" / "init"
BINARIES = ("/usr/sbin/sfdisk", "/usr/sbin/wipefs", "/usr/sbin/lvm", "/usr/sbin/mke2fs", "/usr/sbin/mkfs.xfs")
MODULES = ("e1000", "virtio_net", "virtio_pci", "ahci", "sd_mod", "dm_mod", "xfs", "ext4",
           "vfat", "nls_cp437", "nls_utf8", "nls_ascii")
# the ESP's file system; without dosfstools a UEFI layout fails at mkfs with the tool named
OPTIONAL_BINARIES = ("/usr/sbin/mkfs.fat",)
# what a UEFI machine boots from its ESP: the signed shim, else GRUB alone (no Secure Boot)
ESP_LOADERS = (("BOOTX64.EFI", ("/usr/lib/shim/shimx64.efi.signed", "/usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed",
                                "/usr/lib/grub/x86_64-efi/monolithic/grubx64.efi")),
               ("grubx64.efi", ("/usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed",
                                "/usr/lib/grub/x86_64-efi/monolithic/grubx64.efi")))
DISK_MARKER = b"PROVISIONER-DISK-BOOT"
LVM_CONF = """# no udev in the rehearsal initrd: device-mapper makes its own nodes
activation { udev_sync = 0 udev_rules = 0 }
devices { obtain_device_list_from_udev = 0 }
backup { backup = 0 archive = 0 }
"""


class RehearsalError(RuntimeError):
    pass


def boot_sector(marker: bytes = DISK_MARKER) -> bytes:
    """440 bytes of real-mode code that writes the marker to COM1 and halts (the partition
    table after it stays as sfdisk wrote it)."""
    msg = marker + b"\r\n\0"
    code = bytes([
        0xFA,                   # cli
        0x31, 0xC0,             # xor ax, ax
        0x8E, 0xD8,             # mov ds, ax
        0xBE, 0x16, 0x7C,       # mov si, 0x7c16 (msg)
        0xBA, 0xF8, 0x03,       # mov dx, 0x3f8 (COM1)
        0xAC,                   # next: lodsb
        0x84, 0xC0,             # test al, al
        0x74, 0x03,             # jz done
        0xEE,                   # out dx, al
        0xEB, 0xF8,             # jmp next
        0xF4,                   # done: hlt
        0xEB, 0xFD,             # jmp done
    ])
    assert len(code) == 0x16
    return (code + msg).ljust(440, b"\0")


def esp_grub_cfg(marker: bytes = DISK_MARKER) -> str:
    # read from EFI/debian (the signed GRUB's prefix) or beside the loader ($cmdpath). GRUB 2.06
    # sets `lockdown=y` when the firmware enforces Secure Boot: the second line tells a test
    # that the boot from disk ran under Secure Boot, not merely on its firmware
    return f"echo {marker.decode()}\necho \"secure boot lockdown=$lockdown\"\nsleep 1\nhalt\n"


def kernel() -> Path:
    found = initrd.newest_kernel()
    if found is None:
        raise RehearsalError("no kernel in /boot: apt-get install linux-image-amd64")
    return found


def _libraries(binary: str) -> list[str]:
    out = subprocess.run(["ldd", binary], capture_output=True, text=True).stdout
    libs = []
    for line in out.splitlines():
        parts = line.split()
        for p in parts:
            if p.startswith("/"):
                libs.append(p)
    return libs


def build_initrd(dest: Path, kernel_path: Path | None = None) -> Path:
    kernel_path = kernel_path or kernel()
    release = kernel_path.name.removeprefix("vmlinuz-")
    for tool in ("/bin/busybox", *BINARIES):
        if not os.path.exists(tool):
            raise RehearsalError(f"{tool} is missing (apt-get install busybox-static fdisk lvm2 e2fsprogs xfsprogs)")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for d in ("bin", "sbin", "etc/lvm", "lib/modules", "proc", "sys", "dev", "tmp", "mnt"):
            (root / d).mkdir(parents=True, exist_ok=True)
        initrd.add_busybox(root)
        for binary in BINARIES + tuple(b for b in OPTIONAL_BINARIES if os.path.exists(b)):
            shutil.copy2(binary, root / "sbin" / Path(binary).name)
            for lib in _libraries(binary):
                target = root / lib.lstrip("/")
                target.parent.mkdir(parents=True, exist_ok=True)
                if not target.exists():
                    shutil.copy2(lib, target)
        (root / "sbin/mkfs.ext4").symlink_to("mke2fs")
        order = initrd.add_modules(root, release, MODULES)
        if not order:
            raise RehearsalError(f"no kernel modules found for {release}")
        (root / "etc/modules.order").write_text("\n".join(order) + "\n")
        (root / "etc/lvm/lvm.conf").write_text(LVM_CONF)
        (root / "etc/mbr.bin").write_bytes(boot_sector())
        (root / "etc/efi").mkdir()
        for name, candidates in ESP_LOADERS:
            found = next((c for c in candidates if os.path.exists(c)), None)
            if found:
                shutil.copy2(found, root / "etc/efi" / name)
        (root / "etc/efi/grub.cfg").write_text(esp_grub_cfg())
        shutil.copy2(INIT, root / "init")
        (root / "init").chmod(0o755)
        dest.write_bytes(initrd.pack(root))
    return dest


def make_tree(work: Path, name: str = "CentOS Stream", version: str = "9", arch: str = "x86_64") -> Path:
    """A tree `distro import` takes: the Debian kernel and the rehearsal initrd, with checksums,
    under the name the site boots, so the lab boots the rehearsal through the ordinary path."""
    tree = work / "rehearsal-tree"
    pxe = tree / "images" / "pxeboot"
    pxe.mkdir(parents=True, exist_ok=True)
    shutil.copy2(kernel(), pxe / "vmlinuz")
    build_initrd(pxe / "initrd.img")
    sums = {rel: hashlib.sha256((tree / rel).read_bytes()).hexdigest()
            for rel in ("images/pxeboot/vmlinuz", "images/pxeboot/initrd.img")}
    (tree / ".treeinfo").write_text(
        f"[release]\nname = {name}\nversion = {version}\n[tree]\narch = {arch}\n[images-{arch}]\n"
        "kernel = images/pxeboot/vmlinuz\ninitrd = images/pxeboot/initrd.img\n[checksums]\n"
        + "".join(f"{rel} = sha256:{digest}\n" for rel, digest in sums.items()))
    return tree
