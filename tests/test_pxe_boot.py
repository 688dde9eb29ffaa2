"""A real PXE boot: QEMU (TCG) with Debian's iPXE ROM, dnsmasq, this service's TFTP and HTTP,
lpxelinux, a Debian kernel and a busybox initrd, all inside a namespace the test makes.
The initrd prints its kernel command line on the serial console; the test reads the node's
inst.ks= URL there."""

import os
import shutil
import subprocess

import pytest

from tests.bootimage import MARKER, build_initrd, debian_kernel, have_boot_tools
from tests.conftest import make_tree
from tests.netboot import install_network, provisioner, wait_for
from tests.netns import can_make_namespaces

ROM = "/usr/lib/ipxe/qemu/pxe-e1000.rom"
pytestmark = pytest.mark.skipif(
    not (can_make_namespaces() and shutil.which("qemu-system-x86_64") and shutil.which("dnsmasq")
         and os.path.exists(ROM) and os.path.exists("/usr/lib/PXELINUX/lpxelinux.0") and have_boot_tools()),
    reason="needs root, qemu-system-x86, ipxe-qemu, pxelinux, dnsmasq, busybox-static, a Debian kernel")

MAC = "52:54:00:0c:00:02"


def test_qemu_pxe_boots_through_the_service_to_the_installer_command_line(tmp_path):
    state = tmp_path / "state"
    initrd = build_initrd(tmp_path / "initrd.img")
    tree = make_tree(tmp_path / "tree", kernel=debian_kernel().read_bytes(), initrd=initrd.read_bytes())
    provisioner(state, "bootfiles", "import")
    provisioner(state, "distro", "import", "--from", str(tree))
    console = tmp_path / "console.log"

    with install_network(tmp_path, state) as ns:
        qemu = ns.popen(["qemu-system-x86_64", "-machine", "pc", "-accel", "tcg", "-m", "512",
                         "-display", "none", "-serial", f"file:{console}", "-monitor", "none",
                         "-no-reboot", "-boot", "n",
                         "-netdev", "tap,id=n0,ifname=tap0,script=no,downscript=no",
                         "-device", f"e1000,netdev=n0,mac={MAC},romfile={ROM}"],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for(lambda: console.exists() and MARKER in console.read_text(errors="replace")
                     or qemu.poll() is not None, 300, "the initrd's command line on the serial console")
            text = console.read_text(errors="replace")
            line = next(ln for ln in text.splitlines() if ln.startswith(MARKER))
            assert f"inst.ks=http://192.168.0.254:8081/ks/{MAC}" in line   # the boot server
            assert "ip=192.168.0.2::192.168.0.1:255.255.255.0:compute2.cluster.local:nic1:none" in line
            assert f"ifname=nic1:{MAC}" in line and " inst.cmdline" in line
            assert f"BOOTIF=01-{MAC.replace(':', '-')}" in line
        finally:
            if qemu.poll() is None:
                qemu.kill()
                qemu.wait()
        log = (tmp_path / "service.log").read_text()
        assert f"boot tftp 192.168.0.2 {MAC} (compute2): asked pxelinux.cfg/01-52-54-00-0c-00-02, answered install" in log
