"""Run the service as a few processes: the TFTP server here, the boot servers and the API forked.

- This process supervises, and serves TFTP (one loop, in a thread).
- Boot server processes (`bootsrv`, two by default): everything a booting machine fetches over
  HTTP. They share one port (SO_REUSEPORT), so a storm of a thousand machines is answered on
  every core, without a WSGI stack in the way, and never waits behind an operator.
- The API: the Flask app under gunicorn's threaded workers.

Every child is forked before any thread of ours starts. gunicorn forks its workers from its own
process, later and again whenever one dies; a process that forks while another of its threads
holds a lock (SQLite's, the logging module's) hands its children a lock nobody will release.
The ports are bound before the forks, so a port in use is one clear error before anything runs.
Every process opens its own SQLite connections; writers take turns on an flock (`registry`).
If any child ends, the rest are stopped: a service that half-serves is worse than one that stops.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
import threading
import traceback
from pathlib import Path

from gunicorn.app.base import BaseApplication

from provisioner.app import create_app, open_context
from provisioner.bootsrv import BootServer, listening_socket
from provisioner.tftp import TftpServer

log = logging.getLogger(__name__)


class _Service(BaseApplication):
    def __init__(self, state_dir: Path, site, options: dict):
        self.state_dir, self.site, self.options = state_dir, site, options
        super().__init__()

    def load_config(self):
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self):
        return create_app(self.state_dir, self.site)


def serve_forever(state_dir: Path, site, host: str, port: int, *, workers: int | None = None,
                  threads: int = 16, tftp: tuple[str, int] | None = None,
                  boot: tuple[str, int] | None = None, boot_processes: int = 2) -> None:
    ctx = open_context(state_dir, site)          # secrets and site nodes, once, before the forks
    boot_socks = []
    if boot:
        boot_socks.append(listening_socket(*boot, share=True))
        boot = (boot[0], boot_socks[0].getsockname()[1])
        boot_socks += [listening_socket(*boot, share=True) for _ in range(boot_processes - 1)]
    tftp_server = TftpServer(ctx.boot.tftp_resolve, *tftp) if tftp else None
    notes = f", boot http://{boot[0]}:{boot[1]}/ ({boot_processes} processes)" if boot else ""
    if tftp_server:
        notes += f", tftp://{tftp_server.host}:{tftp_server.port}/"
    print(f"provisioner: serving http://{host}:{port}/{notes} "
          f"(state {state_dir}; admin token: provisioner token)", flush=True)
    options = {
        "bind": f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
        "workers": workers or 2,
        "worker_class": "gthread",
        "threads": threads,
        "backlog": 2048,
        "timeout": 120,
        "graceful_timeout": 5,
        "keepalive": 5,
        "accesslog": None,
        "errorlog": "-",
        "loglevel": "warning",
        "proc_name": "provisioner",
    }
    sys.stdout.flush()
    sys.stderr.flush()

    supervisor = os.getpid()

    def fork(name: str, run, keep=None) -> None:
        pid = os.fork()
        if pid == 0:
            _die_with(supervisor)
            for sock in boot_socks:
                if sock is not keep:
                    sock.close()
            if tftp_server:
                tftp_server.close()
            os._exit(run())
        children[pid] = name

    # a stop signal waits until every process has its own handlers: one that came in between
    # would stop some parts and not others
    signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
    children: dict[int, str] = {}
    fork("the API", lambda: _run_api(state_dir, site, options))
    for i, sock in enumerate(boot_socks, 1):
        fork(f"boot server {i}", lambda sock=sock: _run_boot_server(state_dir, site, sock), keep=sock)
    for sock in boot_socks:
        sock.close()

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
    if tftp_server:
        tftp_server.start()
    failed = None
    try:
        while children:
            pid, status = os.wait()         # retried after each signal (PEP 475)
            name = children.pop(pid, None)
            code = os.waitstatus_to_exitcode(status)
            if name and not stopping:
                # one part of the service is gone: stop the rest rather than half-serve
                failed = f"provisioner: {name} ended with status {code}; stopping"
                print(failed, file=sys.stderr, flush=True)
                stop(None, None)
    finally:
        if tftp_server:
            tftp_server.stop()
    if failed:
        raise SystemExit(failed)


def _run_boot_server(state_dir: Path, site, sock) -> int:
    """One boot server process, with its own registry connections and kickstart cache."""
    done = threading.Event()
    _on_stop(lambda *_: done.set())
    try:
        ctx = open_context(state_dir, site)
        ctx.registry.checkpoint_in_background(done)
        server = BootServer(ctx.node_http.answer, sock=sock, after_round=ctx.node_http.after_round).start()
        ctx.node_http.kickstarts.keep_warm(done)
        while not done.wait(1.0):
            pass
        server.stop()
        ctx.registry.flush()
    except BaseException:
        traceback.print_exc()
        return 1
    return 0


def _run_api(state_dir: Path, site, options: dict) -> int:
    _on_stop(signal.SIG_DFL, signal.default_int_handler)     # until gunicorn sets its own
    try:
        _Service(state_dir, site, options).run()
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 1
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
