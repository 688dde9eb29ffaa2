"""The inspection ramdisk discovery boots: a Debian kernel and an initrd of busybox, the NIC
and disk drivers, and a shell /init (provisioner/data/inspect/init) that reports the machine
to POST /discover/<mac> and powers it off. Built as the lab's rehearsal installer is
(provisioner/lab/rehearsal.py), kept in <state>/inspect/ and served as /boot/inspect/{vmlinuz,
initrd.img} over TFTP and HTTP (pxe.py)."""

from __future__ import annotations

import glob
import gzip
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from provisioner.render.renderer import PACKAGE_DIR

INSPECT_DIR = "inspect"
FILES = ("vmlinuz", "initrd.img")
DATA = PACKAGE_DIR / "data" / "inspect"
BUSYBOX = "/bin/busybox"        # busybox-static: nothing else to copy with it
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
    found = sorted(glob.glob("/boot/vmlinuz-*"))
    if not found:
        raise InspectionError("no kernel in /boot: apt-get install linux-image-amd64")
    return Path(found[-1])


def build(state_dir: Path, kernel: Path | None = None) -> list[str]:
    """Build the ramdisk into <state>/inspect/ (replacing what is there only once both files are
    made); return what was built, one line each."""
    kernel = kernel or debian_kernel()
    release = kernel.name.removeprefix("vmlinuz-")
    if not os.path.exists(BUSYBOX):
        raise InspectionError(f"{BUSYBOX} is missing (apt-get install busybox-static)")
    dest = inspect_dir(state_dir)
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "root"
        for d in ("bin", "etc", "lib/modules", "proc", "sys", "dev", "tmp", "run"):
            (root / d).mkdir(parents=True, exist_ok=True)
        shutil.copy2(BUSYBOX, root / "bin/busybox")
        applets = subprocess.run([BUSYBOX, "--list"], capture_output=True, text=True, check=True).stdout.split()
        for applet in applets:
            if not (root / "bin" / applet).exists():
                (root / "bin" / applet).symlink_to("busybox")
        order = _modules(root, release)
        (root / "etc/modules.order").write_text("".join(f"{m}\n" for m in order))
        for name, target in (("init", "init"), ("udhcpc.script", "etc/udhcpc.script")):
            shutil.copy2(DATA / name, root / target)
            (root / target).chmod(0o755)
        (Path(tmp) / "initrd.img").write_bytes(_pack(root))
        shutil.copy2(kernel, Path(tmp) / "vmlinuz")
        for name in FILES:
            os.replace(shutil.copy2(Path(tmp) / name, dest / f".{name}.tmp"), dest / name)
    return [f"{INSPECT_DIR}/vmlinuz <- {kernel}",
            f"{INSPECT_DIR}/initrd.img <- busybox, /init, {len(order)} kernel modules of {release}"]


def _pack(root: Path) -> bytes:
    """A directory as the kernel takes an initrd: a gzipped newc cpio archive."""
    files = subprocess.run(["find", "."], cwd=root, capture_output=True, text=True, check=True).stdout
    archive = subprocess.run(["cpio", "-o", "-H", "newc", "--quiet"], cwd=root, input=files.encode(),
                             capture_output=True, check=True).stdout
    return gzip.compress(archive, compresslevel=6)


def _modules(root: Path, release: str) -> list[str]:
    order: list[str] = []
    for module in MODULES:
        deps = subprocess.run(["modprobe", "-S", release, "--show-depends", module], capture_output=True,
                              text=True).stdout
        for line in deps.splitlines():
            if line.startswith("insmod "):
                path = line.split()[1]
                rel = os.path.relpath(path, f"/lib/modules/{release}")
                if rel not in order:
                    order.append(rel)
                    target = root / "lib/modules" / rel
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(path, target)
    if not order:
        raise InspectionError(f"no kernel modules found for {release} (apt-get install linux-image-{release})")
    return order
