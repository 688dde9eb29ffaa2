"""Rendered kickstarts, kept in memory and keyed by everything they are rendered from.

A boot storm asks for a thousand kickstarts within a second or two; rendering one takes longer
than everything else a fetch does together. So the boot server renders armed nodes' kickstarts
ahead of time (`warm`, at start and every few seconds) and answers a fetch from here. An entry is
used only while its key still matches the node's registry row (description and install token)
and the templates on disk, so a stale kickstart is never served: a miss just renders it now.
"""

from __future__ import annotations

import logging
import threading

from provisioner.registry.db import InstallView, Registry
from provisioner.render.renderer import Renderer

log = logging.getLogger(__name__)


class KickstartCache:
    def __init__(self, registry: Registry, renderer: Renderer):
        self.registry, self.renderer = registry, renderer
        self._entries: dict[str, tuple[tuple, bytes]] = {}

    def get(self, view: InstallView) -> bytes:
        key = (view.key, self.renderer.templates_version())
        entry = self._entries.get(view.mac)
        if entry is not None and entry[0] == key:
            return entry[1]
        return self._render(view, key)

    def _render(self, view: InstallView, key: tuple) -> bytes:
        body = self.renderer.kickstart(view.node()).encode()
        self._entries[view.mac] = (key, body)
        return body

    def warm(self) -> int:
        """Render what an armed node would be sent and is not cached; forget nodes no longer
        armed. Returns how many were rendered."""
        views = self.registry.armed_views()
        armed = {v.mac for v in views}
        for mac in [m for m in self._entries if m not in armed]:
            self._entries.pop(mac, None)
        rendered = 0
        version = self.renderer.templates_version()
        for view in views:
            key = (view.key, version)
            entry = self._entries.get(view.mac)
            if entry is None or entry[0] != key:
                self._render(view, key)
                rendered += 1
        return rendered

    def keep_warm(self, stop: threading.Event, every: float = 5.0) -> threading.Thread:
        def run():
            while True:
                try:
                    n = self.warm()
                    if n:
                        log.info("rendered %d kickstarts ahead", n)
                except Exception:   # a bad template shows at the fetch, with the node's name
                    log.exception("rendering kickstarts ahead failed")
                if stop.wait(every):
                    return
        thread = threading.Thread(target=run, name="kickstarts-ahead", daemon=True)
        thread.start()
        return thread
