"""A read-only TFTP server for boot loaders and per-MAC boot configs.

One selector loop serves every transfer (RFC 1350 lockstep, with blksize, tsize, timeout and
windowsize from RFC 2347-2349 and RFC 7440). Packets are parsed and built here with struct:
tftpy's codec (which this module used to use) raises on some error codes, so a refusal never
left, and parses a request in time quadratic in its length. A packet that cannot be handled
gets an ERROR or silence, at most one log line, and the loop goes on to the next client.

Anyone on the install network may be hostile (spoofed source addresses, clients that never
ACK, absurd options), so a transfer is bounded:

- at most `max_sessions` transfers at once, and at most `max_per_source` from one IP address
  (a PXE ROM needs one to three); a request over either cap is refused with an ERROR;
- a transfer that makes no progress for `stall_limit` seconds (30 by default) ends, whatever
  `timeout` its client asked for; retransmissions back off (doubling) within that, and end
  after `retries` of them;
- a client's `timeout` option is honoured up to a quarter of `stall_limit` and left out of
  the OACK above that (RFC 2349 lets a server ignore an option by omitting it);
- nothing large goes out before the client's first ACK: the OACK only (or block 1 without
  options), and a timeout re-sends only the first unacknowledged block, never the whole
  window, so a spoofed request reflects at most (retries + 1) small packets;
- a window is at most 64 blocks and at most 1 MiB; requests over 2048 bytes are refused, and
  options past the first 16 are ignored;
- refusal and give-up log lines are rate-limited (a burst of 20, then 10 a second; the number
  held back is logged with the next line);
- a transfer that cannot start gives back its socket and file descriptor at once.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import socket
import stat
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from provisioner.background import BackgroundServer

log = logging.getLogger(__name__)

RRQ, WRQ, DATA, ACK, ERROR, OACK = 1, 2, 3, 4, 5, 6
ERR_NOT_DEFINED, ERR_NOT_FOUND, ERR_ACCESS, ERR_ILLEGAL_OP, ERR_UNKNOWN_TID, ERR_OPTIONS = 0, 1, 2, 4, 5, 8
MIN_BLKSIZE, MAX_BLKSIZE = 8, 65464
MAX_WINDOW = 64
MAX_WINDOW_BYTES = 1 << 20
MAX_PACKET = 65536
MAX_REQUEST = 2048       # a name is at most 1024 bytes; RFC 2347 asks for requests under 512
MAX_OPTIONS = 16
MAX_BACKOFF = 16         # how much longer than the first the widest retransmission gap gets

# Short on purpose: an ERROR answers a packet whose source may be spoofed, so it should be
# no bigger than what it answers.
_MESSAGES = {
    ERR_NOT_DEFINED: "not served",
    ERR_NOT_FOUND: "file not found",
    ERR_ACCESS: "access violation",
    ERR_ILLEGAL_OP: "illegal operation",
    ERR_UNKNOWN_TID: "unknown TID",
    ERR_OPTIONS: "bad options",
}


def error_packet(code: int, message: str | None = None) -> bytes:
    """An ERROR packet for any code (tftpy's raises KeyError for codes it has no text for)."""
    text = (message if message is not None else _MESSAGES.get(code, "error")).encode("ascii", "replace")
    return struct.pack("!HH", ERROR, code & 0xFFFF) + text.replace(b"\0", b"?")[:200] + b"\0"


def oack_packet(options: dict[str, str]) -> bytes:
    return struct.pack("!H", OACK) + b"".join(k.encode() + b"\0" + v.encode() + b"\0" for k, v in options.items())


_HEAD = struct.Struct("!HH")
_pack_head = _HEAD.pack
_unpack_head = _HEAD.unpack_from


def data_packet(block: int, data: bytes) -> bytes:
    return _pack_head(DATA, block & 0xFFFF) + data


class BadRequest(ValueError):
    pass


@dataclass
class Request:
    opcode: int
    filename: str
    mode: str
    options: dict[str, str]


def parse_request(buf: bytes) -> Request:
    """An RRQ or WRQ: opcode, NUL-terminated name and mode, then NUL-terminated option pairs."""
    if len(buf) < 4 or buf[-1] != 0:
        raise BadRequest("not NUL-terminated")
    opcode = struct.unpack("!H", buf[:2])[0]
    parts = buf[2:-1].split(b"\0")
    if len(parts) < 2 or len(parts) % 2:
        raise BadRequest("odd number of fields")
    try:
        name, mode, *rest = (p.decode("ascii") for p in parts)
    except UnicodeDecodeError:
        raise BadRequest("not ASCII") from None
    if not name:
        raise BadRequest("empty file name")
    options: dict[str, str] = {}
    for i in range(0, min(len(rest), 2 * MAX_OPTIONS), 2):
        if not rest[i] or not rest[i + 1]:
            raise BadRequest("empty option name or value")
        options[rest[i].lower()] = rest[i + 1]
    return Request(opcode, name, mode.lower(), options)


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


class _Refused(Exception):
    def __init__(self, code: int, why: str, message: str | None = None):
        super().__init__(why)
        self.code, self.why, self.message = code, why, message


class _LogThrottle:
    """Log lines a hostile client can trigger: a burst, then `rate` a second; the rest are
    counted, and the count goes out with the next line (or on its own when things calm down)."""

    def __init__(self, rate: float = 10.0, burst: int = 20):
        self.rate, self.burst = rate, burst
        self.tokens = float(burst)
        self.stamp = time.monotonic()
        self.held = 0

    def _take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True

    def __call__(self, level: int, msg: str, *args, **kw) -> None:
        if not log.isEnabledFor(level):
            return
        if not self._take():
            self.held += 1
            return
        if self.held:
            msg += " (and %d similar lines held back)"
            args += (self.held,)
            self.held = 0
        log.log(level, msg, *args, **kw)

    def flush(self) -> None:
        if self.held and self._take():
            log.warning("tftp: %d similar lines held back", self.held)
            self.held = 0


class _Contents:
    """Small files' bytes, read once and shared by every transfer of them: a storm sends the same
    two loaders to every machine, and a read per block was a system call per packet. Keyed by the
    file's identity and version (device, inode, size, mtime), so a changed file is read again;
    bounded in bytes, oldest out first (a transfer that holds evicted bytes keeps only those)."""

    def __init__(self, max_file: int = 1 << 20, max_total: int = 16 << 20):
        self.max_file, self.max_total = max_file, max_total
        self._entries: dict[tuple, bytes] = {}
        self._total = 0

    def get(self, fd: int, st: os.stat_result) -> bytes | None:
        """The file's bytes, or None if it is too large to keep (then it is read block by block)."""
        if st.st_size > self.max_file:
            return None
        key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        data = self._entries.get(key)
        if data is None:
            data = os.pread(fd, st.st_size, 0)
            if len(data) != st.st_size:         # changed under us: read it again next time
                return data
            while self._entries and self._total + len(data) > self.max_total:
                self._total -= len(self._entries.pop(next(iter(self._entries))))
            self._entries[key] = data
            self._total += len(data)
        return data


class _Source:
    """The bytes a transfer sends: generated now, a small file's shared bytes (its descriptor
    closed at once), or a large file opened once and closed once."""

    def __init__(self, resolved: Resolved, contents: _Contents | None = None):
        self.fd: int | None = None
        if resolved.data is not None:
            self.data = resolved.data
            self.size = len(resolved.data)
            return
        self.data = None
        # O_NONBLOCK: a FIFO swapped in after resolve would otherwise block the whole loop here
        fd = os.open(resolved.path, os.O_RDONLY | os.O_NONBLOCK)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise _Refused(ERR_ACCESS, "not a regular file")
            data = contents.get(fd, st) if contents is not None else None
        except BaseException:
            os.close(fd)
            raise
        if data is not None:
            os.close(fd)
            self.data, self.size = data, len(data)
            return
        self.fd, self.size = fd, st.st_size

    def read(self, offset: int, n: int) -> bytes:
        if self.data is not None:
            return self.data[offset:offset + n]
        return os.pread(self.fd, n, offset)

    def close(self) -> None:
        # once only: a second close could hit a descriptor number reused by someone else
        fd, self.fd = self.fd, None
        if fd is not None:
            os.close(fd)


class _Transfer:
    # plain attributes, no properties: they are read for every packet
    __slots__ = ("sock", "peer", "name", "source", "size", "blksize", "windowsize", "timeout", "oack",
                 "acked", "sent_upto", "last_block", "retries", "resend_at", "started", "progress_at")

    def __init__(self, sock: socket.socket, peer: tuple[str, int], name: str, source: _Source, *,
                 timeout: float = 2.0, now: float | None = None):
        self.sock, self.peer, self.name, self.source = sock, peer, name, source
        self.size = source.size
        self.blksize = 512
        self.windowsize = 1
        self.timeout = timeout
        self.oack: dict[str, str] | None = None
        self.acked = 0          # absolute block number last acknowledged
        self.sent_upto = 0
        self.last_block = self.size // 512 + 1     # again once blksize is negotiated
        self.retries = 0
        self.resend_at = 0.0
        self.started = self.progress_at = time.monotonic() if now is None else now


class TftpServer(BackgroundServer):
    thread_name = "tftp"

    def __init__(self, resolve: Resolver, host: str = "0.0.0.0", port: int = 69, *,
                 timeout: float = 2.0, retries: int = 5, max_sessions: int = 2048,
                 max_per_source: int = 16, stall_limit: float = 30.0):
        super().__init__()
        self.resolve = resolve
        self.timeout = min(timeout, stall_limit)
        self.retries = retries
        self.max_sessions = max_sessions
        self.max_per_source = max_per_source
        self.stall_limit = stall_limit
        # room for at least two retransmissions within a session's life, with the backoff
        self.max_client_timeout = min(255.0, stall_limit / 4)
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
        # epoll itself, not `selectors`: its wrapper costs a call and a key lookup per packet
        self._sel = select.epoll()
        self._sel.register(self.sock.fileno(), select.EPOLLIN)
        self._by_fd: dict[int, _Transfer] = {}
        self._ack = bytearray(16)       # what a transfer port receives: ACKs and ERRORs, 4 bytes used
        self._contents = _Contents()
        self._transfers: dict[tuple[str, int], _Transfer] = {}
        self._per_source: dict[str, int] = {}
        self._note = _LogThrottle()
        self._next_check = 0.0
        self.served = 0      # completed transfers, for tests and status
        self.refused = 0     # requests refused by a cap

    # -- running ----------------------------------------------------------------------------

    def serve_forever(self) -> None:
        log.info("tftp: serving on %s:%d", self.host, self.port)
        main = self.sock.fileno()
        by_fd = self._by_fd
        try:
            while not self._stop.is_set():
                ready = self._sel.poll(0.25)
                # one clock reading a round: a packet's progress is stamped at most a round early,
                # which ends a stalled transfer sooner, never later
                now = time.monotonic()
                for fd, _ in ready:
                    try:
                        if fd == main:
                            for _ in range(64):      # drain a burst of requests in one go
                                if not self._on_request(now):
                                    break
                        else:
                            t = by_fd.get(fd)
                            if t is not None:       # ended earlier in this round
                                self._on_transfer_packet(t, now)
                    except Exception:  # one bad packet must never stop the server
                        self._note(logging.ERROR, "tftp: unexpected error; the server goes on", exc_info=True)
                now = time.monotonic()
                if now >= self._next_check:
                    # not after every packet: a flood would make each one cost a scan of all transfers
                    self._next_check = now + 0.05
                    self._check_timeouts(now)
                    self._note.flush()
        finally:
            for t in list(self._transfers.values()):
                self._end(t)
            self._sel.close()
            self.sock.close()

    # -- new requests -----------------------------------------------------------------------

    def _on_request(self, now: float) -> bool:
        """Handle one packet on the main port; False when there was none waiting."""
        try:
            buf, peer = self.sock.recvfrom(MAX_PACKET)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError as e:   # e.g. ICMP port unreachable from a vanished client
            log.debug("tftp: recv on the main socket failed: %s", e)
            return True
        self._handle_request(buf, peer, now)
        return True

    def _handle_request(self, buf: bytes, peer, now: float | None = None) -> None:
        opcode = struct.unpack("!H", buf[:2])[0] if len(buf) >= 2 else None
        if opcode not in (RRQ, WRQ):
            self._note(logging.INFO, "tftp %s:%d: ignored a packet that is not a request (%d bytes)",
                       *peer, len(buf))
            return
        if len(buf) > MAX_REQUEST:
            self._note(logging.INFO, "tftp %s:%d: refused a %d-byte request", *peer, len(buf))
            self._error(self.sock, peer, ERR_ILLEGAL_OP)
            return
        try:
            req = parse_request(buf)
        except BadRequest as e:
            self._note(logging.INFO, "tftp %s:%d: malformed request (%s)", *peer, e)
            self._error(self.sock, peer, ERR_ILLEGAL_OP)
            return
        if req.opcode == WRQ:
            self._note(logging.INFO, "tftp %s:%d: refused write of %r: read-only server", *peer, req.filename[:200])
            self._error(self.sock, peer, ERR_ACCESS)
            return
        if peer in self._transfers:
            return  # the client re-sent its request; the transfer's own retransmission answers it
        if req.mode not in ("octet", "netascii"):
            self._note(logging.INFO, "tftp %s:%d: refused mode %r", *peer, req.mode[:20])
            self._error(self.sock, peer, ERR_ILLEGAL_OP)
            return
        # the caps come before the resolver: refusing must stay cheaper than serving
        if len(self._transfers) >= self.max_sessions:
            self._refuse_busy(peer, req.filename, f"{len(self._transfers)} transfers already running",
                              "server busy")
            return
        if self._per_source.get(peer[0], 0) >= self.max_per_source:
            self._refuse_busy(peer, req.filename, f"{self.max_per_source} transfers already running for {peer[0]}",
                              "too many transfers from your address")
            return
        name = req.filename
        if len(name) > 1024 or any(ord(c) < 32 for c in name):
            self._note(logging.INFO, "tftp %s:%d: refused an unprintable or overlong file name", *peer)
            self._error(self.sock, peer, ERR_ACCESS)
            return
        try:
            resolved = self.resolve(name, peer)
        except Exception:
            self._note(logging.ERROR, "tftp %s:%d: %r: the resolver failed", *peer, name[:200], exc_info=True)
            self._error(self.sock, peer, ERR_NOT_DEFINED)
            return
        if not resolved.found:
            self._note(logging.INFO, "tftp %s:%d: %r: %s", *peer, name[:200], resolved.why)
            self._error(self.sock, peer, resolved.error)
            return
        self._begin(peer, name, resolved, req.options, now)

    def _refuse_busy(self, peer, name: str, why: str, message: str) -> None:
        self.refused += 1
        self._note(logging.WARNING, "tftp %s:%d: refused %r: %s", *peer, name[:200], why)
        self._error(self.sock, peer, ERR_NOT_DEFINED, message)

    def _begin(self, peer, name: str, resolved: Resolved, options: dict[str, str],
               now: float | None = None) -> None:
        try:
            source = _Source(resolved, self._contents)
        except _Refused as r:
            self._note(logging.INFO, "tftp %s:%d: %r: %s", *peer, name[:200], r.why)
            self._error(self.sock, peer, r.code)
            return
        except OSError as e:    # e.g. the file vanished between resolve and open
            self._note(logging.INFO, "tftp %s:%d: %r: cannot open (%s)", *peer, name[:200], e.strerror)
            self._error(self.sock, peer, ERR_NOT_FOUND if e.errno == errno.ENOENT else ERR_ACCESS)
            return
        try:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        except OSError as e:    # out of descriptors: refuse, and give back the file's
            source.close()
            self._note(logging.WARNING, "tftp %s:%d: %r: no socket for the transfer (%s)", *peer, name[:200],
                       e.strerror)
            self._error(self.sock, peer, ERR_NOT_DEFINED, "server busy")
            return
        t = _Transfer(sock, peer, name, source, timeout=self.timeout, now=now)
        try:
            sock.bind((self.host, 0))      # a fresh port: the transfer ID (RFC 1350)
            sock.setblocking(False)
            t.oack = self._negotiate(t, options)
            t.last_block = t.size // t.blksize + 1
            self._transfers[peer] = t
            self._per_source[peer[0]] = self._per_source.get(peer[0], 0) + 1
            self._sel.register(sock.fileno(), select.EPOLLIN)
            self._by_fd[sock.fileno()] = t
            log.debug("tftp %s:%d: sending %r (%d bytes, options %s)", *peer, name, t.size, t.oack)
            self._send_first(t, t.started)
        except Exception as e:
            self._end(t)
            self._note(logging.WARNING, "tftp %s:%d: %r: could not start (%s)", *peer, name[:200], _short(e))
            self._error(self.sock, peer, ERR_NOT_DEFINED)

    def _negotiate(self, t: _Transfer, options: dict[str, str]) -> dict[str, str]:
        """Accept what we can of the client's options; a value we cannot use is left out."""
        accepted: dict[str, str] = {}
        for key, value in options.items():
            if not value.isdigit():
                continue
            n = int(value)
            if key == "blksize" and n >= MIN_BLKSIZE:
                t.blksize = min(n, MAX_BLKSIZE)
                accepted[key] = str(t.blksize)
            elif key == "tsize":
                accepted[key] = str(t.size)
            elif key == "timeout" and 1 <= n <= self.max_client_timeout:
                t.timeout = float(n)
                accepted[key] = str(n)
            elif key == "windowsize" and n >= 1:
                t.windowsize = n
                accepted[key] = ""
        if "windowsize" in accepted:
            # after blksize, whatever order the options came in
            t.windowsize = max(1, min(t.windowsize, MAX_WINDOW, MAX_WINDOW_BYTES // t.blksize))
            accepted["windowsize"] = str(t.windowsize)
        return accepted

    # -- transfers --------------------------------------------------------------------------

    def _on_transfer_packet(self, t: _Transfer, now: float) -> None:
        # the one path every packet of a transfer takes: kept to a few calls
        ack = self._ack
        try:
            n, peer = t.sock.recvfrom_into(ack)      # a longer datagram is cut to the buffer: fine
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:    # the client's port is gone (ICMP unreachable)
            self._note(logging.INFO, "tftp %s:%d: %r: client went away (%s)", *t.peer, t.name[:200], e.strerror)
            self._end(t)
            return
        if peer != t.peer:
            self._error(t.sock, peer, ERR_UNKNOWN_TID)
            return
        if n < 4:
            return
        opcode, number = _unpack_head(ack)
        if opcode == ERROR:
            # UEFI firmware asks for tsize, then aborts and asks again: an ordinary end
            log.debug("tftp %s:%d: %r: client ended the transfer (error %d)", *t.peer, t.name, number)
            self._end(t)
            return
        if opcode != ACK:
            return
        if t.oack is not None and t.sent_upto == 0:
            if number == 0:
                t.retries = 0
                t.progress_at = now
                self._send_or_fail(t, now)
            return
        block = self._absolute(t, number)
        if block is None or block <= t.acked:
            return      # duplicate or stray: answering each would be the Sorcerer's Apprentice bug
        t.acked = block
        t.retries = 0
        t.progress_at = now
        if block >= t.last_block:
            self.served += 1
            log.debug("tftp %s:%d: sent %r, %d bytes in %.2fs", *t.peer, t.name, t.size, now - t.started)
            self._end(t)
        else:
            # the whole window acknowledged, or (RFC 7440) the client acknowledged the last block
            # it got in order and the window starts again after it
            self._send_or_fail(t, now)

    @staticmethod
    def _absolute(t: _Transfer, wire: int) -> int | None:
        # block numbers wrap at 65536; only the blocks in flight can be meant (a window is far
        # shorter than 65536, so at most one of them has this number)
        ahead = (wire - t.acked) & 0xFFFF
        return t.acked + ahead if 0 < ahead <= t.sent_upto - t.acked else None

    def _send_first(self, t: _Transfer, now: float) -> None:
        # before the client's first ACK its address may be spoofed: one small packet, no window
        if t.oack:
            self._send(t, oack_packet(t.oack))
        else:
            t.oack = None
            self._send_blocks(t, 1, 1)
        self._arm(t, now)

    def _send_or_fail(self, t: _Transfer, now: float) -> None:
        try:
            self._send_blocks(t, t.acked + 1, min(t.acked + t.windowsize, t.last_block))
            t.resend_at = now + t.timeout       # _arm, with no retries since this progress
        except Exception as e:
            self._fail(t, e)

    def _fail(self, t: _Transfer, e: Exception) -> None:
        self._note(logging.WARNING, "tftp %s:%d: %r: ended (%s)", *t.peer, t.name[:200], _short(e))
        self._error(t.sock, t.peer, ERR_NOT_DEFINED)
        self._end(t)

    def _send_blocks(self, t: _Transfer, first: int, last: int) -> None:
        sendto, peer, size = t.sock.sendto, t.peer, t.blksize
        data = t.source.data
        for block in range(first, last + 1):
            offset = (block - 1) * size
            chunk = data[offset:offset + size] if data is not None else t.source.read(offset, size)
            try:
                sendto(_pack_head(DATA, block & 0xFFFF) + chunk, peer)
            except OSError as e:
                log.debug("tftp %s:%d: send failed: %s", *peer, e)
        if last > t.sent_upto:
            t.sent_upto = last

    def _arm(self, t: _Transfer, now: float) -> None:
        t.resend_at = now + t.timeout * min(2 ** t.retries, MAX_BACKOFF)

    def _send(self, t: _Transfer, data: bytes) -> None:
        try:
            t.sock.sendto(data, t.peer)
        except OSError as e:
            log.debug("tftp %s:%d: send failed: %s", *t.peer, e)

    def _check_timeouts(self, now: float) -> None:
        for t in list(self._transfers.values()):
            if now < t.resend_at and now - t.progress_at < self.stall_limit:
                continue
            try:
                self._retransmit(t, now)
            except Exception as e:   # e.g. the file became unreadable: end this one, not the loop
                self._fail(t, e)

    def _retransmit(self, t: _Transfer, now: float) -> None:
        t.retries += 1
        if t.retries > self.retries or now - t.progress_at >= self.stall_limit:
            self._note(logging.INFO, "tftp %s:%d: %r: client vanished after block %d of %d (%.1fs without progress)",
                       *t.peer, t.name[:200], t.acked, t.last_block, now - t.progress_at)
            self._end(t)
        elif t.oack is not None and t.sent_upto == 0:
            self._send(t, oack_packet(t.oack))
            self._arm(t, now)
        else:
            # only the first block the client lacks: a whole window per timeout would let a
            # client that never ACKs (or a spoofed one) draw megabytes
            self._send_blocks(t, t.acked + 1, t.acked + 1)
            self._arm(t, now)

    def _end(self, t: _Transfer) -> None:
        if self._transfers.get(t.peer) is t:
            del self._transfers[t.peer]
            left = self._per_source.get(t.peer[0], 0) - 1
            if left > 0:
                self._per_source[t.peer[0]] = left
            else:
                self._per_source.pop(t.peer[0], None)   # spoofed sources must not pile up here
        fd = t.sock.fileno()
        if fd >= 0 and self._by_fd.get(fd) is t:
            del self._by_fd[fd]
            try:
                self._sel.unregister(fd)
            except (OSError, ValueError):
                pass
        t.sock.close()
        t.source.close()

    def _error(self, sock: socket.socket, peer, code: int, message: str | None = None) -> None:
        try:
            sock.sendto(error_packet(code, message), peer)
        except OSError:
            pass

    @property
    def active(self) -> int:
        return len(self._transfers)


def _short(e: Exception) -> str:
    return (f"{type(e).__name__}: {e}")[:200]
