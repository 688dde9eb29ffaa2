"""What every initrd built here shares (the inspection ramdisk, the lab's rehearsal installer):
busybox with its applets, kernel modules in load order, and the gzipped cpio the kernel takes."""

from __future__ import annotations

import glob
import gzip
import os
import shutil
import subprocess
from pathlib import Path

BUSYBOX = "/bin/busybox"        # busybox-static: nothing else to copy with it


def newest_kernel() -> Path | None:
    found = sorted(glob.glob("/boot/vmlinuz-*"))
    return Path(found[-1]) if found else None


def add_busybox(root: Path) -> None:
    """busybox at root/bin, a link per applet."""
    shutil.copy2(BUSYBOX, root / "bin/busybox")
    applets = subprocess.run([BUSYBOX, "--list"], capture_output=True, text=True, check=True).stdout.split()
    for applet in applets:
        if not (root / "bin" / applet).exists():
            (root / "bin" / applet).symlink_to("busybox")


def add_modules(root: Path, release: str, modules) -> list[str]:
    """Copy `modules` of kernel `release` and what they depend on under root/lib/modules; return
    their paths (relative to /lib/modules/<release>) in the order they must be loaded. A module
    this kernel does not have is left out."""
    order: list[str] = []
    for module in modules:
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
    return order


def pack(root: Path) -> bytes:
    """A directory as the kernel takes an initrd: a gzipped newc cpio archive."""
    files = subprocess.run(["find", "."], cwd=root, capture_output=True, text=True, check=True).stdout
    archive = subprocess.run(["cpio", "-o", "-H", "newc", "--quiet"], cwd=root, input=files.encode(),
                             capture_output=True, check=True).stdout
    return gzip.compress(archive, compresslevel=6)
