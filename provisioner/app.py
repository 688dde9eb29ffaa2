"""The Flask application factory: one place that wires site, secrets, registry and renderer."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from flask import Flask, jsonify, request
from werkzeug.exceptions import HTTPException

from provisioner import api
from provisioner.boot import routes as boot
from provisioner.config import Site, load_site
from provisioner.credentials import Credentials, load_or_create
from provisioner.registry.db import Registry
from provisioner.render.renderer import Renderer
from provisioner.tls import ca_pem

log = logging.getLogger(__name__)
MAX_BODY = 1024 * 1024


@dataclass
class Context:
    site: Site
    credentials: Credentials
    registry: Registry
    renderer: Renderer
    state_dir: Path

    @cached_property
    def boot(self):
        from provisioner.boot.pxe import Boot
        return Boot(self, self.state_dir)

    @cached_property
    def node_http(self):
        from provisioner.boot.node_http import NodeHttp
        return NodeHttp(self)


def open_context(state_dir: Path, site: Site | str | Path | None = None, *,
                 reload_templates: bool = True) -> Context:
    """Load the site, the secrets and the registry, and bring site.yaml's nodes into the registry."""
    if not isinstance(site, Site):
        site = load_site(site)
    state_dir = Path(state_dir)
    credentials = load_or_create(state_dir)
    registry = Registry.in_state_dir(state_dir)
    registry.sync_site(site)
    renderer = Renderer(site, credentials, auto_reload=reload_templates, ca_pem=ca_pem(site, state_dir))
    return Context(site, credentials, registry, renderer, state_dir)


def create_app(state_dir: Path, site: Site | str | Path | None = None) -> Flask:
    ctx = open_context(state_dir, site)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY
    app.config["CREDENTIALS"] = ctx.credentials
    app.json.sort_keys = False
    app.extensions["provisioner"] = ctx
    app.register_blueprint(api.bp)
    app.register_blueprint(boot.bp)
    for warning in ctx.site.warnings:
        log.warning("%s", warning)

    @app.errorhandler(HTTPException)
    def http_error(e: HTTPException):
        # JSON for the API, plain text for what boot loaders and installers fetch
        if request.path.startswith("/api/"):
            resp = jsonify(error=e.name.lower(), detail=e.description)
            resp.status_code = e.code or 500
            return resp
        return e

    @app.errorhandler(Exception)
    def internal_error(e: Exception):
        log.exception("internal error on %s %s", request.method, request.path)
        if request.path.startswith("/api/"):
            resp = jsonify(error="internal error", detail="the server failed; see its log")
            resp.status_code = 500
            return resp
        return "internal error\n", 500

    return app
