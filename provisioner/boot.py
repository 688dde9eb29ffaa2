"""What booting and installing nodes fetch over HTTP: iPXE scripts, kernels, kickstarts, hosts.

Every answer is computed from the registry at request time; nothing is written to disk.
The decision itself is `lifecycle.decide`, rendered by `pxe.Boot`.
"""

from __future__ import annotations

import logging

from flask import Blueprint, Response, abort, current_app, request, send_file

from provisioner.macaddr import InvalidMAC, canonical_mac
from provisioner.registry import Conflict

log = logging.getLogger(__name__)
bp = Blueprint("boot", __name__)


def _ctx():
    return current_app.extensions["provisioner"]


def _text(body: str, status: int = 200) -> Response:
    return Response(body, status=status, mimetype="text/plain")


def _mac_or_none(text: str, asked: str) -> str | None:
    try:
        return canonical_mac(text)
    except InvalidMAC as e:
        log.info("boot http %r: asked %s, answered 400: %s", text[:60], asked[:200], e)
        return None


@bp.get("/ks/<mac>")
def kickstart(mac: str):
    ctx = _ctx()
    asked = f"/ks/{mac}"
    mac = _mac_or_none(mac, asked)
    if mac is None:
        return _text("not a MAC address\n", 400)
    node = ctx.registry.find(mac)
    if node is None:
        log.info("boot http %s: asked %s, answered 404: not registered", mac, asked)
        return _text(f"no node has MAC {mac}\n", 404)
    try:
        node = ctx.registry.kickstart_fetched(node.mac)
    except Conflict as e:
        # an installed machine must never be handed an installer's instructions again
        log.info("boot http %s (%s): asked %s, answered 409: %s", mac, node.hostname, asked, e.detail)
        return _text(f"{e.detail}\n", 409)
    body = ctx.renderer.kickstart(node)
    log.info("boot http %s (%s): asked %s, answered kickstart: now installing", mac, node.hostname, asked)
    return _text(body)


@bp.get("/hosts")
def hosts():
    ctx = _ctx()
    return _text(ctx.renderer.hosts_file(ctx.registry.list()))


@bp.get("/hooks.tar.gz")
def hooks_tarball():
    """The role steps and their runner, installed by every kickstart's %post."""
    from provisioner.plan import hooks_tarball as build
    return Response(build(), mimetype="application/gzip")


@bp.get("/boot.ipxe")
def boot_ipxe():
    ctx = _ctx()
    return _text(ctx.renderer.env.get_template("boot.ipxe.j2").render(service_url=ctx.site.service_url))


@bp.get("/ipxe/<mac>")
def ipxe(mac: str):
    asked = f"/ipxe/{mac}"
    mac = _mac_or_none(mac, asked)
    if mac is None:
        return _text("#!ipxe\necho not a MAC address\nexit\n", 400)
    return _text(_ctx().boot.render("ipxe", mac, asked, "http").text)


@bp.get("/pxelinux.cfg/01-<mac>", defaults={"kind": "pxelinux", "prefix": "/pxelinux.cfg/01-"})
@bp.get("/grub/grub.cfg-01-<mac>", defaults={"kind": "grub", "prefix": "/grub/grub.cfg-01-"})
def loader_config(mac: str, kind: str, prefix: str):
    """The configs TFTP serves, over HTTP too (for loaders that fetch configs by HTTP)."""
    asked = f"{prefix}{mac}"
    mac = _mac_or_none(mac, asked)
    if mac is None:
        abort(404)
    return _text(_ctx().boot.render(kind, mac, asked, "http").text)


@bp.get("/boot/<distro>/<name>")
@bp.get("/bootfiles/<path:name>")
def static_file(**_):
    """Kernels, initrds and loaders: the same files, by the same rules, as the file server's."""
    path = _ctx().boot.file_resolve(request.path)
    if path is None:
        abort(404)
    # Content-Length, and Range for loaders that resume (send_file's conditional mode)
    return send_file(path, mimetype="application/octet-stream", conditional=True, max_age=0)
