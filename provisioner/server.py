"""Run the service: the Flask app under waitress (threaded, pure Python, no fork), and the TFTP
server in a thread beside it, both answering from the same registry."""

from __future__ import annotations

import logging
from pathlib import Path

from waitress.server import create_server

from provisioner.app import create_app
from provisioner.tftp import TftpServer

log = logging.getLogger(__name__)


def make_server(state_dir: Path, site, host: str, port: int, threads: int = 16):
    app = create_app(state_dir, site)
    # a slow or silent client must not pin a worker thread for long
    server = create_server(app, host=host, port=port, threads=threads, channel_timeout=30,
                           connection_limit=1000, ident="provisioner")
    server.app = app
    return server


def make_tftp(app, host: str, port: int) -> TftpServer:
    boot = app.extensions["provisioner"].boot
    return TftpServer(boot.tftp_resolve, host, port)


def serve_forever(state_dir: Path, site, host: str, port: int, threads: int = 16,
                  tftp: tuple[str, int] | None = None) -> None:
    server = make_server(state_dir, site, host, port, threads)
    tftp_server = make_tftp(server.app, *tftp).start() if tftp else None
    tftp_note = f", tftp://{tftp_server.host}:{tftp_server.port}/" if tftp_server else ""
    print(f"provisioner: serving http://{host}:{server.effective_port}/{tftp_note} "
          f"(state {state_dir}; admin token: provisioner token)", flush=True)
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
        if tftp_server:
            tftp_server.stop()
