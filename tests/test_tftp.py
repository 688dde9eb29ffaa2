"""The TFTP server with real packets: boot loaders, per-MAC configs, options, and hostile clients."""

import json
import logging
import os
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from provisioner.boot.bootfiles import import_bootfiles
from provisioner.boot.tftp import Resolved, TftpServer, error_packet
from tests import tftpclient
from tests.netns import can_make_namespaces, namespaces
from tests.tftp_hostile import (collect, fd_count, hog, parse_error, static_resolver, udp, wait_until,
                                windowed_fetch_losing_a_block)
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
    assert "ip=192.168.0.2::192.168.0.1:255.255.255.0:compute2.cluster.local:nic1:none" in text
    assert "ifname=nic1:52:54:00:0c:00:02" in text
    assert "inst.repo=http://192.168.0.254:8081/mirror/9-stream/BaseOS/x86_64/os/" in text
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
    caplog.set_level(logging.INFO, logger="provisioner.boot.tftp")
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
    caplog.set_level(logging.INFO, logger="provisioner.boot.tftp")
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


# -- limits: what a hostile client can make the server spend --------------------------------------


@pytest.fixture
def files():
    return {"small.bin": os.urandom(3000), "big.bin": os.urandom(1 << 20), "four.bin": os.urandom(4 << 20)}


@pytest.fixture
def make_server(files):
    made = []

    def make(resolve=None, **kw):
        kw.setdefault("timeout", 0.2)
        server = TftpServer(resolve or static_resolver(files), "127.0.0.1", 0, **kw).start()
        made.append(server)
        return server
    yield make
    for server in made:
        server.stop()


def test_error_packets_are_built_for_every_code():
    for code in range(0, 9):
        assert parse_error(error_packet(code))[0] == code
    assert parse_error(error_packet(0, "server busy")) == (0, "server busy")
    assert parse_error(error_packet(0, "a\0b")) == (0, "a?b")


def test_the_per_source_cap_refuses_with_an_error_and_rate_limited_log_lines(make_server, files, caplog):
    caplog.set_level(logging.INFO, logger="provisioner.boot.tftp")
    server = make_server(max_per_source=2, retries=100, stall_limit=2.0)
    with udp() as a, udp() as b, udp() as flood:
        hog(a, addr(server), "big.bin")
        hog(b, addr(server), "big.bin")
        started = time.monotonic()
        for _ in range(2000):
            flood.sendto(tftpclient.rrq("small.bin"), addr(server))
        replies = collect(flood, 1.0)
        elapsed = time.monotonic() - started
        assert len(replies) > 100          # the receive buffer may drop some; the server sent them
        assert {parse_error(buf) for buf, _ in replies} == {(0, "too many transfers from your address")}
        assert server.refused >= len(replies)
        refusals = [r for r in caplog.records if "refused" in r.getMessage()]
        assert 1 <= len(refusals) <= 20 + 10 * elapsed + 1
        # the transfers holding the quota end at the stall limit, and the address is served again
        assert wait_until(lambda: server.active == 0, 4)
    res = fetch(addr(server), "small.bin", {"tsize": 0})
    assert res.data == files["small.bin"]


def test_the_global_cap_refuses_with_an_error(make_server, files):
    server = make_server(max_sessions=3, retries=100, stall_limit=2.0)
    with udp() as a, udp() as b, udp() as c, udp() as d:
        for s in (a, b, c):
            hog(s, addr(server), "big.bin", blksize=1024)
        d.sendto(tftpclient.rrq("small.bin"), addr(server))
        assert parse_error(d.recvfrom(100)[0]) == (0, "server busy")
        assert wait_until(lambda: server.active == 0, 4)
    assert fetch(addr(server), "big.bin", {"blksize": 1408}).data == files["big.bin"]


