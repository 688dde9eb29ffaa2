"""Run the service as a few processes: the TFTP server here, the boot servers and the API forked.

- This process supervises, and serves TFTP (one loop, in a thread).
- Boot server processes (`bootsrv`, two by default): everything a booting machine fetches over
  HTTP. They share one port (SO_REUSEPORT), so a storm of a thousand machines is answered on
  every core, without a WSGI stack in the way, and never waits behind an operator.
- The API: a process that supervises `workers` API processes, which share the API port as the
  boot servers share theirs. Each reads whole requests in one non-blocking loop and runs the
  Flask app for them on `threads` threads (`http.wsgi`), so clients that send half a request,
  or read an answer slowly, hold no thread; with an SSLContext (`api_ssl`) the port is HTTPS.

Both ports are served by `http.loop`, whose limits (connections per process, deadlines for the
head, the body and the sending, 16 KiB heads, 1 MiB bodies) are `limits`; its docstring says why.

Every child is forked before any thread of ours starts: a process that forks while another of
its threads holds a lock (SQLite's, the logging module's) hands its children a lock nobody will
release. (gunicorn, which served the API before, forked its workers later and again whenever
one died.) The ports are bound before the forks, so a port in use is one clear error before
anything runs. Every process opens its own SQLite connections; writers take turns on an flock
(`registry`). If any child ends, the rest are stopped: a service that half-serves is worse than
one that stops.
"""

from __future__ import annotations

import ctypes
import logging
import os
import re
import signal
import ssl
import sys
import threading
import traceback
from pathlib import Path

from provisioner.app import create_app, open_context
from provisioner.boot.bootsrv import BootServer
from provisioner.boot.node_http import Reply
from provisioner.http.loop import Limits, Response, listening_socket
from provisioner.http.wsgi import ApiServer
from provisioner.boot.tftp import TftpServer

log = logging.getLogger(__name__)


def serve_forever(state_dir: Path, site, host: str, port: int, *, workers: int | None = None,
                  threads: int = 16, tftp: tuple[str, int] | None = None, tftp_per_source: int = 16,
                  boot: tuple[str, int] | None = None, boot_processes: int = 2,
                  limits: Limits | None = None, api_ssl: ssl.SSLContext | None = None) -> None:
    """workers: API processes sharing the port; threads: the Flask app's threads in each."""
    ctx = open_context(state_dir, site)          # secrets and site nodes, once, before the forks
    api_socks = _shared_sockets(host, port, workers or 2)
    port = api_socks[0].getsockname()[1]
    boot_socks = _shared_sockets(*boot, boot_processes) if boot else []
    if boot:
        boot = (boot[0], boot_socks[0].getsockname()[1])
    tftp_server = TftpServer(ctx.boot.tftp_resolve, *tftp, max_per_source=tftp_per_source) if tftp else None
    notes = f", boot http://{boot[0]}:{boot[1]}/ ({boot_processes} processes)" if boot else ""
    if tftp_server:
        notes += f", tftp://{tftp_server.host}:{tftp_server.port}/"
    scheme = "https" if api_ssl else "http"
    print(f"provisioner: serving {scheme}://{host}:{port}/{notes} "
          f"(state {state_dir}; admin token: provisioner token)", flush=True)
    sys.stdout.flush()
    sys.stderr.flush()

    supervisor = os.getpid()
    every_sock = api_socks + boot_socks

    def fork(name: str, run, keep) -> None:
        pid = os.fork()
        if pid == 0:
            _die_with(supervisor)
            for sock in every_sock:
                if sock not in keep:
                    sock.close()
            if tftp_server:
                tftp_server.close()
            os._exit(run())
        children[pid] = name

    # a stop signal waits until every process has its own handlers: one that came in between
    # would stop some parts and not others
    signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
    children: dict[int, str] = {}
    fork("the API", lambda: _run_api(state_dir, site, api_socks, threads, limits, api_ssl), keep=api_socks)
    for i, sock in enumerate(boot_socks, 1):
        fork(f"boot server {i}", lambda sock=sock: _run_boot_server(state_dir, site, sock, limits), keep=[sock])
    for sock in every_sock:
        sock.close()

    if tftp_server:
        tftp_server.start()
    try:
        failed = _supervise(children)
    finally:
        if tftp_server:
            tftp_server.stop()
    if failed:
        raise SystemExit(f"provisioner: {failed}; stopping")


