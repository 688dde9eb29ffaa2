"""Run the service as two processes: the boot plane, and the API under gunicorn.

- The boot plane (this process): the TFTP server and the boot server (`bootsrv`), one loop each,
  in threads. Everything a booting machine touches is here, so a boot storm of a thousand
  machines is answered without a WSGI stack in the way and never waits behind an operator.
- The API (a child process): the Flask app under gunicorn's threaded workers.

The child is forked before any thread of ours starts. gunicorn forks its workers from it, later
and again whenever one dies; a process that forks while another of its threads holds a lock
(SQLite's, the logging module's) hands its children a lock nobody will ever release.
The ports are bound before the fork, so a port in use is one clear error before anything runs.
Every process opens its own SQLite connections; writers take turns on an flock (`registry`).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import traceback
from pathlib import Path

from gunicorn.app.base import BaseApplication

from provisioner.app import create_app, open_context
from provisioner.bootsrv import BootServer
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
                  boot: tuple[str, int] | None = None) -> None:
    ctx = open_context(state_dir, site)          # secrets and site nodes, once, before the fork
    servers = []
    notes = ""
    if boot:
        servers.append(BootServer(ctx.node_http.answer, *boot, after_round=ctx.node_http.after_round))
        notes += f", boot http://{servers[-1].host}:{servers[-1].port}/"
    if tftp:
        servers.append(TftpServer(ctx.boot.tftp_resolve, *tftp))
        notes += f", tftp://{servers[-1].host}:{servers[-1].port}/"
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
    api = os.fork()
    if api == 0:
        for server in servers:
            server.close()
        os._exit(_run_api(state_dir, site, options))

    stopping = False

    def stop(signum, _frame):
        nonlocal stopping
        stopping = True
        try:
            os.kill(api, signal.SIGTERM)
        except ProcessLookupError:
            pass

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for server in servers:
        server.start()
    warm = threading.Event()
    if boot:
        ctx.node_http.kickstarts.keep_warm(warm)
    try:
        _, status = os.waitpid(api, 0)      # retried after each signal (PEP 475)
    finally:
        warm.set()
        for server in servers:
            server.stop()
        ctx.registry.flush()
    code = os.waitstatus_to_exitcode(status)
    if code and not stopping:
        raise SystemExit(f"provisioner: the API process ended with status {code}; stopping")


def _run_api(state_dir: Path, site, options: dict) -> int:
    try:
        _Service(state_dir, site, options).run()
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 1
    except BaseException:
        traceback.print_exc()
        return 1
    return 0
