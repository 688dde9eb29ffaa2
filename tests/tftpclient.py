"""A small raw TFTP client for tests: real UDP packets, every field under the test's control."""

import socket
import struct


def rrq(name: bytes | str, mode: bytes = b"octet", **options) -> bytes:
    if isinstance(name, str):
        name = name.encode()
    pkt = struct.pack("!H", 1) + name + b"\0" + mode + b"\0"
    for k, v in options.items():
        pkt += k.encode() + b"\0" + str(v).encode() + b"\0"
    return pkt


def ack(block: int) -> bytes:
    return struct.pack("!HH", 4, block % 65536)


def error(code: int, msg: bytes = b"abort") -> bytes:
    return struct.pack("!HH", 5, code) + msg + b"\0"


class Result:
    def __init__(self):
        self.data = b""
        self.oack = None
        self.error = None
        self.packets = 0


def fetch(addr, name, options=None, timeout=5.0, abort_after_oack=False, window_ack=True,
          raw_request: bytes | None = None) -> Result:
    """Read `name` the way firmware does: lockstep (or windowed) ACKs. Returns data, OACK or error."""
    options = options or {}
    res = Result()
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(timeout)
    try:
        s.sendto(raw_request if raw_request is not None else rrq(name, **options), addr)
        blksize = int(options.get("blksize", 512))
        windowsize = int(options.get("windowsize", 1))
        expected = 1
        while True:
            buf, peer = s.recvfrom(70000)
            res.packets += 1
            op = struct.unpack("!H", buf[:2])[0]
            if op == 5:
                code = struct.unpack("!H", buf[2:4])[0]
                res.error = (code, buf[4:].rstrip(b"\0").decode(errors="replace"))
                return res
            if op == 6:
                fields = buf[2:].split(b"\0")[:-1]
                res.oack = {fields[i].decode(): fields[i + 1].decode() for i in range(0, len(fields), 2)}
                blksize = int(res.oack.get("blksize", 512))
                windowsize = int(res.oack.get("windowsize", 1))
                if abort_after_oack:
                    s.sendto(error(8, b"tsize probe done"), peer)
                    return res
                s.sendto(ack(0), peer)
                continue
            if op == 3:
                block = struct.unpack("!H", buf[2:4])[0]
                if block != expected % 65536:
                    continue
                data = buf[4:]
                res.data += data
                last = len(data) < blksize
                if last or expected % windowsize == 0 or not window_ack:
                    s.sendto(ack(expected), peer)
                expected += 1
                if last:
                    return res
    finally:
        s.close()
