"""Run the service: the Flask app under gunicorn, and the TFTP server beside it.

gunicorn's threaded workers hand kernels and initrds to the kernel with sendfile(2), so a boot
storm's bulk transfers cost almost no Python time and kickstarts are not queued behind them.
The master process loads the context first (so secrets are generated once, before any worker
exists), then runs the TFTP server in a thread; each worker builds its own app after the fork,
with its own SQLite connections.
"""

from __future__ import annotations

import logging
from pathlib import Path

from gunicorn.app.base import BaseApplication

from provisioner.app import create_app, open_context
from provisioner.filesrv import FileServer
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
                  files: tuple[str, int] | None = None) -> None:
    ctx = open_context(state_dir, site)          # secrets and site nodes, once, before the fork
    boot = ctx.boot
    tftp_server = TftpServer(boot.tftp_resolve, *tftp).start() if tftp else None
    file_server = FileServer(boot.file_resolve, *files).start() if files else None
    notes = ""
    if file_server:
        notes += f", files http://{file_server.host}:{file_server.port}/"
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
    try:
        _Service(state_dir, site, options).run()
    finally:
        if tftp_server:
            tftp_server.stop()
        if file_server:
            file_server.stop()
