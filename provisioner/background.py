"""A server loop run in a daemon thread, stopped by an event: shared by the TFTP and boot servers.

Each server binds its socket (`self.sock`) and makes its selector (`self._sel`) when built, so a
port in use fails before anything starts."""

from __future__ import annotations

import threading


class BackgroundServer:
    thread_name = "server"

    def __init__(self):
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def serve_forever(self) -> None:  # pragma: no cover - each server has its own
        raise NotImplementedError

    def start(self):
        self._thread = threading.Thread(target=self.serve_forever, name=self.thread_name, daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        """Let go of the socket without serving: in a forked process that serves something else."""
        self._sel.close()
        self.sock.close()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)
