"""A read-only TFTP server for boot loaders and per-MAC boot configs.

Packets are parsed and built with tftpy's codec; the serving loop is our own, because tftpy's
server lets a malformed option or a non-ASCII name raise out of its loop, resolves paths without
following symlinks, and logs many lines per transfer. Here one selector loop serves every
transfer (RFC 1350 lockstep, with blksize, tsize, timeout and windowsize from RFC 2347-2349 and
RFC 7440); a packet that cannot be handled gets an ERROR or silence, one log line, and the loop
goes on to the next client.
"""

from __future__ import annotations

import logging
import os
import selectors
import socket
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from provisioner.background import BackgroundServer
from tftpy.TftpPacketFactory import TftpPacketFactory
from tftpy.TftpPacketTypes import (TftpPacketDAT, TftpPacketERR, TftpPacketOACK,
                                   TftpPacketRRQ, TftpPacketWRQ)

log = logging.getLogger(__name__)

RRQ, WRQ, DATA, ACK, ERROR, OACK = 1, 2, 3, 4, 5, 6
ERR_NOT_DEFINED, ERR_NOT_FOUND, ERR_ACCESS, ERR_ILLEGAL_OP, ERR_UNKNOWN_TID, ERR_OPTIONS = 0, 1, 2, 4, 5, 8
MIN_BLKSIZE, MAX_BLKSIZE = 8, 65464
MAX_WINDOW = 64
MAX_PACKET = 65536


@dataclass
class Resolved:
    """What a requested name is: bytes generated now, a file to stream, or an error."""
    data: bytes | None = None
    path: Path | None = None
    error: int = ERR_NOT_FOUND
    why: str = "not found"

    @property
    def found(self) -> bool:
        return self.data is not None or self.path is not None


Resolver = Callable[[str, tuple[str, int]], Resolved]


def safe_static_path(root: Path, name: str) -> Path | None:
    """`name` under `root`, or None if it leaves the root in any way (.., absolute, symlinks)."""
    rel = name.replace("\\", "/").lstrip("/")
    if not rel or "\0" in rel or any(part == ".." for part in rel.split("/")):
        return None
    try:
        real_root = root.resolve(strict=True)
        path = (real_root / rel).resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    if not path.is_relative_to(real_root) or not path.is_file():
        return None
    return path


@dataclass(eq=False)
class _Transfer:
    sock: socket.socket
    peer: tuple[str, int]
    name: str
    size: int
    read: Callable[[int, int], bytes]
    close_source: Callable[[], None]
    blksize: int = 512
    windowsize: int = 1
    timeout: float = 2.0
    oack: dict[str, str] | None = None
    acked: int = 0          # absolute block number last acknowledged
    sent_upto: int = 0
    last_send: float = 0.0
    retries: int = 0
    started: float = field(default_factory=time.monotonic)

    @property
    def last_block(self) -> int:
        return self.size // self.blksize + 1