@pytest.mark.skipif(not can_make_namespaces(), reason="needs root to make a network namespace")
def test_one_address_at_its_cap_does_not_stop_another():
    """127.0.0.2 and .3 in a namespace the test makes: the only way to have several sources here."""
    with namespaces(1) as (ns,):
        proc = ns.run(sys.executable, "-m", "tests.tftp_hostile", cwd=str(Path(__file__).parent.parent),
                      timeout=60)
    out = json.loads(proc.stdout)
    assert out["third_from_one_address"] == [0, "too many transfers from your address"]
    assert out["other_address_served_whole"] is True
    assert out["fifth_overall"] == [0, "server busy"] and out["active_when_full"] == 4
    assert out["all_ended_by_the_stall_limit"] is True and out["served_after"] is True
    assert out["refused"] == 2


def test_a_timeout_longer_than_the_server_allows_is_left_out_of_the_oack(make_server, files):
    server = make_server()          # stall limit 30 s: a client's timeout is honoured up to 7 s
    res = fetch(addr(server), "small.bin", {"timeout": 60, "blksize": 1024})
    assert res.oack == {"blksize": "1024"} and res.data == files["small.bin"]
    res = fetch(addr(server), "small.bin", {"timeout": 8, "tsize": 0})
    assert res.oack == {"tsize": "3000"} and res.data == files["small.bin"]
    res = fetch(addr(server), "small.bin", {"timeout": 5})
    assert res.oack == {"timeout": "5"} and res.data == files["small.bin"]


def test_a_client_that_stops_acking_is_ended_at_the_stall_limit_with_backoff(make_server):
    # retries would allow 100 retransmissions 0.2 s apart; the stall limit and backoff allow far fewer
    server = make_server(retries=100, stall_limit=1.5)
    with udp() as s:
        oack, peer = hog(s, addr(server), "big.bin", timeout=255, blksize=1024)
        assert oack[:2] == b"\x00\x06" and b"timeout" not in oack
        s.sendto(tftpclient.ack(0), peer)
        first, _ = s.recvfrom(70000)
        assert first[:4] == b"\x00\x03\x00\x01"
        s.sendto(tftpclient.ack(1), peer)          # the last progress it makes
        stopped = time.monotonic()
        assert wait_until(lambda: server.active == 0, 5)
        lasted = time.monotonic() - stopped
        resent = [buf for buf, _ in collect(s, 0.2)][1:]      # block 2 came once in order
    assert 1.4 <= lasted <= 2.2, lasted
    assert all(buf[:4] == b"\x00\x03\x00\x02" for buf in resent)     # only the block it lacks
    assert 1 <= len(resent) <= 3       # at 0.2, 0.6, 1.4 s: backing off, then ended at 1.5 s


def test_a_request_that_is_never_acked_draws_only_a_few_small_packets(make_server, files):
    server = make_server(retries=5, stall_limit=2.0)
    budgets = {
        # options: the OACK and its retransmissions, never a window of 64 blocks of 64 KiB
        "windowed": (dict(blksize=65464, windowsize=64, tsize=0), 6 * 60),
        # no options: block 1 of 512 bytes and its retransmissions
        "plain": ({}, 6 * 516),
    }
    for label, (options, budget) in budgets.items():
        with udp() as s:
            s.sendto(tftpclient.rrq("four.bin", **options), addr(server))
            got = collect(s, 2.6)
        total = sum(len(buf) for buf, _ in got)
        assert 1 <= len(got) <= 6 and total <= budget, (label, len(got), total)
        assert wait_until(lambda: server.active == 0, 1)
    # a client that takes the first window and goes silent: one window, then one block per timeout
    with udp() as s:
        oack, peer = hog(s, addr(server), "four.bin", blksize=1024, windowsize=64)
        assert b"windowsize\x0064\x00" in oack
        s.sendto(tftpclient.ack(0), peer)
        got = collect(s, 2.6)
    blocks = [struct.unpack("!H", buf[2:4])[0] for buf, _ in got]
    assert blocks[:64] == list(range(1, 65)) and set(blocks[64:]) == {1} and len(blocks) <= 64 + 5
    # and a windowed transfer that does ACK gets the whole file
    res = fetch(addr(server), "big.bin", {"blksize": 1024, "windowsize": 64})
    assert res.oack["windowsize"] == "64" and res.data == files["big.bin"]


