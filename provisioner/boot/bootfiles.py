"""Boot loaders from Debian's packages, copied into <state>/bootfiles/ for the TFTP server.

The names on the left are what DHCP hands out and what the boot loaders ask for.

UEFI clients get a signed shim, which loads `grubx64.efi` from where it came from (TFTP, or the
boot port for HTTP Boot); under Secure Boot the shim checks GRUB, and GRUB (through the shim)
checks the kernel, against the key of the vendor the shim was built for. So the pair must come
from the vendor that signed the kernel being booted: the imported distribution's own
`EFI/BOOT/BOOTX64.EFI` and `grubx64.efi` (distros.py keeps them beside its kernel) are served
when it has them, and Debian's signed shim and network GRUB otherwise.

UEFI HTTP Boot clients get `grubx64-http.efi` instead, straight from DHCP: Debian 12's network
GRUB (signed or not) has no `http` module, so `import` builds one with `grub-mkimage` from the
modules of grub-efi-amd64-bin on this machine. It is unsigned: no Secure Boot over HTTP Boot.
"""

from __future__ import annotations

import shutil
import subprocess
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


# GRUB for UEFI HTTP Boot: what grub.j2 uses (linux, initrd, search --file, chainloader, exit, if)
# and the network over HTTP. The prefix has no device: GRUB takes (http,<server>:<port>) from the
# firmware's URI device path, so its first request is /grub/grub.cfg on the boot port (answered
# with grub-generic.j2, which moves on to grub.cfg-01-<mac>), and relative kernel and initrd
# paths come from the same server.
HTTP_GRUB = "grubx64-http.efi"
HTTP_GRUB_MODULES_DIR = "/usr/lib/grub/x86_64-efi"
HTTP_GRUB_MODULES = ("efinet", "net", "http", "tftp", "normal", "configfile", "echo", "test", "true",
                     "linux", "chain", "search", "search_fs_file", "part_gpt", "part_msdos", "fat",
                     "ext2", "minicmd", "reboot", "halt", "sleep", "gzio", "all_video", "efi_gop")
HTTP_GRUB_PREFIX = "/grub"


def build_http_grub(dest: Path, modules_dir: str = HTTP_GRUB_MODULES_DIR) -> str:
    """Build the HTTP Boot GRUB into dest; return what it was built from. Raises
    FileNotFoundError (what to install) when grub-mkimage or the modules are not here."""
    mkimage = shutil.which("grub-mkimage")
    if mkimage is None or not (Path(modules_dir) / "http.mod").is_file():
        raise FileNotFoundError("apt-get install grub-common grub-efi-amd64-bin")
    tmp = dest.with_name(f".{dest.name}.tmp")
    r = subprocess.run([mkimage, "-O", "x86_64-efi", "-d", modules_dir, "-p", HTTP_GRUB_PREFIX,
                        "-o", str(tmp), *HTTP_GRUB_MODULES], capture_output=True, text=True)
    if r.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise RuntimeError(f"grub-mkimage failed: {r.stderr.strip()[-500:]}")
    tmp.replace(dest)
    return f"grub-mkimage -d {modules_dir} -p {HTTP_GRUB_PREFIX}"


def bootfiles_dir(state_dir: Path) -> Path:
    return Path(state_dir) / BOOTFILES_DIR


def loader_path(state_dir: Path, distro: str, name: str) -> Path | None:
    """The file sent for a loader name: the distribution's own shim and GRUB when it brought
    them (only the pair together: a shim trusts only its own vendor's GRUB), else ours."""
    from provisioner.boot.distros import distro_dir
    from provisioner.boot.tftp import safe_static_path
    if name in DISTRO_LOADERS and "/" not in distro and not distro.startswith("."):
        own = distro_dir(state_dir) / distro / DISTRO_LOADER_DIR
        if all((own / n).is_file() for n in DISTRO_LOADERS):
            return own / name
    path = safe_static_path(bootfiles_dir(state_dir), name)
    if path is None and name == HTTP_GRUB:
        # not built (no grub-efi-amd64-bin at import): the shim, whose GRUB gets as far as its prompt
        path = loader_path(state_dir, distro, "shimx64.efi")
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
    if sources is SOURCES:
        try:
            done.append(f"{HTTP_GRUB} <- {build_http_grub(dest / HTTP_GRUB)} (unsigned, for UEFI HTTP Boot)")
        except FileNotFoundError as e:
            missing.append(f"{HTTP_GRUB}: not built, UEFI HTTP Boot gets the shim and stops at GRUB's prompt ({e})")
        except (OSError, RuntimeError) as e:
            missing.append(f"{HTTP_GRUB}: not built ({e})")
    if required:
        raise FileNotFoundError("required boot loaders are missing: " + "; ".join(required))
    return done, missing
