"""The boot server: the HTTP port machines are sent to. Two non-blocking loops, one thread each.

In a boot storm every machine pulls tens of megabytes at once, then asks for its kickstart and
reports back twice. The request loop accepts, reads and answers: kickstarts and callbacks inline
from `node_http` (a fraction of a millisecond each), without a WSGI stack around them, so they
do not queue behind the operators' API. Kernels and initrds are handed to the transfer loop,
which sends them with sendfile(2) as nginx does: a sendfile call copies megabytes, and a
kickstart must not wait behind a thousand of them.

The loops, the parsing (h11) and every limit are `provisioner.http.loop`'s: a head within 30 s
of the accept, a body of 1 MiB at most within 30 s more, answers sent at a minimum average
rate, a cap on connections, no chunked bodies (411). What is ours: GET, HEAD and POST only; a
request's head goes to `admit` (node_http's: a callback with a wrong token is refused before
its body is read) and the whole request to `answer`; one byte range at most.
"""

from __future__ import annotations

import email.utils
import errno
import logging
import os
import re
import socket
import sys
from pathlib import Path
from typing import Callable

from provisioner.http.loop import Conn, Deferred, HttpServer, Limits, Request, Response, listening_socket
from provisioner.boot.node_http import Reply

__all__ = ["BootServer", "listening_socket", "Limits"]

log = logging.getLogger(__name__)

# a number of 19 digits at most: fits an int64 offset, and int() of it is cheap
_RANGE = re.compile(r"bytes=(\d{0,19})-(\d{0,19})")


class BootServer(Deferred, HttpServer):
    thread_name = "boot-http"
    pool_name = "boot-write"
    # Callbacks write to the registry, and `installed` waits for the disk (fsync) before it is
    # answered: on the loop, each would hold every kickstart and kernel behind it. A few threads
    # are enough, as writers take turns on the registry's lock anyway.
    pool_threads = 4
    switch_interval = 0.0005

    def __init__(self, answer: Callable[..., Reply], host: str = "127.0.0.1", port: int = 0, *,
                 sock: socket.socket | None = None, after_round: Callable[[], None] | None = None,
                 admit: Callable[..., Reply | None] | None = None, limits: Limits | None = None):
        """answer(method, path, body, authorization, peer[, admitted]) -> Reply; admit(method,
        path, authorization, peer), before the body is read: a Reply refuses, anything else
        admits and is handed to `answer` as `admitted` (None is not)."""
        super().__init__(host, port, sock=sock, limits=limits, bulk=True)
        self._init_deferred()
        self.answer = answer
        self.admit_head = admit
        self.after_round = after_round      # e.g. write what a round of answers noted, in one go
        self._round_pending = False         # one write of noted fetches queued at a time
        self._round_answered = False        # a GET was answered from memory since the last write

    def start(self):
        # The request loop shares the GIL with the transfer loop, the pool and the kickstart
        # renderer, and gives it up at every system call (accept, recv, send); each time, Python's
        # default switch interval (5 ms) lets another thread keep it that long before the loop
        # gets it back, several times a request. A boot server process runs only this server.
        if sys.getswitchinterval() > self.switch_interval:
            sys.setswitchinterval(self.switch_interval)
        return super().start()

    def admit(self, c: Conn, request: Request) -> Response | None:
        if request.method not in ("GET", "HEAD", "POST"):
            return _text(405, "GET, HEAD and POST only")
        if self.admit_head is None:
            return None
        try:
            reply = self.admit_head(request.method, request.path, request.header(b"authorization"), c.peer[0])
        except Exception:
            log.exception("boot http: admitting %s %s failed", request.method, request.target[:200])
            reply = Reply.text("internal error\n", 500)
        if isinstance(reply, Reply):
            return _response(reply)
        c.note = reply      # the route and node admit found: answer goes on from them
        return None

    def handle(self, c: Conn, request: Request, body: bytes) -> None:
        method = request.method
        if method == "POST":
            self.defer(c, lambda: _response(self._answer(request, body, c.peer[0], c.note)))
            return
        try:
            reply = self._reply(method, request, body, c.peer[0], c.note)
        except Exception:   # one request's trouble is that request's 500, never the loop's
            log.exception("boot http: %s %s failed", method, request.target[:200])
            reply = Reply.text("internal error\n", 500)
        if reply.path is not None:
            self._send_file(c, reply.path, method == "HEAD", request.header(b"range"))
        else:
            self._round_answered = True     # it may have noted something (a kickstart fetch)
            self.send(c, _response(reply), head_only=method == "HEAD")

    def _reply(self, method: str, request: Request, body: bytes, peer: str, admitted) -> Reply:
        if admitted is None:
            return self.answer(method, request.path, body, request.header(b"authorization"), peer)
        return self.answer(method, request.path, body, request.header(b"authorization"), peer, admitted)

    def _answer(self, request: Request, body: bytes, peer: str, admitted) -> Reply:
        try:
            return self._reply(request.method, request, body, peer, admitted)
        except Exception:   # one request's trouble is that request's 500, never the loop's
            log.exception("boot http: %s %s failed", request.method, request.target[:200])
            return Reply.text("internal error\n", 500)

    def end_round(self) -> None:
        """Write what this round's answers noted, in one transaction: in a storm, a round holds
        dozens of kickstart fetches. (The answers went out as they were made: waiting for the
        commit cost more latency than the registry lagging them by a round is worth.) On the
        pool: the commit may wait for a callback's fsync, and the loop must not. Only after a
        round that answered a GET from memory: a round of accepts, file hand-offs or callbacks
        notes nothing, and handing the pool a task costs as much as answering a request."""
        if self.after_round and self._round_answered and not self._round_pending:
            self._round_pending = True
            self._round_answered = False
            self.defer_task(self._after_round)

    def _after_round(self) -> None:
        self._round_pending = False
        try:
            self.after_round()
        except Exception:
            log.exception("boot http: after a round of requests")

    def _send_file(self, c: Conn, path: Path, head_only: bool, range_header: str | None) -> None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            if e.errno in (errno.EMFILE, errno.ENFILE):
                self.refuse(c, 503, "busy", [("Retry-After", "5")])
            else:
                self.refuse(c, 404, "not found")
            return
        try:        # until `send` owns fd, every way out closes it
            response = _file_response(fd, range_header)
        except BaseException:
            os.close(fd)
            raise
        if response.status == 416:
            os.close(fd)
            response.fd = None
        self.send(c, response, head_only=head_only, bulk=True)


def _file_response(fd: int, range_header: str | None) -> Response:
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
            return Response(416, [("Content-Type", "text/plain; charset=utf-8"),
                                  ("Content-Range", f"bytes */{size}")], b"range not satisfiable\n")
        status = 206
    length = end - start + 1 if size else 0
    headers = [("Content-Type", "application/octet-stream"), ("Accept-Ranges", "bytes")]
    if status == 206:
        headers.append(("Content-Range", f"bytes {start}-{end}/{size}"))
    headers.append(("Last-Modified", email.utils.formatdate(st.st_mtime, usegmt=True)))
    return Response(status, headers, fd=fd, offset=start, length=length)


def _response(reply: Reply) -> Response:
    return Response(reply.status, [("Content-Type", reply.content_type)], reply.body)


def _text(status: int, reason: str) -> Response:
    return Response(status, [("Content-Type", "text/plain; charset=utf-8")], f"{reason}\n".encode())