def test_a_window_restarts_after_the_block_a_client_acknowledges_in_order(make_server, files):
    # a 5 s timeout: recovering by timeout instead of by the client's ACK would take that long
    server = make_server(timeout=5.0)
    started = time.monotonic()
    data = windowed_fetch_losing_a_block(addr(server), "big.bin", blksize=1024, windowsize=16, lose=21)
    assert data == files["big.bin"] and time.monotonic() - started < 4


def test_the_window_is_bounded_in_bytes(make_server):
    server = make_server()
    with udp() as s:
        oack, peer = hog(s, addr(server), "four.bin", blksize=65464, windowsize=64)
        assert oack == b"\x00\x06blksize\x0065464\x00windowsize\x0016\x00"     # 1 MiB a window at most
        s.sendto(tftpclient.error(0), peer)
    assert wait_until(lambda: server.active == 0, 1)


class _Unreadable(bytes):
    def __getitem__(self, item):
        raise OSError(5, "Input/output error")


def test_no_descriptor_is_kept_when_a_transfer_cannot_start(make_server, files, tmp_path):
    gone = tmp_path / "gone.bin"
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "dir").mkdir()

    def resolve(name, peer):
        if name == "vanished":            # resolved, then removed before the server opens it
            gone.write_bytes(b"x")
            path = Path(gone)
            gone.unlink()
            return Resolved(path=path)
        if name in ("fifo", "dir"):
            return Resolved(path=tmp_path / name)
        if name == "raises":
            raise RuntimeError("resolver bug")
        if name == "unreadable":
            return Resolved(data=_Unreadable(b"x" * 5000))
        return static_resolver(files)(name, peer)
    server = make_server(resolve, max_per_source=2, retries=100, stall_limit=3)

    def refused(s, name, **options):
        s.sendto(tftpclient.rrq(name, **options), addr(server))
        buf, _ = s.recvfrom(70000)
        return parse_error(buf)[0]

    with udp() as s:
        before = fd_count()
        for _ in range(40):
            assert refused(s, "vanished") == 1
            assert refused(s, "fifo") == 2 and refused(s, "dir") == 2
            assert refused(s, "raises") == 0
            assert refused(s, "unreadable") == 0                        # fails after the socket is made
            with udp() as t:                                            # fails after the OACK
                oack, peer = hog(t, addr(server), "unreadable", blksize=512)
                t.sendto(tftpclient.ack(0), peer)
                assert parse_error(t.recvfrom(100)[0])[0] == 0
        real = server._negotiate
        server._negotiate = lambda t, options: 1 / 0                    # option negotiation fails
        for _ in range(40):
            assert refused(s, "small.bin", tsize=0) == 0
        server._negotiate = real
        assert server.active == 0
        assert fd_count() == before
        with udp() as a, udp() as b:
            hog(a, addr(server), "big.bin")
            hog(b, addr(server), "big.bin")
            held = fd_count()
            for _ in range(100):                                        # the per-source cap
                assert refused(s, "big.bin") == 0
            assert fd_count() == held
        # the two that held the quota end at the stall limit, and give back what they held
        assert wait_until(lambda: server.active == 0 and fd_count() == before, 5)
        assert fetch(addr(server), "small.bin").data == files["small.bin"]


def test_option_stuffed_requests_cost_little(make_server, files):
    server = make_server()
    stuffed = tftpclient.rrq("small.bin") + b"a\0b\0" * 16000        # tftpy took 0.14 s on each
    with udp() as s:
        for _ in range(200):
            s.sendto(stuffed, addr(server))
        started = time.monotonic()
        res = fetch(addr(server), "small.bin", timeout=3)
        assert res.data == files["small.bin"] and time.monotonic() - started < 3
        replies = collect(s, 0.5)
    assert replies and all(parse_error(buf)[0] == 4 for buf, _ in replies)
    many = tftpclient.rrq("small.bin") + b"".join(b"x%d\x001\x00" % i for i in range(100)) + b"blksize\x001024\x00"
    assert len(many) < 2048
    res = fetch(addr(server), "small.bin", raw_request=many)
    assert res.data == files["small.bin"] and res.oack is None       # options past the 16th: ignored
