"""Run the service: the Flask app under waitress (threaded, pure Python, no fork)."""

from __future__ import annotations

import logging
from pathlib import Path

from waitress.server import create_server

from provisioner.app import create_app

log = logging.getLogger(__name__)


def make_server(state_dir: Path, site, host: str, port: int, threads: int = 16):
    app = create_app(state_dir, site)
    # a slow or silent client must not pin a worker thread for long
    return create_server(app, host=host, port=port, threads=threads, channel_timeout=30,
                         connection_limit=1000, ident="provisioner")


def serve_forever(state_dir: Path, site, host: str, port: int, threads: int = 16) -> None:
    server = make_server(state_dir, site, host, port, threads)
    print(f"provisioner: serving http://{host}:{server.effective_port}/ "
          f"(state {state_dir}; admin token: provisioner token)", flush=True)
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
