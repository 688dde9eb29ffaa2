"""The API's front: whole requests from the hardened loop, the WSGI app on a bounded thread pool.

gunicorn's threaded workers gave each connection a thread from the moment it was accepted, so
32 clients that each sent half a request held every thread and the API answered nobody. Here
the loop (`loop.HttpServer`) reads every request to its end under the same caps and deadlines
as the boot port, without a thread; only a complete request reaches the app, on one of
`threads` threads, and the answer is written back by the loop, so a client that reads slowly
holds a descriptor, never a thread. With an SSLContext the port speaks TLS: the handshake runs
inside the loop, under the head's deadline, so one that never finishes blocks nobody.

Bodies the app returns are gathered in memory, except a file (`wsgi.file_wrapper`, Flask's
send_file), which is sent from its descriptor. A request with a body is first shown to `admit`
(e.g. the installer callback's token check), as on the boot port.
"""

from __future__ import annotations

import io
import logging
import os
import socket
import ssl
import sys
from typing import Callable
from urllib.parse import unquote_to_bytes

from provisioner.http.loop import Conn, Deferred, HttpServer, Limits, Request, Response

log = logging.getLogger(__name__)

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "upgrade",
               "proxy-connection", "te", "trailer"}


class FileWrapper:
    """wsgi.file_wrapper: lets the server send the file from its descriptor."""

    def __init__(self, f, blksize: int = 8192):
        self.f, self.blksize = f, blksize

    # its own iterator, seekable as werkzeug's is: a range request wraps it (werkzeug's
    # _RangeWrapper) and then seeks it, reads it and closes it through iter(it)
    def __iter__(self):
        return self

    def __next__(self) -> bytes:
        chunk = self.f.read(self.blksize)
        if not chunk:
            raise StopIteration
        return chunk

    def seekable(self) -> bool:
        return hasattr(self.f, "seek")

    def seek(self, *args) -> int:
        return self.f.seek(*args)

    def tell(self) -> int:
        return self.f.tell()

    def close(self) -> None:
        self.f.close()


class ApiServer(Deferred, HttpServer):
    thread_name = "api-http"
    pool_name = "api"

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0, *, sock: socket.socket | None = None,
                 threads: int = 16, limits: Limits | None = None, ssl_context: ssl.SSLContext | None = None,
                 admit: Callable[[Request, str], Response | None] | None = None):
        super().__init__(host, port, sock=sock, limits=limits, ssl_context=ssl_context)
        self._init_deferred(threads)
        self.app = app
        self.admit_head = admit
        self.threads = threads
        self.scheme = "https" if ssl_context else "http"

    def admit(self, c: Conn, request: Request) -> Response | None:
        if self.admit_head is None:
            return None
        try:
            return self.admit_head(request, c.peer[0])
        except Exception:
            log.exception("api: admitting %s %s failed", request.method, request.target[:200])
            return Response(500, [("Content-Type", "text/plain; charset=utf-8")], b"internal error\n")

    def handle(self, c: Conn, request: Request, body: bytes) -> None:
        self.defer(c, lambda: self._run_app(c, request, body), head_only=request.method == "HEAD")

    # -- on a pool thread -----------------------------------------------------------------------

    def _run_app(self, c: Conn, request: Request, body: bytes) -> Response:
        started: list = []

        def start_response(status, headers, exc_info=None):
            if exc_info and started:
                raise exc_info[1].with_traceback(exc_info[2])
            started[:] = [status, headers]
            return chunks.append

        chunks: list[bytes] = []
        result = self.app(self._environ(c, request, body), start_response)
        fd = None
        try:
            if type(result) is FileWrapper and hasattr(result.f, "fileno"):
                fd = os.dup(result.f.fileno())
                offset = result.f.tell()
            else:
                chunks.extend(result)
        finally:
            if hasattr(result, "close"):
                result.close()
        status, app_headers = started
        headers = [(k, v) for k, v in app_headers if k.lower() not in _HOP_BY_HOP]
        declared = next((v for k, v in app_headers if k.lower() == "content-length"), None)
        if fd is None:
            body = b"".join(chunks)
            if request.method == "HEAD" and declared and declared.isdigit():
                return Response(status, headers, body, length=int(declared))
            return Response(status, headers, body)
        try:
            length = int(declared) if declared is not None else os.fstat(fd).st_size - offset
        except BaseException:
            os.close(fd)
            raise
        return Response(status, headers, fd=fd, offset=offset, length=length)

    def _environ(self, c: Conn, request: Request, body: bytes) -> dict:
        path, _, query = request.target.partition("?")
        env = {
            "REQUEST_METHOD": request.method,
            "SCRIPT_NAME": "",
            "PATH_INFO": unquote_to_bytes(path).decode("latin-1"),
            "QUERY_STRING": query,
            "SERVER_NAME": str(self.host),
            "SERVER_PORT": str(self.port),
            "SERVER_PROTOCOL": f"HTTP/{request.version}",
            "REMOTE_ADDR": c.peer[0],
            "REMOTE_PORT": str(c.peer[1]),
            "CONTENT_LENGTH": str(len(body)),
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": self.scheme,
            "wsgi.input": io.BytesIO(body),
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": True,
            "wsgi.run_once": False,
            "wsgi.input_terminated": True,
            "wsgi.file_wrapper": FileWrapper,
        }
        for name, value in request.headers:
            key = name.decode("latin-1").upper()
            if "_" in key:
                continue    # X-Foo_Bar would pass for X-Foo-Bar in the environ: drop it, as gunicorn does
            key = key.replace("-", "_")
            if key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
                if key == "CONTENT_TYPE":
                    env[key] = value.decode("latin-1")
                continue
            key = "HTTP_" + key
            value = value.decode("latin-1")
            env[key] = f"{env[key]},{value}" if key in env else value
        return env

