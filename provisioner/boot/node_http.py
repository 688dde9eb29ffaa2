"""What machines ask for over HTTP while they boot and install, as plain functions of a request.

Two front ends call `NodeHttp.answer`: the boot server (`bootsrv`, the port machines are sent
to for kernels, initrds, kickstarts and the installer's callbacks) and the Flask app
(the same paths on the service port). So a path means the same thing on both, and this table is
the one place to look for what a booting machine is told over HTTP. The boot decision itself
is `decision.decide`, rendered by `pxe.Boot`.
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from provisioner.auth import parse_bearer, token_matches
from provisioner.render.kscache import KickstartCache
from provisioner.registry.states import CALLBACKS, DETAIL_MAX
from provisioner.macaddr import InvalidMAC, canonical_mac
from provisioner.mirror import served_file
from provisioner.registry.nodes import InvalidNode
from provisioner.plan import hooks_tarball, hooks_version, load_plan
from provisioner.registry.states import STEP_STATUSES
from provisioner.registry.db import Conflict, Forbidden, NotFound, RegistryError, token_hash

log = logging.getLogger(__name__)

TEXT = "text/plain; charset=utf-8"


@dataclass
class Reply:
    status: int
    body: bytes = b""
    content_type: str = TEXT
    path: Path | None = None        # a file to send instead of `body` (kernels, initrds, loaders)

    @classmethod
    def text(cls, text: str, status: int = 200) -> Reply:
        return cls(status, text.encode())

    @classmethod
    def json(cls, obj: object, status: int = 200) -> Reply:
        return cls(status, json.dumps(obj).encode() + b"\n", "application/json")

    @classmethod
    def error(cls, e: RegistryError) -> Reply:
        """The API's error shape, for the callbacks that share the API's path."""
        body = {"error": e.error, "detail": e.detail}
        if e.field:
            body["field"] = e.field
        return cls.json(body, e.status)


_MAC = r"(?P<mac>[^/]+)"


class Admitted:
    """What `admit` found out about a request it let in, for `answer` to go on from instead of
    finding it out again: the route, and for a callback the node whose credential it carries."""
    __slots__ = ("handler", "match", "view")

    def __init__(self, handler, match: re.Match, view=None):
        self.handler, self.match, self.view = handler, match, view


class NodeHttp:
    def __init__(self, ctx):
        self.ctx = ctx
        self.boot = ctx.boot
        self.kickstarts = KickstartCache(ctx.registry, ctx.renderer)
        self._hooks: tuple[object, bytes] = (None, b"")
        self._hooks_checked = -1.0
        self._hosts: tuple[int | None, bytes] = (None, b"")
        # (method, path pattern, handler(match, body, authorization))
        self.routes: list[tuple[str, re.Pattern, Callable[..., Reply]]] = [
            ("GET", re.compile(rf"/ks/{_MAC}"), self.kickstart),
            ("POST", re.compile(rf"/api/v1/nodes/{_MAC}/events"), self.event),
            ("GET", re.compile(r"/hosts"), self.hosts),
            ("GET", re.compile(r"/hooks\.tar\.gz"), self.hooks),
            ("GET", re.compile(r"/boot\.ipxe"), self.boot_ipxe),
            ("GET", re.compile(rf"/ipxe/{_MAC}"), self.ipxe),
            ("GET", re.compile(rf"/pxelinux\.cfg/01-{_MAC}"), self.loader_config),
            ("GET", re.compile(rf"/grub/grub\.cfg-01-{_MAC}"), self.loader_config),
            ("GET", re.compile(r"/grub/grub\.cfg"), self.grub_generic),
            ("GET", re.compile(r"/(?:boot|bootfiles)/.+"), self.static_file),
            ("GET", re.compile(r"/mirror/.+"), self.mirror_file),
            ("POST", re.compile(rf"/discover/{_MAC}"), self.discover),
        ]

    def answer(self, method: str, path: str, body: bytes = b"", authorization: str | None = None,
               peer: str | None = None, admitted: Admitted | None = None) -> Reply:
        """HEAD is answered as GET; the front end drops the body. `peer`: the client's address
        (None where the front end cannot tell). `admitted`: what `admit` said of this request."""
        if admitted is None:
            route = self._route(method, path)
            if isinstance(route, Reply):
                return route
            handler, m = route
        else:
            handler, m = admitted.handler, admitted.match
            if admitted.view is not None:
                return handler(m, body, authorization, peer, admitted.view)
        return handler(m, body, authorization, peer)

    def admit(self, method: str, path: str, authorization: str | None = None,
              peer: str | None = None) -> Reply | Admitted:
        """Called by a front end once a request's head is read, before its body is: the refusal
        to send instead of reading the body, or what it found (hand it to `answer`) to go on. A
        body is only ever read for a path that exists and a node whose credential the request
        carries."""
        route = self._route(method, path)
        if isinstance(route, Reply):
            return route
        handler, m = route
        view = None
        if handler == self.event:
            try:
                view = self._event_node(m.group("mac"), parse_bearer(authorization))
            except RegistryError as e:
                return Reply.error(e)
        return Admitted(handler, m, view)

    def _route(self, method: str, path: str):
        method = "GET" if method == "HEAD" else method
        allowed = False
        for want, pattern, handler in self.routes:
            m = pattern.fullmatch(path)
            if m:
                if want == method:
                    return handler, m
                allowed = True
        return Reply.text("method not allowed\n", 405) if allowed else Reply.text("not found\n", 404)

    # -- the installer --------------------------------------------------------------------------

    def kickstart(self, m: re.Match, body: bytes, authorization: str | None, peer: str | None) -> Reply:
        asked = m.group(0)
        mac = self._mac(m, asked)
        if mac is None:
            return Reply.text("not a MAC address\n", 400)
        registry = self.ctx.registry
        view = registry.install_view(mac)
        if view is None:
            log.info("boot http %s: asked %s, answered 404: not registered", mac, asked)
            return Reply.text(f"no node has MAC {mac}\n", 404)
        if self.ctx.site.kickstart_node_address_only and peer != view.row["ip"]:
            # the kickstart carries the install token: only the machine itself may have it
            log.warning("boot http %s (%s): asked %s from %s, answered 403: not the node's address %s",
                        mac, view.hostname, asked, peer, view.row["ip"])
            return Reply.text(f"this kickstart is served only to {view.hostname}'s own address\n", 403)
        try:
            registry.kickstart_fetched(view)
        except Conflict as e:
            # an installed machine must never be handed an installer's instructions again
            log.info("boot http %s (%s): asked %s, answered 409: %s", mac, view.hostname, asked, e.detail)
            return Reply.text(f"{e.detail}\n", 409)
        body = self.kickstarts.get(view)
        log.info("boot http %s (%s): asked %s, answered kickstart: now installing", mac, view.hostname, asked)
        return Reply(200, body)

    def after_round(self) -> None:
        """Called by the boot server after each round of requests: write what they noted."""
        self.ctx.registry.flush()

    def event(self, m: re.Match, body: bytes, authorization: str | None, peer: str | None,
              view=None) -> Reply:
        """A kickstart's callback (the install token) or a first-boot step report (the
        first-boot credential). The answer to `installed` carries the first-boot credential:
        the one time it is ever sent. `view`: the node `admit` found the credential to be
        for (the registry checks the credential again as it writes)."""
        try:
            node, firstboot = self._event(m.group("mac"), body, parse_bearer(authorization), view)
        except RegistryError as e:
            return Reply.error(e)
        answer = node.public()
        if firstboot:
            answer["firstboot_token"] = firstboot
        return Reply.json(answer)

    def _event_node(self, mac_text: str, token: str | None):
        """The node, if the token is one of its live credentials (which one is for the body's
        type to say)."""
        try:
            mac = canonical_mac(mac_text)
        except InvalidMAC as e:
            raise InvalidNode(str(e), "mac") from None
        view = self.ctx.registry.install_view(mac)
        if view is None:
            raise NotFound(f"no node has MAC {mac}")
        install_token = view.row["install_token"]
        if install_token and token_matches(token, install_token):
            return view
        firstboot = view.row["firstboot_hash"]
        if firstboot and token and token_matches(token_hash(token), firstboot):
            return view
        if not install_token:
            raise Forbidden(f"wrong or ended credential for {view.hostname}: its install token ended when "
                            f"it reported installed ({view.state} now). If this machine did not report "
                            "that, something else on the install network did: rebuild it to install again",
                            "token")
        raise Forbidden(f"wrong or missing credential for {view.hostname}", "token")

    def _event(self, mac_text: str, body: bytes, token: str | None, view=None):
        registry = self.ctx.registry
        if view is None:
            view = self._event_node(mac_text, token)
        try:
            data = json.loads(body)
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise InvalidNode("the body must be a JSON object (Content-Type: application/json)")
        extra = sorted(set(data) - {"type", "detail"})
        if extra:
            raise InvalidNode(f"{extra[0]}: unknown key (expected type, detail)", extra[0])
        type_ = data.get("type")
        if type_ == "step":
            return self._step_report(view.node(), token, data.get("detail")), None
        if type_ not in CALLBACKS:
            raise InvalidNode(f"type: {type_!r} is not one of {', '.join(CALLBACKS)}, step", "type")
        detail = data.get("detail")
        if isinstance(detail, str) and len(detail) > DETAIL_MAX:
            detail = "[...]" + detail[-DETAIL_MAX:]
        return registry.callback(view.mac, token, type_, detail)

    def _step_report(self, node, token: str | None, detail: object):
        mine = [s.id for s in load_plan().for_roles(node.spec.roles)]
        if not isinstance(detail, dict) or set(detail) - {"step", "status", "output"}:
            raise InvalidNode("detail: a step report is {\"step\", \"status\", \"output\"}", "detail")
        if detail.get("step") not in mine:
            raise InvalidNode(f"detail.step: {detail.get('step')!r} is not in {node.hostname}'s plan", "detail")
        if detail.get("status") not in STEP_STATUSES:
            raise InvalidNode(f"detail.status: must be one of {', '.join(STEP_STATUSES)}", "detail")
        output = detail.get("output", "")
        if not isinstance(output, str):
            raise InvalidNode("detail.output: must be text", "detail")
        clean = {"step": detail["step"], "status": detail["status"], "output": output[-DETAIL_MAX:]}
        return self.ctx.registry.step_report(node.mac, token, clean, mine)

    def hosts(self, *_) -> Reply:
        """Built again only when a name or address changed: every installing machine asks, and
        for ten thousand nodes a build takes a tenth of a second."""
        registry = self.ctx.registry
        version = registry.names_version()
        if self._hosts[0] != version:
            self._hosts = (version, self.ctx.renderer.hosts_file(registry.host_entries()).encode())
        return Reply(200, self._hosts[1])

    def hooks(self, *_) -> Reply:
        """The role steps and their runner, installed by every kickstart's %post. Built again only
        when a file under hooks/ changed: every installing machine asks for it."""
        if time.monotonic() - self._hooks_checked > 1.0:     # a look at the files once a second
            self._hooks_checked = time.monotonic()
            version = hooks_version()
            if self._hooks[0] != version:
                self._hooks = (version, hooks_tarball())
        return Reply(200, self._hooks[1], "application/gzip")

    # -- discovery ------------------------------------------------------------------------------

    def discover(self, m: re.Match, body: bytes, authorization: str | None, peer: str | None) -> Reply:
        """The inspection ramdisk's report (anonymous: boot/discovery.py checks all of it)."""
        from provisioner.boot import discovery
        mac = m.group("mac")[:60]
        try:
            found, new = discovery.report(self.ctx.site, self.ctx.registry, mac, body)
        except RegistryError as e:
            log.info("discover %s from %s: answered %d: %s", mac, peer, e.status, e.detail[:200])
            return Reply.error(e)
        answer = {"mac": found.mac, "state": found.state}
        if found.state != "discovered":
            answer["hostname"] = found.hostname     # a site rule enrolled it
        log.info("discover %s from %s: %s", found.mac, peer,
                 "new machine" if new and found.state == "discovered"
                 else f"enrolled as {found.hostname} by a site rule" if found.state != "discovered"
                 else "inventory replaced")
        return Reply.json(answer)

    # -- boot loaders ---------------------------------------------------------------------------

    def boot_ipxe(self, *_) -> Reply:
        env = self.ctx.renderer.env
        return Reply.text(env.get_template("boot.ipxe.j2").render(boot_url=self.ctx.site.boot_url))

    def ipxe(self, m: re.Match, *_) -> Reply:
        mac = self._mac(m, m.group(0))
        if mac is None:
            return Reply.text("#!ipxe\necho not a MAC address\nexit\n", 400)
        return Reply.text(self.boot.render("ipxe", mac, m.group(0), "http").text)

    def loader_config(self, m: re.Match, *_) -> Reply:
        """The configs TFTP serves, over HTTP too (for loaders that fetch configs by HTTP)."""
        kind = "grub" if m.group(0).startswith("/grub/") else "pxelinux"
        mac = self._mac(m, m.group(0))
        if mac is None:
            return Reply.text("not found\n", 404)
        return Reply.text(self.boot.render(kind, mac, m.group(0), "http").text)

    def grub_generic(self, m: re.Match, body: bytes, authorization: str | None, peer: str | None) -> Reply:
        """GRUB's first request over HTTP (HTTP Boot): the generic config, as TFTP answers it. A
        404's body would not do: GRUB 2.06 runs whatever body it gets as a script."""
        log.info("boot http %s: asked %s, answered the generic config (on to grub.cfg-01-<mac>)", peer, m.group(0))
        return Reply.text(self.boot.grub_generic())

    def static_file(self, m: re.Match, *_) -> Reply:
        """Kernels, initrds and loaders, by the same rules as over TFTP."""
        path = self.boot.file_resolve(m.group(0))
        if path is None:
            return Reply.text("not found\n", 404)
        return Reply(200, content_type="application/octet-stream", path=path)

    def mirror_file(self, m: re.Match, *_) -> Reply:
        """The install tree and repos `provisioner mirror sync` keeps (README, "Mirror"); only
        what sits under the mirror's pub/ (no partial or unverified download is ever there)."""
        if not self.ctx.site.mirror.enabled:
            return Reply.text("the site's mirror is off\n", 404)
        path = served_file(self.boot.state_dir, m.group(0))
        if path is None:
            return Reply.text("not found\n", 404)
        return Reply(200, content_type="application/octet-stream", path=path)

    @staticmethod
    def _mac(m: re.Match, asked: str) -> str | None:
        try:
            return canonical_mac(m.group("mac"))
        except InvalidMAC as e:
            log.info("boot http %r: asked %s, answered 400: %s", m.group("mac")[:60], asked[:200], e)
            return None

