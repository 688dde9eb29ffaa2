"""A static file server for kernels and initrds: one non-blocking loop, sendfile(2), no threads.

In a boot storm every machine pulls tens of megabytes at once. Served by the WSGI workers, each
transfer holds a worker thread for its whole length and kickstarts queue behind them; here a
transfer is a few sendfile calls driven by one selector loop, as nginx does it, and the WSGI
workers stay free for kickstarts and the API. GET and HEAD only, one byte range at most,
`Connection: close` after every answer.
"""

from __future__ import annotations

import email.utils
import errno
import logging
import os
import re
import selectors
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from provisioner.background import BackgroundServer

log = logging.getLogger(__name__)

MAX_HEADER = 16 * 1024
IDLE_TIMEOUT = 60.0
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


@dataclass(eq=False)
class _Conn:
    sock: socket.socket
    peer: tuple
    inbuf: bytes = b""
    outbuf: bytes = b""
    fd: int | None = None
    offset: int = 0
    remaining: int = 0
    last: float = field(default_factory=time.monotonic)


class FileServer(BackgroundServer):
    thread_name = "files"

    def __init__(self, resolve: Callable[[str], Path | None], host: str, port: int, backlog: int = 4096):
        super().__init__()
        self.resolve = resolve
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(backlog)
        self.sock.setblocking(False)
        self.host, self.port = self.sock.getsockname()
        self._sel = selectors.DefaultSelector()
        self._sel.register(self.sock, selectors.EVENT_READ, None)

    def serve_forever(self) -> None:
        last_sweep = time.monotonic()
        try:
            while not self._stop.is_set():
                for key, events in self._sel.select(timeout=0.5):
                    try:
                        if key.data is None:
                            self._accept()
                        elif events & selectors.EVENT_READ:
                            self._read(key.data)
                        else:
                            self._write(key.data)
                    except Exception:   # one connection's trouble never stops the loop
                        log.exception("files: unexpected error")
                        if key.data is not None:
                            self._close(key.data)
                if time.monotonic() - last_sweep > 5:
                    last_sweep = time.monotonic()
                    self._sweep()
        finally:
            for key in list(self._sel.get_map().values()):
                if key.data is not None:
                    self._close(key.data)
            self._sel.close()
            self.sock.close()

    def _accept(self) -> None:
        for _ in range(64):
            try:
                sock, peer = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:   # e.g. too many open files: keep serving the ones we have
                log.warning("files: accept failed: %s", e)
                return
            sock.setblocking(False)
            self._sel.register(sock, selectors.EVENT_READ, _Conn(sock, peer))

    def _read(self, c: _Conn) -> None:
        try:
            data = c.sock.recv(8192)
        except (BlockingIOError, InterruptedError):
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
            return
        head = c.inbuf.split(b"\r\n\r\n", 1)[0].decode("latin-1")
        lines = head.split("\r\n")
        parts = lines[0].split()
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            self._respond(c, 400, "bad request line")
            return
        method, target = parts[0], parts[1]
        if method not in ("GET", "HEAD"):
            self._respond(c, 405, "GET and HEAD only")
            return
        headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        path = self.resolve(target.split("?", 1)[0])
        if path is None:
            self._respond(c, 404, "not found")
            return
        self._send_file(c, path, method == "HEAD", headers.get("range"))

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
        c.outbuf = (f"HTTP/1.1 {status} {'OK' if status == 200 else 'Partial Content'}\r\n"
                    f"Content-Type: application/octet-stream\r\nContent-Length: {length}\r\n"
                    f"Accept-Ranges: bytes\r\n{extra}"
                    f"Last-Modified: {email.utils.formatdate(st.st_mtime, usegmt=True)}\r\n"
                    f"Connection: close\r\nServer: provisioner\r\n\r\n").encode()
        if head_only:
            os.close(fd)
        else:
            c.fd, c.offset, c.remaining = fd, start, length
        self._sel.modify(c.sock, selectors.EVENT_WRITE, c)

    def _respond(self, c: _Conn, status: int, reason: str, extra: str = "") -> None:
        body = f"{reason}\n".encode()
        c.outbuf = (f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n"
                    f"{extra}Connection: close\r\n\r\n").encode() + body
        self._sel.modify(c.sock, selectors.EVENT_WRITE, c)

    def _write(self, c: _Conn) -> None:
        c.last = time.monotonic()
        try:
            if c.outbuf:
                sent = c.sock.send(c.outbuf)
                c.outbuf = c.outbuf[sent:]
                if c.outbuf:
                    return
            while c.fd is not None and c.remaining > 0:
                sent = os.sendfile(c.sock.fileno(), c.fd, c.offset, min(c.remaining, 1 << 24))
                if sent == 0:
                    break
                c.offset += sent
                c.remaining -= sent
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            if e.errno not in (errno.EPIPE, errno.ECONNRESET):
                log.info("files %s: %s", c.peer[0], e)
            self._close(c)
            return
        if not c.outbuf and (c.fd is None or c.remaining <= 0):
            self._close(c)

    def _sweep(self) -> None:
        now = time.monotonic()
        for key in list(self._sel.get_map().values()):
            if key.data is not None and now - key.data.last > IDLE_TIMEOUT:
                self._close(key.data)

    def _close(self, c: _Conn) -> None:
        try:
            self._sel.unregister(c.sock)
        except (KeyError, ValueError):
            pass
        if c.fd is not None:
            os.close(c.fd)
            c.fd = None
        try:
            c.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        c.sock.close()
