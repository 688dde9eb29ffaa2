"""A non-blocking HTTP/1.1 server loop that a slow, broken or hostile client cannot wear down.

One thread runs a selector over the listening socket and every connection; a second (optional,
`bulk=True`) sends files with sendfile(2), so a request never waits behind megabytes. Requests
are parsed by h11, never by hand, and each connection answers one request (`Connection: close`):
a booting machine asks once per connection, and a closed connection has no state to smuggle into.

The limits, and why (`Limits`; every one is a knob, the tests turn them down):

- Strict framing: one Content-Length at most, no Transfer-Encoding (411: nothing that talks to
  us sends chunked bodies, and one framing rule leaves nothing for two parsers to disagree on),
  no obs-fold, no bare CR or LF, a head of 16 KiB at most (431), a body of 1 MiB at most (413,
  said from the head, before any of it is read).
- The body is read only once the subclass admits the head (`admit`): a callback with a wrong
  token is refused without the server waiting for, or holding, its megabyte.
- Connections per process are capped (default: what RLIMIT_NOFILE leaves room for, two
  descriptors each: a socket and a file). At the cap the loop stops accepting; the kernel's
  backlog holds the rest, and they are taken as the deadlines below free places. Queued, a
  firmware HTTP client waits; refused, it would give up the boot.
- Deadlines run from fixed points, so trickling bytes does not extend them: the head (and the
  TLS handshake) within `head_timeout` of the accept, the body within `body_timeout` of the
  head, and an answer is sent at `min_rate` on average once `send_grace` has passed, so a reader
  that takes a byte a second is dropped rather than holding a descriptor for days.
- Out of descriptors (EMFILE on accept), the listening socket leaves the selector for a short,
  doubling pause: a level-triggered socket that cannot be accepted from would otherwise spin a
  core and log a line each time round. The log line is rate-limited.
- Whatever goes wrong with one connection closes that connection, and only it; every descriptor
  it had (socket, file) is closed on every path.
"""

from __future__ import annotations

import errno
import logging
import os
import queue
import re
import resource
import selectors
import socket
import ssl
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http import HTTPStatus
from typing import Callable
from urllib.parse import unquote

import h11

from provisioner.background import BackgroundServer

log = logging.getLogger("provisioner.http")

READ, WRITE = selectors.EVENT_READ, selectors.EVENT_WRITE
HANDSHAKE, HEAD, BODY, APP, SEND, DRAIN = range(6)      # a connection's phases, in order
_OUT_OF_FDS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
_CONTENT_LENGTH = re.compile(rb"\ncontent-length:([^\r\n]*)", re.IGNORECASE)
_PHRASES = {s.value: s.phrase for s in HTTPStatus}


def _bad_head(head: bytes) -> bool:
    """What h11 lets through and strict HTTP/1.1 does not: a CR or LF that is not part of a CRLF,
    and obs-fold (a line that starts with whitespace continues the one before). Counted in C:
    a regular expression with a look-behind took ten times as long, on every request."""
    crlf = head.count(b"\r\n")
    return (head.count(b"\r") != crlf or head.count(b"\n") != crlf
            or b"\n " in head or b"\n\t" in head)


