"""The TFTP server with real packets: boot loaders, per-MAC configs, options, and hostile clients."""

import logging
import os
import shutil
import socket
import subprocess
import threading
from pathlib import Path

import pytest

from provisioner.bootfiles import import_bootfiles
from provisioner.tftp import TftpServer
from tests import tftpclient
from tests.tftpclient import fetch, rrq

HAVE_PXELINUX = os.path.exists("/usr/lib/PXELINUX/lpxelinux.0")


@pytest.fixture
def bootfiles(state_dir, app):
    if not HAVE_PXELINUX:
        pytest.skip("needs Debian's pxelinux and syslinux-common")
    import_bootfiles(state_dir)
    return state_dir / "bootfiles"


@pytest.fixture
def tftp(app, bootfiles):
    server = TftpServer(app.extensions["provisioner"].boot.tftp_resolve, "127.0.0.1", 0,
                        timeout=0.3, retries=2).start()
    yield server
    server.stop()


def addr(server):
    return ("127.0.0.1", server.port)


def test_bootfiles_import_copies_debians_loaders(bootfiles):
    for name in ("pxelinux.0", "lpxelinux.0", "ldlinux.c32", "menu.c32", "undionly.kpxe", "ipxe.efi", "grubx64.efi"):
        assert (bootfiles / name).stat().st_size > 1000, name
    assert (bootfiles / "lpxelinux.0").read_bytes() == Path("/usr/lib/PXELINUX/lpxelinux.0").read_bytes()


@pytest.mark.parametrize("options", [
    {},                                     # plain RFC 1350
    {"tsize": 0, "blksize": 1408},          # pxelinux
    {"tsize": 0, "blksize": 1432},          # iPXE
    {"tsize": 0, "blksize": 1024},          # GRUB
    {"blksize": 1468, "windowsize": 8},     # RFC 7440
    {"BLKSIZE": 512, "TSize": 0},           # option names are case-insensitive
])
def test_loaders_arrive_whole_with_the_options_clients_negotiate(tftp, bootfiles, options):
    res = fetch(addr(tftp), "lpxelinux.0", options)
    want = (bootfiles / "lpxelinux.0").read_bytes()
    assert res.error is None and res.data == want
    lower = {k.lower(): str(v) for k, v in options.items()}
    if options:
        assert res.oack["blksize" if "blksize" in lower else "tsize"]
        if "tsize" in lower:
            assert res.oack["tsize"] == str(len(want))
        if "blksize" in lower:
            assert res.oack["blksize"] == lower["blksize"]
        if "windowsize" in lower:
            assert res.oack["windowsize"] == "8"
    else:
        assert res.oack is None


def test_uefi_probe_tsize_abort_then_ask_again(tftp, bootfiles):
    probe = fetch(addr(tftp), "grubx64.efi", {"tsize": 0}, abort_after_oack=True)
    size = (bootfiles / "grubx64.efi").stat().st_size
    assert probe.oack == {"tsize": str(size)} and probe.data == b""
    again = fetch(addr(tftp), "grubx64.efi", {"tsize": 0, "blksize": 1468})
    assert len(again.data) == size


def test_a_file_over_65535_blocks_wraps_block_numbers(tftp, bootfiles):
    (bootfiles / "big.bin").write_bytes(os.urandom(70000 * 8 + 3))
    res = fetch(addr(tftp), "big.bin", {"blksize": 8, "windowsize": 16})
    assert res.data == (bootfiles / "big.bin").read_bytes()


def test_per_mac_pxelinux_config_says_install_for_an_armed_node(tftp, imported, caplog):
    caplog.set_level(logging.INFO)
    res = fetch(addr(tftp), "pxelinux.cfg/01-52-54-00-0c-00-02", {"tsize": 0, "blksize": 1408})
    text = res.data.decode()
    assert "DEFAULT install" in text
    assert "KERNEL http://192.168.0.254:8081/boot/centos-stream-9-x86_64/vmlinuz" in text
    assert "inst.ks=http://192.168.0.254:8081/ks/52:54:00:0c:00:02" in text
    assert "ip=192.168.0.2::192.168.0.1:255.255.255.0:compute2.cluster.local:eth1:none" in text
    assert "ifname=eth1:52:54:00:0c:00:02" in text
    assert "inst.repo=http://mirror.stream.centos.org/9-stream/BaseOS/x86_64/os/" in text
    assert ("boot tftp 127.0.0.1 52:54:00:0c:00:02 (compute2): asked pxelinux.cfg/01-52-54-00-0c-00-02, "
            "answered install: registered, armed for install") in caplog.text


