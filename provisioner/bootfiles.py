"""Boot loaders from Debian's packages, copied into <state>/bootfiles/ for the TFTP server.

The names on the left are what DHCP hands out and what the boot loaders ask for.

UEFI clients get a signed shim, which loads `grubx64.efi` from where it came from (TFTP, or the
boot port for HTTP Boot); under Secure Boot the shim checks GRUB, and GRUB (through the shim)
checks the kernel, against the key of the vendor the shim was built for. So the pair must come
from the vendor that signed the kernel being booted: the imported distribution's own
`EFI/BOOT/BOOTX64.EFI` and `grubx64.efi` (distros.py keeps them beside its kernel) are served
when it has them, and Debian's signed shim and network GRUB otherwise.
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
    # signed by Microsoft's UEFI CA, embedding Debian's key; then GRUB signed with that key.
    # Without shim-signed a UEFI client still boots GRUB directly (no Secure Boot).
    Source("shimx64.efi", ("/usr/lib/shim/shimx64.efi.signed",), "shim-signed"),
    Source("grubx64.efi", ("/usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed",
                           "/usr/lib/grub/x86_64-efi/monolithic/grubnetx64.efi"), "grub-efi-amd64-signed"),
    Source("undionly.kpxe", ("/usr/lib/ipxe/undionly.kpxe",), "ipxe"),
    Source("ipxe.efi", ("/usr/lib/ipxe/ipxe.efi",), "ipxe"),
)


# the UEFI pair, as DHCP and the shim name them, and where a distribution's tree keeps them
DISTRO_LOADERS = {"shimx64.efi": "EFI/BOOT/BOOTX64.EFI", "grubx64.efi": "EFI/BOOT/grubx64.efi"}
DISTRO_LOADER_DIR = "efi"       # inside <state>/distros/<name>/


def bootfiles_dir(state_dir: Path) -> Path:
    return Path(state_dir) / BOOTFILES_DIR


def loader_path(state_dir: Path, distro: str, name: str) -> Path | None:
    """The file sent for a loader name: the distribution's own shim and GRUB when it brought
    them (only the pair together: a shim trusts only its own vendor's GRUB), else ours."""
    from provisioner.distros import distro_dir
    from provisioner.tftp import safe_static_path
    if name in DISTRO_LOADERS and "/" not in distro and not distro.startswith("."):
        own = distro_dir(state_dir) / distro / DISTRO_LOADER_DIR
        if all((own / n).is_file() for n in DISTRO_LOADERS):
            return own / name
    path = safe_static_path(bootfiles_dir(state_dir), name)
    if path is None and name == "shimx64.efi":
        # no shim-signed: GRUB in its place still boots a UEFI machine without Secure Boot
        path = safe_static_path(bootfiles_dir(state_dir), "grubx64.efi")
    return path


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
