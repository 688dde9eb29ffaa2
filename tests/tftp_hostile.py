"""Hostile TFTP clients for tests/test_tftp.py: requesters that never ACK, floods, a windowed
client that loses a block, and (run as `python -m tests.tftp_hostile` inside a network namespace
a test made) clients on several loopback addresses, to tell the per-source cap from the global one."""

from __future__ import annotations

import json
import os
import socket
import struct
import sys
import time
from contextlib import contextmanager

from provisioner.boot.tftp import Resolved, TftpServer
from tests.tftpclient import ack, fetch, rrq


def static_resolver(files: dict[str, bytes]):
    def resolve(name, peer):
        return Resolved(data=files[name]) if name in files else Resolved(why="not in the test's files")
    return resolve


@contextmanager
def udp(bind: str = "127.0.0.1", timeout: float = 2.0, rcvbuf: int = 4 << 20):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.bind((bind, 0))
    s.settimeout(timeout)
    try:
        yield s
    finally:
        s.close()


def parse_error(buf: bytes) -> tuple[int, str]:
    """(code, message) of a well-formed ERROR packet; AssertionError for anything else."""
    assert len(buf) >= 5 and buf[:2] == b"\x00\x05", buf[:40]
    assert buf.endswith(b"\0") and buf.count(b"\0", 4) == 1, buf      # one NUL, at the end
    return struct.unpack("!H", buf[2:4])[0], buf[4:-1].decode("ascii")


def collect(s: socket.socket, seconds: float) -> list[tuple[bytes, tuple]]:
    """Every packet that arrives on `s` for `seconds`, without answering any."""
    got = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        s.settimeout(left)
        try:
            got.append(s.recvfrom(70000))
        except socket.timeout:
            break
    return got


def hog(s: socket.socket, server, name: str, **options) -> tuple[bytes, tuple]:
    """Start a transfer and never ACK it: its first packet and the transfer's address."""
    s.sendto(rrq(name, **options), server)
    return s.recvfrom(70000)


def wait_until(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def windowed_fetch_losing_a_block(server, name: str, *, blksize: int, windowsize: int, lose: int,
                                  timeout: float = 5.0) -> bytes:
    """An RFC 7440 receiver (as EDK2 and U-Boot do it) that loses block `lose` once: on a block out of
    order it ACKs the last one it got in order, and expects the window to start again after that."""
    with udp(timeout=timeout) as s:
        s.sendto(rrq(name, blksize=blksize, windowsize=windowsize), server)
        buf, peer = s.recvfrom(70000)
        assert buf[:2] == b"\x00\x06", buf[:40]
        s.sendto(ack(0), peer)
        data, expected, lost = b"", 1, False
        while True:
            buf, _ = s.recvfrom(70000)
            assert buf[:2] == b"\x00\x03", buf[:40]
            block = struct.unpack("!H", buf[2:4])[0]
            if block == lose % 65536 and not lost:
                lost = True
                continue
            if block != expected % 65536:
                s.sendto(ack(expected - 1), peer)
                continue
            data += buf[4:]
            last = len(buf) - 4 < blksize
            if last or expected % windowsize == 0:
                s.sendto(ack(expected), peer)
            if last:
                return data
            expected += 1


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


# -- several source addresses: only inside a network namespace of the test's own ---------------

def sources_scenario() -> dict:
    """Per-source and global caps told apart: 127.0.0.2 holds its quota, 127.0.0.3 is served meanwhile;
    then the server is full and 127.0.0.5, with nothing running, is refused as busy."""
    data = os.urandom(100_000)
    server = TftpServer(static_resolver({"f": data}), "127.0.0.1", 0, timeout=0.3, retries=50,
                        max_sessions=4, max_per_source=2, stall_limit=4.0).start()
    addr = ("127.0.0.1", server.port)
    out = {}
    try:
        with udp("127.0.0.2") as a, udp("127.0.0.2") as b, udp("127.0.0.2") as c:
            hog(a, addr, "f")
            hog(b, addr, "f")
            c.sendto(rrq("f"), addr)
            out["third_from_one_address"] = parse_error(c.recvfrom(70000)[0])
            with udp("127.0.0.3", timeout=5) as d:
                # fetch() binds its own socket to 127.0.0.1: ask from .3 by hand, in lockstep
                d.sendto(rrq("f", blksize=1024), addr)
                got, block = b"", 0
                while True:
                    buf, peer = d.recvfrom(70000)
                    if buf[:2] == b"\x00\x06":
                        d.sendto(ack(0), peer)
                        continue
                    assert buf[:2] == b"\x00\x03", buf[:40]
                    n = struct.unpack("!H", buf[2:4])[0]
                    if n == (block + 1) % 65536:
                        got += buf[4:]
                        block += 1
                    d.sendto(ack(n), peer)
                    if len(buf) - 4 < 1024:
                        break
                out["other_address_served_whole"] = got == data
            with udp("127.0.0.3") as e, udp("127.0.0.4") as f, udp("127.0.0.5") as g:
                hog(e, addr, "f")
                hog(f, addr, "f")
                g.sendto(rrq("f"), addr)
                out["fifth_overall"] = parse_error(g.recvfrom(70000)[0])
                out["active_when_full"] = server.active
            out["all_ended_by_the_stall_limit"] = wait_until(lambda: server.active == 0, 6.0)
            out["served_after"] = fetch(addr, "f").data == data
            out["refused"] = server.refused
    finally:
        server.stop()
    return out


if __name__ == "__main__":
    json.dump(sources_scenario(), sys.stdout)