@dataclass(frozen=True)
class Limits:
    max_conns: int | None = None    # per process; None: as many as RLIMIT_NOFILE has room for
    head_timeout: float = 30.0      # from the accept to the end of the head (TLS handshake included)
    body_timeout: float = 30.0      # from the end of the head to the end of the body
    max_header: int = 16 * 1024
    max_body: int = 1024 * 1024     # callbacks carry a log tail at most; the API takes JSON
    min_rate: float = 8 * 1024      # bytes/s, averaged over an answer's sending, once...
    send_grace: float = 30.0        # ...this long has passed since it started

    def conn_cap(self) -> int:
        if self.max_conns:
            return self.max_conns
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft == resource.RLIM_INFINITY:
            soft = 1 << 16
        # two descriptors a connection (its socket, the file it is sent) and some to spare for
        # the database, logs and the listening sockets
        return max(16, min(8192, (soft - 64) // 2))


class Request:
    __slots__ = ("method", "target", "path", "query", "headers", "version")

    def __init__(self, ev: h11.Request):
        self.method = ev.method.decode("ascii")
        self.target = ev.target.decode("latin-1")
        path, _, self.query = self.target.partition("?")
        self.path = unquote(path, "latin-1")
        self.headers = ev.headers       # (lower-case name, value) pairs, bytes
        self.version = ev.http_version.decode("ascii")

    def header(self, name: bytes) -> str | None:
        for k, v in self.headers:
            if k == name:
                return v.decode("latin-1")
        return None


class Conn:
    __slots__ = ("sock", "peer", "loop", "events", "phase", "parser", "raw", "request", "body", "outbuf",
                 "fd", "offset", "remaining", "deadline", "send_start", "sent", "total", "tls", "closed",
                 "drained", "note")

    def __init__(self, sock, peer, loop, tls: bool):
        self.sock, self.peer, self.loop, self.tls = sock, peer, loop, tls
        self.events = 0                 # what its loop's selector waits for on it (0: not registered)
        self.phase = HANDSHAKE if tls else HEAD
        self.parser: h11.Connection | None = None
        self.raw = bytearray()          # the head as received, for the checks h11 does not make
        self.request: Request | None = None
        self.body = bytearray()
        self.outbuf = memoryview(b"")
        self.fd: int | None = None      # a file being sent after outbuf, and its range
        self.offset = self.remaining = 0
        self.deadline = 0.0
        self.send_start = 0.0
        self.sent = self.total = self.drained = 0
        self.closed = False
        self.note = None                # what the subclass's `admit` found, for its `handle`


class _Loop:
    def __init__(self, name: str):
        self.name = name
        self.sel = selectors.DefaultSelector()
        self.conns: set[Conn] = set()
        self.next_sweep = 0.0


def listening_socket(host: str, port: int, *, share: bool = False, backlog: int = 4096) -> socket.socket:
    """share: several processes each listen on the port (SO_REUSEPORT); the kernel spreads the
    connections between them, as nginx's workers do."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if share:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(backlog)
    return sock


class Response:
    """An answer to send: a head and body in memory, then a file descriptor's range if any."""
    __slots__ = ("status", "headers", "body", "fd", "offset", "length")

    def __init__(self, status: int | str, headers: list[tuple[str, str]], body: bytes = b"",
                 fd: int | None = None, offset: int = 0, length: int = 0):
        self.status, self.headers, self.body = status, headers, body
        self.fd, self.offset, self.length = fd, offset, length


class HttpServer(BackgroundServer):
    """Subclasses say what a request means: `admit(c, request)` once its head is read (a Response
    refuses it and its body is never read), `handle(c, request, body)` once all of it is, which
    calls `send(c, response)` now or later (from this loop's thread: see `wsgi`)."""
    thread_name = "http"

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, sock: socket.socket | None = None,
                 limits: Limits | None = None, ssl_context: ssl.SSLContext | None = None, bulk: bool = False):
        super().__init__()
        self.limits = limits or Limits()
        self.cap = self.limits.conn_cap()
        self.ssl_context = ssl_context
        self.sock = sock or listening_socket(host, port)
        self.sock.setblocking(False)
        self.host, self.port = self.sock.getsockname()[:2]
        self._main = _Loop(self.thread_name)
        self._sel = self._main.sel        # BackgroundServer.close closes it
        self._sel.register(self.sock, READ, self._accept)
        self._listening = True
        self._resume_at = 0.0           # when accepting starts again after running out of descriptors
        self._backoff = 0.0
        self._fd_errors = 0             # accept failures since the last line about them
        self._fd_logged = 0.0
        self._open = 0                  # connections this process holds, in either loop
        self._open_lock = threading.Lock()
        self._bulk: _Loop | None = None
        self._bulk_thread: threading.Thread | None = None
        if bulk:
            self._bulk = _Loop(self.thread_name + "-bulk")
            self._handoff: queue.SimpleQueue[Conn] = queue.SimpleQueue()
            self._wake_r, self._wake_w = _wake_pair()
            self._bulk.sel.register(self._wake_r, READ, self._take_handoffs)

    # -- what subclasses say --------------------------------------------------------------------

    def admit(self, c: Conn, request: Request) -> Response | None:
        return None

    def handle(self, c: Conn, request: Request, body: bytes) -> None:  # pragma: no cover
        raise NotImplementedError

    def end_round(self) -> None:
        """After each round of the request loop that did something."""

    @property
    def open_connections(self) -> int:
        return self._open

    # -- threads --------------------------------------------------------------------------------

    def start(self):
        if self._bulk:
            self._bulk_thread = threading.Thread(target=self._serve_bulk, name=self._bulk.name, daemon=True)
            self._bulk_thread.start()
        return super().start()

    def stop(self) -> None:
        super().stop()
        if self._bulk_thread:
            self._bulk_thread.join(timeout=5)

    def close(self) -> None:
        super().close()
        if self._bulk:
            self._bulk.sel.close()
            self._wake_r.close()
            self._wake_w.close()

    def serve_forever(self) -> None:
        try:
            self._run(self._main)
        finally:
            self._main.sel.close()
            self.sock.close()

    def _serve_bulk(self) -> None:
        try:
            self._run(self._bulk)
        finally:
            self._bulk.sel.close()
            self._wake_r.close()
            self._wake_w.close()

    def _run(self, loop: _Loop) -> None:
        main = loop is self._main
        try:
            while not self._stop.is_set():
                ready = loop.sel.select(timeout=self._select_timeout() if main else 0.5)
                for key, _ in ready:
                    c = key.data
                    if type(c) is not Conn:
                        c()                 # the listening socket, a wake-up
                        continue
                    try:
                        self._step(c)
                    except Exception:       # one connection's trouble never stops the loop
                        log.exception("%s: unexpected error", loop.name)
                        self._close(c)
                now = time.monotonic()
                if main:
                    if ready:
                        self.end_round()
                    if not self._listening:
                        self._maybe_listen(now)
                if now >= loop.next_sweep:
                    loop.next_sweep = now + 0.25
                    self._sweep(loop, now)
        finally:
            for c in list(loop.conns):
                self._close(c)

    def _select_timeout(self) -> float:
        if self._listening:
            return 0.25
        if self._resume_at:
            return min(0.25, max(0.0, self._resume_at - time.monotonic()))
        return 0.05     # at the cap: a place may free in the other loop, which does not wake this one

    # -- accepting ------------------------------------------------------------------------------

    def _accept(self) -> None:
        for _ in range(64):
            if self._open >= self.cap:
                self._unlisten(0.0)
                return
            try:
                sock, peer = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                if e.errno in _OUT_OF_FDS:
                    self._out_of_descriptors(e)
                    return
                continue                    # e.g. ECONNABORTED: that client's, not ours
            self._backoff = 0.0
            with self._open_lock:
                self._open += 1
            sock.setblocking(False)
            c = Conn(sock, peer, self._main, self.ssl_context is not None)
            c.deadline = time.monotonic() + self.limits.head_timeout
            self._main.conns.add(c)
            # the request is usually there already: answer it now, and the socket may never need
            # registering (three selector calls and two rounds saved per request)
            try:
                if c.tls:
                    c.sock = self.ssl_context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
                self._step(c)
            except Exception:   # that connection's trouble, not the other accepted ones'
                log.exception("%s: unexpected error", self._main.name)
                self._close(c)

    def _out_of_descriptors(self, e: OSError) -> None:
        now = time.monotonic()
        self._backoff = min(1.0, self._backoff * 2 or 0.02)
        self._unlisten(now + self._backoff)
        self._fd_errors += 1
        if now - self._fd_logged >= 10:
            log.warning("%s: accept failed: %s (%d times since the last such line); "
                        "%d connections open, pausing accepts", self._main.name, e.strerror,
                        self._fd_errors, self._open)
            self._fd_logged, self._fd_errors = now, 0

    def _unlisten(self, until: float) -> None:
        if self._listening:
            self._sel.unregister(self.sock)
            self._listening = False
        self._resume_at = until

    def _maybe_listen(self, now: float) -> None:
        if now >= self._resume_at and self._open < self.cap:
            self._sel.register(self.sock, READ, self._accept)
            self._listening = True
            self._resume_at = 0.0

    # -- reading --------------------------------------------------------------------------------

    def _step(self, c: Conn) -> None:
        phase = c.phase
        if phase == HEAD or phase == BODY:
            self._read(c)
        elif phase == SEND:
            self._write(c)
        elif phase == HANDSHAKE:
            self._handshake(c)
        elif phase == DRAIN:
            self._drain(c)

    def _handshake(self, c: Conn) -> None:
        try:
            c.sock.do_handshake()
        except ssl.SSLWantReadError:
            self._want(c, READ)
            return
        except ssl.SSLWantWriteError:
            self._want(c, WRITE)
            return
        except OSError:         # ssl.SSLError included: not TLS, or not a cipher we speak
            self._close(c)
            return
        c.phase = HEAD
        self._read(c)

    def _read(self, c: Conn) -> None:
        try:
            data = c.sock.recv(65536)
            if c.tls and data:
                while c.sock.pending():         # decrypted already: no readiness event will come
                    data += c.sock.recv(65536)
        except (BlockingIOError, InterruptedError, ssl.SSLWantReadError):
            self._want(c, READ)
            return
        except ssl.SSLWantWriteError:
            self._want(c, WRITE)
            return
        except OSError:
            self._close(c)
            return
        if not data:        # gone, or half-closed before a whole request: nothing to answer
            self._close(c)
            return
        if c.parser is None:
            c.parser = h11.Connection(h11.SERVER, max_incomplete_event_size=self.limits.max_header)
        if c.phase == HEAD:
            c.raw += data
        c.parser.receive_data(data)
        self._parse(c)

    def _parse(self, c: Conn) -> None:
        p = c.parser
        limits = self.limits
        try:
            while True:
                ev = p.next_event()
                kind = type(ev)
                if ev is h11.NEED_DATA:
                    if c.phase == HEAD and len(c.raw) > limits.max_header:
                        self.refuse(c, 431, "request head too large")
                    else:
                        self._want(c, READ)
                    return
                if kind is h11.Request:
                    if not self._head_read(c, ev):
                        return
                    if c.phase == HEAD:
                        # no body (no Content-Length, or 0; no Transfer-Encoding, refused): h11's
                        # next event can only be EndOfMessage, so it is not asked for
                        break
                elif kind is h11.Data:
                    c.body += ev.data
                elif kind is h11.EndOfMessage:
                    break
                else:                           # PAUSED (a second request): one a connection
                    break
        except h11.RemoteProtocolError as e:
            self.refuse(c, e.error_status_hint if 400 <= e.error_status_hint < 600 else 400, str(e))
            return
        except (ValueError, UnicodeError):      # what h11 does not catch itself, e.g. a huge number
            self.refuse(c, 400, "bad request")
            return
        c.phase = APP
        self._want(c, 0)
        body, c.body = bytes(c.body), bytearray()
        self.handle(c, c.request, body)

    def _head_read(self, c: Conn, ev: h11.Request) -> bool:
        """Check the head h11 accepted, then ask the subclass; False if the request was refused."""
        raw, c.raw = c.raw, bytearray()
        end = raw.find(b"\r\n\r\n")
        if end > self.limits.max_header or end < 0 and len(raw) > self.limits.max_header:
            # h11 caps only a head still incomplete; one that came whole in a read is ours to cap
            self.refuse(c, 431, "request head too large")
            return False
        head = bytes(raw[:end]) if end >= 0 else bytes(raw)
        if end < 0 or _bad_head(head):
            self.refuse(c, 400, "bare CR or LF, or obs-fold, in the request head")
            return False
        lengths = _CONTENT_LENGTH.findall(head)
        if len(lengths) > 1 or (lengths and b"," in lengths[0]):
            self.refuse(c, 400, "one Content-Length at most")
            return False
        if ev.http_version not in (b"1.1", b"1.0"):
            self.refuse(c, 505, "HTTP/1.1 or 1.0 only")
            return False
        c.request = request = Request(ev)
        length = 0
        for k, v in ev.headers:
            if k == b"transfer-encoding":
                self.refuse(c, 411, "a body needs Content-Length")
                return False
            if k == b"content-length":
                length = int(v)         # h11 checked it is digits, and few enough for int()
        if length > self.limits.max_body:
            self.refuse(c, 413, "body too large")
            return False
        refusal = self.admit(c, request)
        if refusal is not None:
            self.send(c, refusal, linger=length > 0)
            return False
        if length:
            c.phase = BODY
            c.deadline = time.monotonic() + self.limits.body_timeout
            if c.parser.they_are_waiting_for_100_continue:
                try:        # curl waits a second for this before sending a body over 1 KiB
                    c.sock.send(b"HTTP/1.1 100 Continue\r\n\r\n")
                except (OSError, ssl.SSLError):
                    pass    # then it sends the body after its wait
        return True

    # -- writing --------------------------------------------------------------------------------

    def refuse(self, c: Conn, status: int, reason: str, extra: list[tuple[str, str]] = ()) -> None:
        body = f"{reason}\n".encode()
        self.send(c, Response(status, [("Content-Type", "text/plain; charset=utf-8"), *extra], body),
                  linger=c.phase in (HEAD, BODY))

    def send(self, c: Conn, r: Response, *, head_only: bool = False, linger: bool = False,
             bulk: bool = False) -> None:
        """Send `r` and close; from the request loop's thread. linger: the client may still be
        sending, so read and drop its bytes a moment after the answer (closing on unread bytes
        sends a reset, which can destroy the answer before the client reads it). bulk: the file
        goes from the transfer loop."""
        if c.closed:
            if r.fd is not None:
                os.close(r.fd)
            return
        status = r.status
        if isinstance(status, int):
            status = f"{status} {_PHRASES.get(status, 'Unknown')}"
        # a HEAD answered by the app comes without its body, and with the length the GET's has
        length = r.length if r.fd is not None or (head_only and r.length) else len(r.body)
        lines = [f"HTTP/1.1 {status}\r\n"]
        lines += [f"{k}: {v}\r\n" for k, v in r.headers]
        lines.append(f"Content-Length: {length}\r\nConnection: close\r\nServer: provisioner\r\n\r\n")
        out = "".join(lines).encode("latin-1")
        if not head_only:
            out += r.body
        if head_only or not r.length:
            if r.fd is not None:
                os.close(r.fd)
        else:
            c.fd, c.offset, c.remaining = r.fd, r.offset, r.length
        c.outbuf = memoryview(out)
        c.total = len(out) + c.remaining
        c.phase = SEND
        c.drained = -1 if linger else 0
        c.send_start = time.monotonic()
        if bulk and self._bulk and c.fd is not None:
            self._hand_off(c)
        else:
            self._write(c)

    def _write(self, c: Conn) -> None:
        try:
            while True:
                if c.outbuf:
                    n = c.sock.send(c.outbuf)
                    c.sent += n
                    c.outbuf = c.outbuf[n:]
                elif c.fd is not None and c.remaining > 0:
                    if c.tls:
                        chunk = os.pread(c.fd, min(c.remaining, 1 << 16), c.offset)
                        if not chunk:
                            break       # the file shrank: the client sees a short body
                        c.outbuf = memoryview(chunk)
                        c.offset += len(chunk)
                        c.remaining -= len(chunk)
                        continue
                    n = os.sendfile(c.sock.fileno(), c.fd, c.offset, min(c.remaining, 1 << 24))
                    if n == 0:
                        break
                    c.offset += n
                    c.remaining -= n
                    c.sent += n
                else:
                    break
        except (BlockingIOError, InterruptedError, ssl.SSLWantWriteError):
            self._want(c, WRITE)
            return
        except ssl.SSLWantReadError:
            self._want(c, READ)
            return
        except OSError as e:
            if e.errno not in (errno.EPIPE, errno.ECONNRESET, None):
                log.info("%s %s: %s", c.loop.name, c.peer[0], e)
            self._close(c)
            return
        if c.drained < 0:
            self._linger(c)
        else:
            self._close(c)

    def _linger(self, c: Conn) -> None:
        if c.fd is not None:
            os.close(c.fd)
            c.fd = None
        try:
            c.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self._close(c)
            return
        c.phase = DRAIN
        c.drained = 0
        c.deadline = time.monotonic() + 2.0
        self._drain(c)

    def _drain(self, c: Conn) -> None:
        try:
            while c.drained < self.limits.max_body:
                data = c.sock.recv(65536)
                if not data:
                    break
                c.drained += len(data)
        except (BlockingIOError, InterruptedError, ssl.SSLWantReadError):
            self._want(c, READ)
            return
        except OSError:
            pass
        self._close(c)

    # -- the transfer loop ----------------------------------------------------------------------

    def _hand_off(self, c: Conn) -> None:
        self._want(c, 0)
        self._main.conns.discard(c)
        c.loop = self._bulk
        self._handoff.put(c)
        try:
            self._wake_w.send(b"\0")
        except (BlockingIOError, InterruptedError):
            pass    # the pipe is full of wake-ups already

    def _take_handoffs(self) -> None:
        _drain_wakeups(self._wake_r)
        while True:
            try:
                c = self._handoff.get_nowait()
            except queue.Empty:
                return
            self._bulk.conns.add(c)
            try:
                self._write(c)
            except Exception:
                log.exception("%s: unexpected error", self._bulk.name)
                self._close(c)

    # -- bookkeeping ----------------------------------------------------------------------------

    def _want(self, c: Conn, events: int) -> None:
        """Have c's loop wait for `events` on it (0: for nothing)."""
        if events == c.events:
            return
        sel = c.loop.sel
        if not c.events:
            sel.register(c.sock, events, c)
        elif not events:
            sel.unregister(c.sock)
        else:
            sel.modify(c.sock, events, c)
        c.events = events

    def _sweep(self, loop: _Loop, now: float) -> None:
        limits = self.limits
        for c in list(loop.conns):
            phase = c.phase
            if phase == SEND:
                elapsed = now - c.send_start
                if elapsed > limits.send_grace and c.sent < min(c.total, limits.min_rate * elapsed):
                    log.info("%s %s: dropped: %d of %d bytes taken in %.0f s", loop.name, c.peer[0],
                             c.sent, c.total, elapsed)
                    self._close(c)
            elif phase != APP and now > c.deadline:
                if phase in (HEAD, BODY) and (c.raw or c.body or c.parser):
                    try:        # one try, no waiting: the client may be reading nothing at all
                        c.sock.send(b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\n"
                                    b"Connection: close\r\n\r\n")
                    except (OSError, ssl.SSLError):
                        pass
                self._close(c)

    def _close(self, c: Conn) -> None:
        if c.closed:
            return
        c.closed = True
        if c.events:
            try:
                c.loop.sel.unregister(c.sock)
            except (KeyError, ValueError, OSError):
                pass
            c.events = 0
        c.loop.conns.discard(c)
        try:
            if c.fd is not None:
                os.close(c.fd)
                c.fd = None
        finally:
            c.sock.close()
            with self._open_lock:
                self._open -= 1


def _wake_pair() -> tuple[socket.socket, socket.socket]:
    r, w = socket.socketpair()
    r.setblocking(False)
    w.setblocking(False)
    return r, w


def _drain_wakeups(sock: socket.socket) -> None:
    try:
        while sock.recv(4096):
            pass
    except (BlockingIOError, InterruptedError):
        pass


class Deferred:
    """For an HttpServer whose answers may block (the Flask app; a callback that waits for the
    disk): they run on a bounded pool, and the loop sends them when they are done, so it never
    waits. Mix in before HttpServer; call `defer`."""

    pool_threads = 4
    pool_name = "http"

    def _init_deferred(self, threads: int | None = None) -> None:
        self.pool_threads = threads or self.pool_threads
        self._pool: ThreadPoolExecutor | None = None    # made in start(): no thread before then
        self._done: queue.SimpleQueue[tuple[Conn, Response, bool]] = queue.SimpleQueue()
        self._done_r, self._done_w = _wake_pair()
        self._sel.register(self._done_r, 1, self._take_done)

    def start(self):
        self._pool = ThreadPoolExecutor(self.pool_threads, thread_name_prefix=self.pool_name)
        return super().start()

    def stop(self) -> None:
        super().stop()
        if self._pool:
            self._pool.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        super().close()
        self._done_r.close()
        self._done_w.close()

    def serve_forever(self) -> None:
        try:
            super().serve_forever()
        finally:
            self._done_r.close()
            self._done_w.close()

    def defer(self, c: Conn, answer: Callable[[], Response], head_only: bool = False) -> None:
        self._pool.submit(self._call, c, answer, head_only)

    def defer_task(self, task: Callable[[], None]) -> None:
        """Work with no answer to send (e.g. writing what a round of requests noted)."""
        self._pool.submit(task)

    def _call(self, c: Conn, answer: Callable[[], Response], head_only: bool) -> None:
        try:
            response = answer()
        except BaseException:
            log.exception("%s: an answer failed", self.thread_name)
            response = Response(500, [("Content-Type", "text/plain; charset=utf-8")], b"internal error\n")
        self._done.put((c, response, head_only))
        try:
            self._done_w.send(b"\0")
        except (BlockingIOError, InterruptedError):
            pass    # the pipe is full of wake-ups already
        except OSError:
            pass    # stopped meanwhile

    def _take_done(self) -> None:
        """Back on the loop: send what the pool finished."""
        _drain_wakeups(self._done_r)
        while True:
            try:
                c, response, head_only = self._done.get_nowait()
            except queue.Empty:
                return
            try:
                self.send(c, response, head_only=head_only)
            except Exception:
                log.exception("%s: sending an answer", self.thread_name)
                self._close(c)