def test_per_mac_grub_config_for_uefi(tftp):
    text = fetch(addr(tftp), "grub/grub.cfg-01-52-54-00-0c-00-05").data.decode()
    assert "linux /boot/centos-stream-9-x86_64/vmlinuz inst.ks=http://192.168.0.254:8081/ks/52:54:00:0c:00:05" in text
    assert "initrd /boot/centos-stream-9-x86_64/initrd.img" in text
    generic = fetch(addr(tftp), "grub/grub.cfg").data.decode()
    assert "configfile ${prefix}/grub.cfg-01-${net_default_mac}" in generic
    # the name GRUB builds from net_default_mac (colons) is understood too
    assert "Install controller" in fetch(addr(tftp), "grub/grub.cfg-01-52:54:00:0c:00:05").data.decode()


def test_unknown_and_installed_macs_boot_from_disk(tftp, client, registry):
    unknown = fetch(addr(tftp), "pxelinux.cfg/01-52-54-00-99-99-99").data.decode()
    assert "LOCALBOOT 0" in unknown and "KERNEL" not in unknown
    token = registry.get("52:54:00:0c:00:03").install_token
    client.get("/ks/52:54:00:0c:00:03")
    client.post("/api/v1/nodes/52:54:00:0c:00:03/events", json={"type": "installed"},
                headers={"Authorization": f"Bearer {token}"})
    text = fetch(addr(tftp), "pxelinux.cfg/01-52-54-00-0c-00-03").data.decode()
    assert "DEFAULT local" in text and "LOCALBOOT 0" in text and "inst.ks" not in text
    grub = fetch(addr(tftp), "grub.cfg-01-52-54-00-0c-00-03").data.decode()
    assert "exit" in grub and "linux" not in grub


def test_distro_files_are_served_over_tftp_as_the_fallback(tftp, imported):
    res = fetch(addr(tftp), "boot/centos-stream-9-x86_64/initrd.img", {"blksize": 1408})
    assert res.data == (imported / "images/pxeboot/initrd.img").read_bytes()


def test_tftp_hpa_client_fetches_loader_and_config(tftp, bootfiles, tmp_path):
    if shutil.which("tftp") is None:
        pytest.skip("needs tftp-hpa")
    for remote in ("lpxelinux.0", "pxelinux.cfg/01-52-54-00-0c-00-01"):
        out = tmp_path / remote.replace("/", "_")
        proc = subprocess.run(["tftp", "127.0.0.1", str(tftp.port), "-m", "binary", "-c", "get", remote, str(out)],
                              capture_output=True, text=True, timeout=30)
        assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "lpxelinux.0").read_bytes() == (bootfiles / "lpxelinux.0").read_bytes()
    assert "Install compute1" in (tmp_path / "pxelinux.cfg_01-52-54-00-0c-00-01").read_text()


def test_curl_tftp_with_blksize(tftp, bootfiles, tmp_path):
    if shutil.which("curl") is None:
        pytest.skip("needs curl")
    out = tmp_path / "ldlinux.c32"
    subprocess.run(["curl", "-sS", "--tftp-blksize", "1408", "-o", str(out),
                    f"tftp://127.0.0.1:{tftp.port}/ldlinux.c32"], check=True, timeout=30)
    assert out.read_bytes() == (bootfiles / "ldlinux.c32").read_bytes()


def _symlink_out(bootfiles, state_dir):
    link = bootfiles / "escape"
    link.symlink_to(state_dir / "secrets.yaml")
    (bootfiles / "escdir").symlink_to(state_dir)


HOSTILE = [
    ("short packet", b"\x00"),
    ("unknown opcode", b"\x00\x09hello\x00"),
    ("data to the main port", b"\x00\x03\x00\x01junk"),
    ("ack to the main port", tftpclient.ack(1)),
    ("error to the main port", tftpclient.error(0)),
    ("request without terminators", b"\x00\x01lpxelinux.0"),
    ("odd number of options", rrq("lpxelinux.0") + b"blksize\x00"),
    ("empty option name", rrq("lpxelinux.0") + b"\x00512\x00"),
    ("write request", b"\x00\x02upload.bin\x00octet\x00"),
    ("mail mode", rrq("lpxelinux.0", mode=b"mail")),
    ("non-ASCII name", b"\x00\x01p\xc3\xa9xe\xff\x00octet\x00"),
    ("very long name", rrq("a" * 60000)),
    ("long name", rrq("b" * 2000)),
    ("traversal", rrq("../secrets.yaml")),
    ("deep traversal", rrq("../../../../../../etc/passwd")),
    ("traversal inside", rrq("pxelinux.cfg/../../secrets.yaml")),
    ("absolute path", rrq("/etc/passwd")),
    ("backslash traversal", rrq("..\\..\\etc\\passwd")),
    ("symlink out of the root", rrq("escape")),
    ("symlinked directory", rrq("escdir/secrets.yaml")),
    ("a directory", rrq("pxelinux.cfg")),
    ("control characters", rrq("lpx\x1b[2Jelinux.0")),
    ("NUL-laden name", b"\x00\x01\x00\x00\x00octet\x00"),
    ("bad blksize", rrq("lpxelinux.0", blksize="abc")),
    ("tiny blksize", rrq("lpxelinux.0", blksize=1)),
    ("huge blksize", rrq("lpxelinux.0", blksize=10**12)),
    ("negative tsize", rrq("lpxelinux.0", tsize=-5)),
    ("zero windowsize", rrq("lpxelinux.0", windowsize=0)),
    ("huge timeout", rrq("lpxelinux.0", timeout=10**9)),
    ("mac-shaped garbage", rrq("pxelinux.cfg/01-zz-zz-zz-zz-zz-zz")),
    ("multicast MAC", rrq("pxelinux.cfg/01-ff-ff-ff-ff-ff-ff")),
]


