"""The boot server: the HTTP port machines are sent to. Two non-blocking loops, one thread each.

In a boot storm every machine pulls tens of megabytes at once, then asks for its kickstart and
reports back twice. The request loop accepts, reads and answers: kickstarts and callbacks inline
from `node_http` (a fraction of a millisecond each), without a WSGI stack around them, so they
do not queue behind the operators' API. Kernels and initrds are handed to the transfer loop,
which sends them with sendfile(2) as nginx does: a sendfile call copies megabytes, and a
kickstart must not wait behind a thousand of them. GET, HEAD and POST with a Content-Length, one byte range at most, `Connection: close` after
every answer.
"""

from __future__ import annotations

import email.utils
import errno
import logging
import os
import queue
import re
import selectors
import socket
import threading
import time
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Callable
from urllib.parse import unquote

from provisioner.background import BackgroundServer
from provisioner.node_http import Reply

log = logging.getLogger(__name__)

MAX_HEADER = 16 * 1024
MAX_BODY = 1024 * 1024          # as the service port's limit: callbacks carry a log tail at most
IDLE_TIMEOUT = 60.0
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


@dataclass(eq=False)
class _Conn:
    sock: socket.socket
    peer: tuple
    sel: selectors.BaseSelector
    events: int = 0                 # what its loop's selector waits for on it (0: not registered)
    inbuf: bytes = b""
    outbuf: bytes = b""
    fd: int | None = None
    offset: int = 0
    remaining: int = 0
    last: float = field(default_factory=time.monotonic)