class TftpServer(BackgroundServer):
    thread_name = "tftp"

    def __init__(self, resolve: Resolver, host: str = "0.0.0.0", port: int = 69, *,
                 timeout: float = 2.0, retries: int = 5, max_sessions: int = 2048):
        super().__init__()
        self.resolve = resolve
        self.timeout = timeout
        self.retries = retries
        self.max_sessions = max_sessions
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.setblocking(False)
        # a boot storm sends hundreds of requests at once: give them room to wait in the kernel
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, 33, 8 << 20)          # SO_RCVBUFFORCE (root)
        except OSError:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        self.host, self.port = self.sock.getsockname()
        self._sel = selectors.DefaultSelector()
        self._sel.register(self.sock, selectors.EVENT_READ, None)
        self._transfers: dict[tuple[str, int], _Transfer] = {}
        self._factory = TftpPacketFactory()
        self.served = 0      # completed transfers, for tests and status

    # -- running ----------------------------------------------------------------------------

    def serve_forever(self) -> None:
        log.info("tftp: serving on %s:%d", self.host, self.port)
        try:
            while not self._stop.is_set():
                for key, _ in self._sel.select(timeout=0.25):
                    try:
                        if key.data is None:
                            for _ in range(64):      # drain a burst of requests in one go
                                if not self._on_request():
                                    break
                        else:
                            self._on_transfer_packet(key.data)
                    except Exception:  # one bad packet must never stop the server
                        log.exception("tftp: unexpected error; the server goes on")
                self._check_timeouts()
        finally:
            for t in list(self._transfers.values()):
                self._end(t)
            self._sel.close()
            self.sock.close()

    # -- new requests -----------------------------------------------------------------------

    def _on_request(self) -> bool:
        """Handle one packet on the main port; False when there was none waiting."""
        try:
            buf, peer = self.sock.recvfrom(MAX_PACKET)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError as e:   # e.g. ICMP port unreachable from a vanished client
            log.debug("tftp: recv on the main socket failed: %s", e)
            return True
        self._handle_request(buf, peer)
        return True

    def _handle_request(self, buf: bytes, peer) -> None:
        opcode = struct.unpack("!H", buf[:2])[0] if len(buf) >= 2 else None
        if opcode not in (RRQ, WRQ):
            log.info("tftp %s:%d: ignored a packet that is not a request (%d bytes)", *peer, len(buf))
            return
        try:
            pkt = self._factory.parse(buf)
        except Exception as e:
            log.info("tftp %s:%d: malformed request (%s)", *peer, _short(e))
            self._error(self.sock, peer, ERR_ILLEGAL_OP)
            return
        if isinstance(pkt, TftpPacketWRQ):
            log.info("tftp %s:%d: refused write of %r: read-only server", *peer, pkt.filename[:200])
            self._error(self.sock, peer, ERR_ACCESS)
            return
        assert isinstance(pkt, TftpPacketRRQ)
        if peer in self._transfers:
            return  # the client re-sent its request; the transfer's own retransmission answers it
        if pkt.mode not in ("octet", "netascii"):
            log.info("tftp %s:%d: refused mode %r", *peer, pkt.mode[:20])
            self._error(self.sock, peer, ERR_ILLEGAL_OP)
            return
        if len(self._transfers) >= self.max_sessions:
            log.warning("tftp %s:%d: refused %r: %d transfers already running", *peer, pkt.filename[:200],
                        len(self._transfers))
            self._error(self.sock, peer, ERR_NOT_DEFINED)
            return
        name = pkt.filename
        if len(name) > 1024 or any(ord(c) < 32 for c in name):
            log.info("tftp %s:%d: refused an unprintable or overlong file name", *peer)
            self._error(self.sock, peer, ERR_ACCESS)
            return
        resolved = self.resolve(name, peer)
        if not resolved.found:
            log.info("tftp %s:%d: %r: %s", *peer, name[:200], resolved.why)
            self._error(self.sock, peer, resolved.error)
            return
        self._begin(peer, name, resolved, {k.lower(): v for k, v in pkt.options.items()})

    def _begin(self, peer, name: str, resolved: Resolved, options: dict[str, str]) -> None:
        if resolved.data is not None:
            data = resolved.data
            size = len(data)
            read = lambda off, n: data[off:off + n]  # noqa: E731
            close = lambda: None  # noqa: E731
        else:
            try:
                fd = os.open(resolved.path, os.O_RDONLY)
            except OSError as e:
                log.info("tftp %s:%d: %r: cannot open (%s)", *peer, name[:200], e.strerror)
                self._error(self.sock, peer, ERR_ACCESS)
                return
            size = os.fstat(fd).st_size
            read = lambda off, n: os.pread(fd, n, off)  # noqa: E731
            close = lambda: os.close(fd)  # noqa: E731
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((self.host, 0))      # a fresh port: the transfer ID (RFC 1350)
        sock.setblocking(False)
        t = _Transfer(sock, peer, name, size, read, close, timeout=self.timeout)
        t.oack = self._negotiate(t, options)
        self._transfers[peer] = t
        self._sel.register(sock, selectors.EVENT_READ, t)
        log.debug("tftp %s:%d: sending %r (%d bytes, options %s)", *peer, name, size, t.oack)
        if t.oack:
            self._send_oack(t)
        else:
            self._send_window(t)

    def _negotiate(self, t: _Transfer, options: dict[str, str]) -> dict[str, str]:
        """Accept what we can of the client's options; a value we cannot use is left out."""
        accepted: dict[str, str] = {}
        for key, value in options.items():
            try:
                n = int(value)
            except (TypeError, ValueError):
                continue
            if key == "blksize" and n >= MIN_BLKSIZE:
                t.blksize = min(n, MAX_BLKSIZE)
                accepted[key] = str(t.blksize)
            elif key == "tsize" and n >= 0:
                accepted[key] = str(t.size)
            elif key == "timeout" and 1 <= n <= 255:
                t.timeout = float(n)
                accepted[key] = str(n)
            elif key == "windowsize" and n >= 1:
                t.windowsize = min(n, MAX_WINDOW)
                accepted[key] = str(t.windowsize)
        return accepted

    # -- transfers --------------------------------------------------------------------------

    def _on_transfer_packet(self, t: _Transfer) -> None:
        try:
            buf, peer = t.sock.recvfrom(MAX_PACKET)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:    # the client's port is gone (ICMP unreachable)
            log.info("tftp %s:%d: %r: client went away (%s)", *t.peer, t.name[:200], e.strerror)
            self._end(t)
            return
        if peer != t.peer:
            self._error(t.sock, peer, ERR_UNKNOWN_TID)
            return
        if len(buf) < 4:
            return
        opcode, number = struct.unpack("!HH", buf[:4])
        if opcode == ERROR:
            # UEFI firmware asks for tsize, then aborts and asks again: an ordinary end
            log.debug("tftp %s:%d: %r: client ended the transfer (error %d)", *t.peer, t.name, number)
            self._end(t)
            return
        if opcode != ACK:
            return
        if t.oack is not None and t.acked == 0 and t.sent_upto == 0:
            if number == 0:
                self._send_window(t)
            return
        block = self._absolute(t, number)
        if block is None or block <= t.acked:
            return      # duplicate or stray: the timeout resends if something was lost
        t.acked = block
        t.retries = 0
        if t.acked >= t.last_block:
            self.served += 1
            log.debug("tftp %s:%d: sent %r, %d bytes in %.2fs", *t.peer, t.name, t.size,
                      time.monotonic() - t.started)
            self._end(t)
        elif t.acked >= t.sent_upto:
            self._send_window(t)

    @staticmethod
    def _absolute(t: _Transfer, wire: int) -> int | None:
        # block numbers wrap at 65536; only the blocks in flight can be meant
        for block in range(t.acked + 1, t.sent_upto + 1):
            if block % 65536 == wire:
                return block
        return None

    def _send_window(self, t: _Transfer) -> None:
        first = t.acked + 1
        last = min(t.acked + t.windowsize, t.last_block)
        for block in range(first, last + 1):
            pkt = TftpPacketDAT()
            pkt.blocknumber = block % 65536
            pkt.data = t.read((block - 1) * t.blksize, t.blksize)
            self._send(t, pkt.encode().buffer)
        t.sent_upto = last
        t.last_send = time.monotonic()

    def _send_oack(self, t: _Transfer) -> None:
        pkt = TftpPacketOACK()
        pkt.options = t.oack
        self._send(t, pkt.encode().buffer)
        t.last_send = time.monotonic()

    def _send(self, t: _Transfer, data: bytes) -> None:
        try:
            t.sock.sendto(data, t.peer)
        except OSError as e:
            log.debug("tftp %s:%d: send failed: %s", *t.peer, e)

    def _check_timeouts(self) -> None:
        now = time.monotonic()
        for t in list(self._transfers.values()):
            if now - t.last_send < t.timeout:
                continue
            t.retries += 1
            if t.retries > self.retries:
                log.info("tftp %s:%d: %r: client vanished after block %d of %d", *t.peer, t.name[:200],
                         t.acked, t.last_block)
                self._end(t)
            elif t.oack is not None and t.sent_upto == 0:
                self._send_oack(t)
            else:
                self._send_window(t)

    def _end(self, t: _Transfer) -> None:
        if self._transfers.get(t.peer) is t:
            del self._transfers[t.peer]
        try:
            self._sel.unregister(t.sock)
        except (KeyError, ValueError):
            pass
        t.sock.close()
        t.close_source()

    def _error(self, sock: socket.socket, peer, code: int) -> None:
        pkt = TftpPacketERR()
        pkt.errorcode = code
        try:
            sock.sendto(pkt.encode().buffer, peer)
        except OSError:
            pass

    @property
    def active(self) -> int:
        return len(self._transfers)


def _short(e: Exception) -> str:
    return (f"{type(e).__name__}: {e}")[:200]
