"""Boot loaders from Debian's packages, copied into <state>/bootfiles/ for the TFTP server.

The names on the left are what DHCP hands out and what the boot loaders ask for.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

BOOTFILES_DIR = "bootfiles"
SYSLINUX_BIOS = "/usr/lib/syslinux/modules/bios"


@dataclass(frozen=True)
class Source:
    name: str
    candidates: tuple[str, ...]
    package: str
    required: bool = False


SOURCES = (
    Source("pxelinux.0", ("/usr/lib/PXELINUX/pxelinux.0",), "pxelinux", True),
    Source("lpxelinux.0", ("/usr/lib/PXELINUX/lpxelinux.0",), "pxelinux", True),
    *(Source(m, (f"{SYSLINUX_BIOS}/{m}",), "syslinux-common", m == "ldlinux.c32")
      for m in ("ldlinux.c32", "libutil.c32", "libcom32.c32", "menu.c32", "vesamenu.c32", "chain.c32")),
    # a signed shim + GRUB where present (Secure Boot), else the unsigned network GRUB
    Source("shimx64.efi", ("/usr/lib/shim/shimx64.efi.signed",), "shim-signed"),
    Source("grubx64.efi", ("/usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed",
                           "/usr/lib/grub/x86_64-efi/monolithic/grubnetx64.efi"), "grub-efi-amd64-bin"),
    Source("undionly.kpxe", ("/usr/lib/ipxe/undionly.kpxe",), "ipxe"),
    Source("ipxe.efi", ("/usr/lib/ipxe/ipxe.efi",), "ipxe"),
)


def bootfiles_dir(state_dir: Path) -> Path:
    return Path(state_dir) / BOOTFILES_DIR


def import_bootfiles(state_dir: Path, sources=SOURCES) -> tuple[list[str], list[str]]:
    """Copy what is installed; return (imported, missing) lines. A missing required loader is an error."""
    dest = bootfiles_dir(state_dir)
    dest.mkdir(parents=True, exist_ok=True)
    done, missing, required = [], [], []
    for src in sources:
        found = next((Path(c) for c in src.candidates if Path(c).is_file()), None)
        if found is None:
            line = f"{src.name}: not found (apt-get install {src.package})"
            (required if src.required else missing).append(line)
            continue
        tmp = dest / f".{src.name}.tmp"
        shutil.copyfile(found, tmp)
        tmp.replace(dest / src.name)
        done.append(f"{src.name} <- {found}")
    if required:
        raise FileNotFoundError("required boot loaders are missing: " + "; ".join(required))
    return done, missing