def listening_socket(host: str, port: int, *, share: bool = False, backlog: int = 4096) -> socket.socket:
    """share: several processes each listen on the port (SO_REUSEPORT); the kernel spreads the
    connections between them, as nginx's workers do."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if share:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(backlog)
    return sock


class BootServer(BackgroundServer):
    thread_name = "boot-http"

    def __init__(self, answer: Callable[[str, str, bytes, str | None], Reply], host: str = "127.0.0.1",
                 port: int = 0, *, sock: socket.socket | None = None,
                 after_round: Callable[[], None] | None = None):
        super().__init__()
        self.answer = answer
        self.after_round = after_round      # e.g. write what a round of answers noted, in one go
        self.sock = sock or listening_socket(host, port)
        self.sock.setblocking(False)
        self.host, self.port = self.sock.getsockname()[:2]
        self._sel = selectors.DefaultSelector()
        self._sel.register(self.sock, selectors.EVENT_READ, None)
        self._bulk = selectors.DefaultSelector()
        self._handoff: queue.SimpleQueue[_Conn] = queue.SimpleQueue()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._bulk.register(self._wake_r, selectors.EVENT_READ, None)
        self._bulk_thread: threading.Thread | None = None

    def start(self):
        self._bulk_thread = threading.Thread(target=self._serve_bulk, name="boot-http-bulk", daemon=True)
        self._bulk_thread.start()
        return super().start()

    def stop(self) -> None:
        super().stop()
        if self._bulk_thread:
            self._bulk_thread.join(timeout=5)

    def close(self) -> None:
        super().close()
        self._bulk.close()
        self._wake_r.close()
        self._wake_w.close()

    def serve_forever(self) -> None:
        """The request loop: accept, read, answer; small answers are sent from here."""
        try:
            self._loop(self._sel, self._accept, self._end_round)
        finally:
            self._sel.close()
            self.sock.close()

    def _serve_bulk(self) -> None:
        try:
            self._loop(self._bulk, self._take_handoffs)
        finally:
            self._bulk.close()
            self._wake_r.close()
            self._wake_w.close()

    def _loop(self, sel: selectors.BaseSelector, on_own_socket, end_round=None) -> None:
        last_sweep = time.monotonic()
        try:
            while not self._stop.is_set():
                ready = sel.select(timeout=0.5)
                for key, events in ready:
                    try:
                        if key.data is None:
                            on_own_socket()
                        elif events & selectors.EVENT_READ:
                            self._read(key.data)
                        else:
                            self._write(key.data)
                    except Exception:   # one connection's trouble never stops the loop
                        log.exception("boot http: unexpected error")
                        if key.data is not None:
                            self._close(key.data)
                if end_round and ready:
                    end_round()
                if time.monotonic() - last_sweep > 5:
                    last_sweep = time.monotonic()
                    self._sweep(sel)
        finally:
            for key in list(sel.get_map().values()):
                if key.data is not None:
                    self._close(key.data)

    def _end_round(self) -> None:
        """Write what this round's answers noted, in one transaction: in a storm, a round holds
        dozens of kickstart fetches. (The answers went out as they were made: waiting for the
        commit cost more latency than the registry lagging them by a round is worth.)"""
        if self.after_round:
            try:
                self.after_round()
            except Exception:
                log.exception("boot http: after a round of requests")

    def _take_handoffs(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass
        while True:
            try:
                c = self._handoff.get_nowait()
            except queue.Empty:
                return
            c.sel = self._bulk
            self._want(c, selectors.EVENT_WRITE)

    def _hand_off(self, c: _Conn) -> None:
        self._want(c, 0)
        self._handoff.put(c)
        try:
            self._wake_w.send(b"\0")
        except (BlockingIOError, InterruptedError):
            pass    # the pipe is full of wake-ups already

    def _accept(self) -> None:
        for _ in range(64):
            try:
                sock, peer = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:   # e.g. too many open files: keep serving the ones we have
                log.warning("boot http: accept failed: %s", e)
                return
            sock.setblocking(False)
            # the request is usually there already: answer it now, and the socket never needs
            # registering (three selector calls and two rounds saved per request)
            c = _Conn(sock, peer, self._sel)
            try:
                self._read(c)
            except Exception:   # that connection's trouble, not the other accepted ones'
                log.exception("boot http: unexpected error")
                self._close(c)

    def _want(self, c: _Conn, events: int) -> None:
        """Have c's loop wait for `events` on it (0: for nothing)."""
        if events == c.events:
            return
        if not c.events:
            c.sel.register(c.sock, events, c)
        elif not events:
            c.sel.unregister(c.sock)
        else:
            c.sel.modify(c.sock, events, c)
        c.events = events

    def _read(self, c: _Conn) -> None:
        try:
            data = c.sock.recv(8192)
        except (BlockingIOError, InterruptedError):
            self._want(c, selectors.EVENT_READ)
            return
        except OSError:
            self._close(c)
            return
        if not data:
            self._close(c)
            return
        c.last = time.monotonic()
        c.inbuf += data
        if b"\r\n\r\n" not in c.inbuf:
            if len(c.inbuf) > MAX_HEADER:
                self._respond(c, 431, "header too large")
            else:
                self._want(c, selectors.EVENT_READ)
            return
        head, _, body = c.inbuf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split()
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            self._respond(c, 400, "bad request line")
            return
        method, target = parts[0], parts[1]
        if method not in ("GET", "HEAD", "POST"):
            self._respond(c, 405, "GET, HEAD and POST only")
            return
        headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        if "transfer-encoding" in headers:
            self._respond(c, 411, "a body needs Content-Length")
            return
        try:
            length = int(headers.get("content-length", "0"))
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY:
            self._respond(c, 413 if length > MAX_BODY else 400, "body too large" if length > 0 else "bad Content-Length")
            return
        if len(body) < length:
            self._want(c, selectors.EVENT_READ)     # the rest of the body is still on its way
            return
        try:
            reply = self.answer(method, unquote(target.split("?", 1)[0]), body[:length], headers.get("authorization"))
        except Exception:   # one request's trouble is that request's 500, never the loop's
            log.exception("boot http: %s %s failed", method, target[:200])
            reply = Reply.text("internal error\n", 500)
        if reply.path is not None:
            self._send_file(c, reply.path, method == "HEAD", headers.get("range"))
        else:
            c.outbuf = _head(reply.status, reply.content_type, len(reply.body)) + (
                b"" if method == "HEAD" else reply.body)
            self._write(c)

    def _send_file(self, c: _Conn, path: Path, head_only: bool, range_header: str | None) -> None:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            self._respond(c, 404, "not found")
            return
        st = os.fstat(fd)
        size, start, end, status = st.st_size, 0, st.st_size - 1, 200
        if range_header:
            m = _RANGE.fullmatch(range_header.strip())
            first, last = (m.group(1), m.group(2)) if m else ("", "")
            if m and (first or last):
                if first:
                    start, end = int(first), min(int(last), size - 1) if last else size - 1
                else:
                    start, end = max(0, size - int(last)), size - 1
            if not m or not (first or last) or start > end or start >= size:
                os.close(fd)
                self._respond(c, 416, "range not satisfiable", extra=f"Content-Range: bytes */{size}\r\n")
                return
            status = 206
        length = end - start + 1 if size else 0
        extra = f"Content-Range: bytes {start}-{end}/{size}\r\n" if status == 206 else ""
        c.outbuf = _head(status, "application/octet-stream", length, f"Accept-Ranges: bytes\r\n{extra}"
                         f"Last-Modified: {email.utils.formatdate(st.st_mtime, usegmt=True)}\r\n")
        if head_only or not length:
            os.close(fd)
            self._write(c)
        else:
            c.fd, c.offset, c.remaining = fd, start, length
            self._hand_off(c)

    def _respond(self, c: _Conn, status: int, reason: str, extra: str = "") -> None:
        body = f"{reason}\n".encode()
        c.outbuf = _head(status, "text/plain; charset=utf-8", len(body), extra) + body
        self._write(c)

    def _write(self, c: _Conn) -> None:
        c.last = time.monotonic()
        try:
            if c.outbuf:
                sent = c.sock.send(c.outbuf)
                c.outbuf = c.outbuf[sent:]
                if c.outbuf:
                    self._want(c, selectors.EVENT_WRITE)
                    return
            while c.fd is not None and c.remaining > 0:
                sent = os.sendfile(c.sock.fileno(), c.fd, c.offset, min(c.remaining, 1 << 24))
                if sent == 0:
                    break
                c.offset += sent
                c.remaining -= sent
        except (BlockingIOError, InterruptedError):
            self._want(c, selectors.EVENT_WRITE)
            return
        except OSError as e:
            if e.errno not in (errno.EPIPE, errno.ECONNRESET):
                log.info("boot http %s: %s", c.peer[0], e)
            self._close(c)
            return
        if not c.outbuf and (c.fd is None or c.remaining <= 0):
            self._close(c)

    def _sweep(self, sel: selectors.BaseSelector) -> None:
        now = time.monotonic()
        for key in list(sel.get_map().values()):
            if key.data is not None and now - key.data.last > IDLE_TIMEOUT:
                self._close(key.data)

    def _close(self, c: _Conn) -> None:
        try:
            self._want(c, 0)
        except (KeyError, ValueError, OSError):
            pass
        if c.fd is not None:
            os.close(c.fd)
            c.fd = None
        try:
            c.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        c.sock.close()


def _head(status: int, content_type: str, length: int, extra: str = "") -> bytes:
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = "Unknown"
    return (f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {length}\r\n"
            f"{extra}Connection: close\r\nServer: provisioner\r\n\r\n").encode()
