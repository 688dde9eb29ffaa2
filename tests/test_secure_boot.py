"""Secure Boot through the service: the loaders sent to UEFI clients, and a real boot.

The VM test boots QEMU (TCG, q35 with SMM) on OVMF with Microsoft's keys enrolled and Secure
Boot on (Debian's OVMF_CODE_4M.ms.fd / OVMF_VARS_4M.ms.fd), through dnsmasq and this service's
TFTP, into Debian's signed shim, Debian's signed network GRUB and Debian's signed kernel, and
reads the kernel command line the initrd prints on the serial console. Each link is verified by
the one before it, so reaching the command line proves the whole chain; the kernel's own
"Secure boot enabled" line proves the firmware enforced it. The full install and the boot from
disk run under plain UEFI (tests/test_uefi.py): under Secure Boot they add only time.
"""

import hashlib
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from provisioner.boot import bootfiles
from provisioner.boot import distros
from provisioner.boot.dhcp import dnsmasq_config
from tests.bootimage import MARKER, build_initrd, debian_kernel, have_boot_tools
from tests.conftest import make_tree
from tests.netboot import install_network, provisioner, wait_for
from tests.netns import can_make_namespaces

OVMF = Path("/usr/share/OVMF")
SB_CODE, SB_VARS = OVMF / "OVMF_CODE_4M.ms.fd", OVMF / "OVMF_VARS_4M.ms.fd"
SHIM = Path("/usr/lib/shim/shimx64.efi.signed")
GRUB = Path("/usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed")
MAC = "52:54:00:0c:00:03"


def test_uefi_clients_are_sent_the_shim_and_http_boot_clients_a_url(site):
    text = dnsmasq_config(site, [], interface="br0", ipxe=False)
    assert "dhcp-boot=tag:efi-x86_64,tag:!httpboot,shimx64.efi,,192.168.0.254" in text
    assert "dhcp-vendorclass=set:httpboot,HTTPClient" in text
    assert "dhcp-boot=tag:httpboot,http://192.168.0.254:8081/bootfiles/grubx64-http.efi" in text
    assert "dhcp-option-force=tag:httpboot,option:vendor-class,HTTPClient" in text
    proxy = dnsmasq_config(site, [], proxy=True)
    assert 'X86-64_EFI,"Network install (UEFI)",shimx64.efi,192.168.0.254' in proxy
    assert "dhcp-boot=tag:httpboot,http://192.168.0.254:8081/bootfiles/grubx64-http.efi" in proxy


def _state_with_loaders(tmp_path: Path) -> Path:
    state = tmp_path / "state"
    d = bootfiles.bootfiles_dir(state)
    d.mkdir(parents=True)
    (d / "shimx64.efi").write_bytes(b"debian shim")
    (d / "grubx64.efi").write_bytes(b"debian grub")
    return state


def test_debian_loaders_are_served_when_the_distribution_brings_none(tmp_path, site):
    state = _state_with_loaders(tmp_path)
    assert bootfiles.loader_path(state, site.distro, "shimx64.efi").read_bytes() == b"debian shim"
    assert bootfiles.loader_path(state, site.distro, "grubx64.efi").read_bytes() == b"debian grub"
    # without shim-signed, GRUB goes in its place (no Secure Boot, but the machine still boots)
    (bootfiles.bootfiles_dir(state) / "shimx64.efi").unlink()
    assert bootfiles.loader_path(state, site.distro, "shimx64.efi").read_bytes() == b"debian grub"
    assert bootfiles.loader_path(state, site.distro, "../grubx64.efi") is None


def _tree_with_loaders(root: Path) -> Path:
    """A CentOS-shaped tree whose .treeinfo vouches for its own shim and GRUB, as CentOS's does
    ([checksums] EFI/BOOT/BOOTX64.EFI and EFI/BOOT/grubx64.efi)."""
    tree = make_tree(root)
    efi = tree / "EFI" / "BOOT"
    efi.mkdir(parents=True)
    (efi / "BOOTX64.EFI").write_bytes(b"centos shim")
    (efi / "grubx64.efi").write_bytes(b"centos grub")
    sums = "".join(f"{rel} = sha256:{hashlib.sha256((tree / rel).read_bytes()).hexdigest()}\n"
                   for rel in ("EFI/BOOT/BOOTX64.EFI", "EFI/BOOT/grubx64.efi"))
    text = (tree / ".treeinfo").read_text()
    (tree / ".treeinfo").write_text(text.replace("[checksums]\n", "[checksums]\n" + sums))
    assert "EFI/BOOT/BOOTX64.EFI = sha256:" in (tree / ".treeinfo").read_text()
    return tree


def test_the_distributions_own_shim_and_grub_win(tmp_path, site):
    state = _state_with_loaders(tmp_path)
    tree = distros.import_tree(state, str(_tree_with_loaders(tmp_path / "tree")))
    assert tree.name == site.distro
    # the tree's kernel is signed by its vendor: so must the shim's embedded key and GRUB be
    assert bootfiles.loader_path(state, site.distro, "shimx64.efi").read_bytes() == b"centos shim"
    assert bootfiles.loader_path(state, site.distro, "grubx64.efi").read_bytes() == b"centos grub"
    # other names still come from bootfiles/, and another distribution gets Debian's pair
    assert bootfiles.loader_path(state, "debian-12-x86_64", "shimx64.efi").read_bytes() == b"debian shim"


