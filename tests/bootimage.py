"""A real kernel (Debian's linux-image) and a tiny initrd (busybox) for PXE boot tests.

The initrd's /init prints the kernel command line on the serial console behind a marker and
powers off, so a test can read what the boot loader handed the kernel.
"""

from __future__ import annotations

import glob
import os
import shutil
from pathlib import Path

from provisioner.boot.initrd import pack as pack_initrd

MARKER = "PROVISIONER-CMDLINE:"

INIT = f"""#!/bin/busybox sh
/bin/busybox mkdir -p /proc
/bin/busybox mount -t proc proc /proc
echo "{MARKER} $(/bin/busybox cat /proc/cmdline)"
/bin/busybox poweroff -f
"""


def debian_kernel() -> Path | None:
    found = sorted(glob.glob("/boot/vmlinuz-*"))
    return Path(found[-1]) if found else None


def have_boot_tools() -> bool:
    return debian_kernel() is not None and os.path.exists("/bin/busybox") and shutil.which("cpio") is not None


def build_initrd(dest: Path) -> Path:
    root = dest.parent / "initrd-root"
    (root / "bin").mkdir(parents=True, exist_ok=True)
    shutil.copy2("/bin/busybox", root / "bin" / "busybox")
    (root / "init").write_text(INIT)
    (root / "init").chmod(0o755)
    dest.write_bytes(pack_initrd(root))
    return dest