def _shared_sockets(host: str, port: int, n: int) -> list:
    """n listening sockets on one port (the first picks it if port is 0), one per process."""
    socks = [listening_socket(host, port, share=True)]
    port = socks[0].getsockname()[1]
    try:
        socks += [listening_socket(host, port, share=True) for _ in range(n - 1)]
    except BaseException:
        for s in socks:
            s.close()
        raise
    return socks


def _supervise(children: dict[int, str]) -> str | None:
    """Wait for every child; the first that ends unasked stops the rest. Returns why, if one did."""
    stopping = False

    def stop(signum, _frame):
        nonlocal stopping
        stopping = True
        for pid in children:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    _on_stop(stop)
    failed = None
    while children:
        pid, status = os.wait()         # retried after each signal (PEP 475)
        name = children.pop(pid, None)
        code = os.waitstatus_to_exitcode(status)
        if name and not stopping:
            # one part of the service is gone: stop the rest rather than half-serve
            failed = f"{name} ended with status {code}"
            print(f"provisioner: {failed}; stopping", file=sys.stderr, flush=True)
            stop(None, None)
    return failed


def _run_boot_server(state_dir: Path, site, sock, limits: Limits | None) -> int:
    """One boot server process, with its own registry connections and kickstart cache."""
    done = threading.Event()
    _on_stop(lambda *_: done.set())
    try:
        ctx = open_context(state_dir, site)
        ctx.registry.checkpoint_in_background(done)
        server = BootServer(ctx.node_http.answer, sock=sock, after_round=ctx.node_http.after_round,
                            admit=ctx.node_http.admit, limits=limits).start()
        ctx.node_http.kickstarts.keep_warm(done)
        while not done.wait(1.0):
            pass
        server.stop()
        ctx.registry.flush()
    except BaseException:
        traceback.print_exc()
        return 1
    return 0


def _run_api(state_dir: Path, site, socks: list, threads: int, limits: Limits | None,
             api_ssl: ssl.SSLContext | None) -> int:
    """The API's supervisor: one process per socket, each serving the port on its own."""
    me = os.getpid()
    children: dict[int, str] = {}
    for i, sock in enumerate(socks, 1):
        pid = os.fork()
        if pid == 0:
            _die_with(me)
            for other in socks:
                if other is not sock:
                    other.close()
            os._exit(_run_api_process(state_dir, site, sock, threads, limits, api_ssl))
        children[pid] = f"API process {i}"
    for sock in socks:
        sock.close()
    try:
        return 1 if _supervise(children) else 0
    except BaseException:
        traceback.print_exc()
        return 1


_CALLBACK = re.compile(r"/api/v1/nodes/[^/]+/events")


def _run_api_process(state_dir: Path, site, sock, threads: int, limits: Limits | None,
                     api_ssl: ssl.SSLContext | None) -> int:
    done = threading.Event()
    _on_stop(lambda *_: done.set())
    try:
        app = create_app(state_dir, site)
        node_http = app.extensions["provisioner"].node_http

        def admit(request, peer: str) -> Response | None:
            # the installer's callback: its token is checked before its body is read, as on the
            # boot port; the rest of the API's writes are the admin's, and capped at 1 MiB
            if request.method != "POST" or not _CALLBACK.fullmatch(request.path):
                return None
            reply = node_http.admit(request.method, request.path, request.header(b"authorization"), peer)
            if not isinstance(reply, Reply):    # admitted (what it found is the boot routes' to redo)
                return None
            return Response(reply.status, [("Content-Type", reply.content_type)], reply.body)

        server = ApiServer(app, sock=sock, threads=threads, limits=limits, ssl_context=api_ssl,
                           admit=admit).start()
        while not done.wait(1.0):
            pass
        server.stop()
    except BaseException:
        traceback.print_exc()
        return 1
    return 0


_STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}


def _on_stop(handler, on_interrupt=None) -> None:
    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, on_interrupt or handler)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)


def _die_with(parent: int) -> None:
    """Have the kernel stop this process if `parent` dies, even by SIGKILL: a child left behind
    would go on holding the ports (Linux's PR_SET_PDEATHSIG)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(1, signal.SIGTERM, 0, 0, 0) != 0:           # 1: PR_SET_PDEATHSIG
        log.warning("prctl(PR_SET_PDEATHSIG): %s", os.strerror(ctypes.get_errno()))
    if os.getppid() != parent:      # it died before we asked
        os.kill(os.getpid(), signal.SIGTERM)