def test_a_tree_with_a_bad_loader_checksum_is_not_imported(tmp_path):
    state = _state_with_loaders(tmp_path)
    tree = _tree_with_loaders(tmp_path / "tree")
    (tree / "EFI" / "BOOT" / "grubx64.efi").write_bytes(b"tampered")
    with pytest.raises(distros.DistroError, match="EFI/BOOT/grubx64.efi"):
        distros.import_tree(state, str(tree))


def test_the_shim_and_grub_are_served_over_tftp_and_http(app):
    boot = app.extensions["provisioner"].boot
    d = bootfiles.bootfiles_dir(boot.state_dir)
    d.mkdir(parents=True, exist_ok=True)
    (d / "shimx64.efi").write_bytes(b"shim")
    (d / "grubx64.efi").write_bytes(b"grub")
    # the shim asks for grubx64.efi by name, beside where it came from
    assert boot.tftp_resolve("grubx64.efi", ("192.168.0.3", 1000)).path.read_bytes() == b"grub"
    assert boot.tftp_resolve("/shimx64.efi", ("192.168.0.3", 1000)).path.read_bytes() == b"shim"
    assert boot.file_resolve("/bootfiles/shimx64.efi").read_bytes() == b"shim"
    assert boot.file_resolve("/bootfiles/grubx64.efi").read_bytes() == b"grub"


def _ready() -> bool:
    return (can_make_namespaces() and shutil.which("qemu-system-x86_64") and shutil.which("dnsmasq")
            and SB_CODE.exists() and SB_VARS.exists() and SHIM.exists() and GRUB.exists() and have_boot_tools())


@pytest.mark.skipif(not _ready(), reason="needs root, qemu-system-x86, ovmf, shim-signed, grub-efi-amd64-signed, "
                                         "dnsmasq, busybox-static, a Debian kernel")
def test_secure_boot_reaches_the_signed_kernels_command_line(tmp_path):
    state = tmp_path / "state"
    initrd = build_initrd(tmp_path / "initrd.img")
    kernel = debian_kernel()
    tree = make_tree(tmp_path / "tree", kernel=kernel.read_bytes(), initrd=initrd.read_bytes())
    imported = provisioner(state, "bootfiles", "import")
    assert f"shimx64.efi <- {SHIM}" in imported and f"grubx64.efi <- {GRUB}" in imported
    provisioner(state, "distro", "import", "--from", str(tree))
    varstore = tmp_path / "OVMF_VARS.fd"
    shutil.copyfile(SB_VARS, varstore)
    console = tmp_path / "console.log"

    with install_network(tmp_path, state) as ns:
        started = time.monotonic()
        qemu = ns.popen(secure_boot_qemu(varstore, console), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for(lambda: console.exists() and MARKER in console.read_text(errors="replace")
                     or qemu.poll() is not None, 240, "the signed kernel's command line on the serial console")
            text = console.read_text(errors="replace")
            print(f"secure boot to the command line: {time.monotonic() - started:.0f} s")
            assert MARKER in text, text[-3000:]
            line = next(ln for ln in text.splitlines() if MARKER in ln)
            assert f"inst.ks=http://192.168.0.254:8081/ks/{MAC}" in line
            assert "Secure boot enabled" in text        # the kernel saw the firmware enforcing it
        finally:
            if qemu.poll() is None:
                qemu.kill()
                qemu.wait()
    log = (tmp_path / "service.log").read_text()
    # Debian's GRUB writes the MAC with colons, in its prefix directory
    assert f"boot tftp 192.168.0.3 {MAC} (compute3): asked grub/grub.cfg-01-{MAC}, answered install" in log
    # the loader that asked told the service the machine's firmware
    assert '"firmware": "uefi"' in provisioner(state, "nodes", "show", MAC)


def secure_boot_qemu(varstore: Path, console: Path) -> list[str]:
    return ["qemu-system-x86_64", "-machine", "q35,smm=on", "-accel", "tcg", "-m", "768",
            "-global", "driver=cfi.pflash01,property=secure,value=on",
            "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={SB_CODE}",
            "-drive", f"if=pflash,format=raw,unit=1,file={varstore}",
            # IPv4 PXE only: the IPv6 attempt would only wait out its timeout
            "-fw_cfg", "name=opt/org.tianocore/IPv6PXESupport,string=no",
            "-display", "none", "-serial", f"file:{console}", "-monitor", "none", "-no-reboot",
            "-netdev", "tap,id=n0,ifname=tap0,script=no,downscript=no",
            # OVMF's own virtio-net driver: QEMU's iPXE option ROMs are unsigned, and Secure Boot
            # would refuse to run them
            "-device", f"virtio-net-pci,netdev=n0,mac={MAC},romfile=,bootindex=1"]
