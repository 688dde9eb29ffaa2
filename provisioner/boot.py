"""What booting and installing nodes fetch: kickstarts and the cluster's hosts file.

Every answer is computed from the registry at request time; nothing is written to disk.
"""

from __future__ import annotations

import logging

from flask import Blueprint, Response, current_app

from provisioner.macaddr import InvalidMAC, canonical_mac

log = logging.getLogger(__name__)
bp = Blueprint("boot", __name__)


def _text(body: str, status: int = 200) -> Response:
    return Response(body, status=status, mimetype="text/plain")


@bp.get("/ks/<mac>")
def kickstart(mac: str):
    ctx = current_app.extensions["provisioner"]
    try:
        mac = canonical_mac(mac)
    except InvalidMAC as e:
        log.info("boot ks %r: answered 400: %s", mac, e)
        return _text(f"{e}\n", 400)
    node = ctx.registry.find(mac)
    if node is None:
        log.info("boot ks %s: answered 404: no node has this MAC", mac)
        return _text(f"no node has MAC {mac}\n", 404)
    body = ctx.renderer.kickstart(node)
    log.info("boot ks %s (%s): answered kickstart: node is %s", mac, node.hostname, node.state)
    return _text(body)


@bp.get("/hosts")
def hosts():
    ctx = current_app.extensions["provisioner"]
    return _text(ctx.renderer.hosts_file(ctx.registry.list()))
