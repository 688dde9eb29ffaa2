"""The inspection ramdisk discovery boots: a Debian kernel and an initrd of busybox, the NIC
and disk drivers, and a shell /init (provisioner/data/inspect/init) that reports the machine
to POST /discover/<mac> and powers it off. Built as the lab's rehearsal installer is
(provisioner/lab/rehearsal.py), kept in <state>/inspect/ and served as /boot/inspect/{vmlinuz,
initrd.img} over TFTP and HTTP (pxe.py)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from provisioner.boot import initrd
from provisioner.render.renderer import PACKAGE_DIR

INSPECT_DIR = "inspect"
FILES = ("vmlinuz", "initrd.img")
DATA = PACKAGE_DIR / "data" / "inspect"
# NICs and disk controllers of common servers and of QEMU/libvirt; those this kernel lacks are skipped
MODULES = ("e1000", "e1000e", "igb", "ixgbe", "tg3", "bnx2", "r8169", "virtio_net", "virtio_pci",
           "ahci", "ata_piix", "sd_mod", "virtio_blk", "virtio_scsi", "nvme", "megaraid_sas", "mpt3sas")


class InspectionError(RuntimeError):
    pass


def inspect_dir(state_dir: Path) -> Path:
    return Path(state_dir) / INSPECT_DIR


def inspect_file(state_dir: Path, name: str) -> Path | None:
    if name not in FILES:
        return None
    path = inspect_dir(state_dir) / name
    return path if path.is_file() else None


def debian_kernel() -> Path:
    found = initrd.newest_kernel()
    if found is None:
        raise InspectionError("no kernel in /boot: apt-get install linux-image-amd64")
    return found


def build(state_dir: Path, kernel: Path | None = None) -> list[str]:
    """Build the ramdisk into <state>/inspect/ (replacing what is there only once both files are
    made); return what was built, one line each."""
    kernel = kernel or debian_kernel()
    release = kernel.name.removeprefix("vmlinuz-")
    if not os.path.exists(initrd.BUSYBOX):
        raise InspectionError(f"{initrd.BUSYBOX} is missing (apt-get install busybox-static)")
    dest = inspect_dir(state_dir)
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "root"
        for d in ("bin", "etc", "lib/modules", "proc", "sys", "dev", "tmp", "run"):
            (root / d).mkdir(parents=True, exist_ok=True)
        initrd.add_busybox(root)
        order = initrd.add_modules(root, release, MODULES)
        if not order:
            raise InspectionError(f"no kernel modules found for {release} (apt-get install linux-image-{release})")
        (root / "etc/modules.order").write_text("".join(f"{m}\n" for m in order))
        for name, target in (("init", "init"), ("udhcpc.script", "etc/udhcpc.script")):
            shutil.copy2(DATA / name, root / target)
            (root / target).chmod(0o755)
        (Path(tmp) / "initrd.img").write_bytes(initrd.pack(root))
        shutil.copy2(kernel, Path(tmp) / "vmlinuz")
        for name in FILES:
            os.replace(shutil.copy2(Path(tmp) / name, dest / f".{name}.tmp"), dest / name)
    return [f"{INSPECT_DIR}/vmlinuz <- {kernel}",
            f"{INSPECT_DIR}/initrd.img <- busybox, /init, {len(order)} kernel modules of {release}"]