@pytest.mark.parametrize("label, packet", HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_packets_get_an_error_or_silence_and_the_next_client_is_served(
        tftp, bootfiles, state_dir, label, packet, caplog):
    _symlink_out(bootfiles, state_dir)
    caplog.set_level(logging.INFO, logger="provisioner.tftp")
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(0.5)
    s.sendto(packet, addr(tftp))
    port = s.getsockname()[1]
    got = b""
    try:
        got, _ = s.recvfrom(70000)
    except socket.timeout:
        pass
    if got[:2] == b"\x00\x06" or got[:2] == b"\x00\x03":
        # options we could not use were dropped, not fatal: the transfer is of the real loader
        assert label in ("bad blksize", "tiny blksize", "huge blksize", "negative tsize", "zero windowsize",
                         "huge timeout", "odd number of options", "empty option name")
        s.sendto(tftpclient.error(0), _)
    else:
        assert got == b"" or got[:2] == b"\x00\x05", got[:40]
        leaked = got + b""
        assert b"root:" not in leaked and b"admin_token" not in leaked
    s.close()
    # the server logged the hostile request at most once, and serves the next client
    lines = [r for r in caplog.records if f"127.0.0.1:{port}" in r.getMessage()]
    assert len(lines) <= 1, [r.getMessage() for r in lines]
    res = fetch(addr(tftp), "lpxelinux.0", {"tsize": 0, "blksize": 1408})
    assert res.data == (bootfiles / "lpxelinux.0").read_bytes()


def test_secrets_never_leave_over_tftp(tftp, bootfiles, state_dir):
    _symlink_out(bootfiles, state_dir)
    for name in ("escape", "../secrets.yaml", "escdir/secrets.yaml", "/" + str(state_dir / "secrets.yaml"),
                 str(state_dir / "secrets.yaml")):
        res = fetch(addr(tftp), name, timeout=2)
        assert res.error is not None and res.data == b"", name


def test_clients_that_vanish_mid_transfer_are_dropped_and_others_served(tftp, bootfiles, caplog):
    caplog.set_level(logging.INFO, logger="provisioner.tftp")
    (bootfiles / "big.bin").write_bytes(os.urandom(2 * 1024 * 1024))
    socks = []
    for _ in range(5):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(2)
        s.sendto(rrq("big.bin", blksize=1408), addr(tftp))
        buf, peer = s.recvfrom(70000)
        s.sendto(tftpclient.ack(0), peer)       # take the first block, then vanish
        s.recvfrom(70000)
        socks.append(s)
    for s in socks[:3]:
        s.close()                               # three close their port: ICMP unreachable
    results = []
    threads = [threading.Thread(target=lambda: results.append(fetch(addr(tftp), "big.bin", {"blksize": 1408})))
               for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r.data == (bootfiles / "big.bin").read_bytes() for r in results] == [True] * 3
    import time
    deadline = time.monotonic() + 10
    while tftp.active and time.monotonic() < deadline:
        time.sleep(0.1)
    assert tftp.active == 0
    assert sum("client vanished" in r.getMessage() or "went away" in r.getMessage() for r in caplog.records) == 5
    for s in socks[3:]:
        s.close()


def test_a_stranger_on_a_transfer_port_gets_unknown_tid(tftp, bootfiles):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(2)
    s.sendto(rrq("lpxelinux.0"), addr(tftp))
    _, transfer = s.recvfrom(70000)
    other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    other.settimeout(2)
    other.sendto(tftpclient.ack(1), transfer)
    reply, _ = other.recvfrom(100)
    assert reply[:4] == b"\x00\x05\x00\x05"
    other.close()
    s.close()
    assert fetch(addr(tftp), "lpxelinux.0").data == (bootfiles / "lpxelinux.0").read_bytes()
