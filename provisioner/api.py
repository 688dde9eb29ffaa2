"""The registry's HTTP API: /api/v1. Writes need the admin token, reads a token too (auth)."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify, request
from werkzeug.exceptions import RequestEntityTooLarge

from provisioner.boot import routes as boot
from provisioner.registry import nodes
from provisioner.auth import admin_required, bearer, may_read, reader_required, unauthorized
from provisioner.macaddr import InvalidMAC, canonical_mac
from provisioner.openapi import openapi_document
from provisioner.plan import barrier_status, config_env, load_plan, node_plan
from provisioner.registry.states import DISCOVERED
from provisioner.registry.db import STATES, Forbidden, NotFound, RegistryError, check_firstboot_token

bp = Blueprint("api", __name__, url_prefix="/api/v1")


def _ctx():
    return current_app.extensions["provisioner"]


def _mac(value: str) -> str:
    try:
        return canonical_mac(value)
    except InvalidMAC as e:
        raise nodes.InvalidNode(str(e), "mac") from None


def _body() -> object:
    # Read here rather than by get_json: its `silent` swallows only ValueError, so a deeply nested
    # body was a RecursionError (500). And not by get_data either: on a body without
    # Content-Length (chunked) Werkzeug's read-all stops quietly at MAX_CONTENT_LENGTH, so an
    # over-long body came through cut short, a valid object if its excess was padding. Reading
    # on past the cap makes the stream raise instead (so a chunked body of exactly the cap counts
    # as over it); a declared length over the cap raises at once.
    cap = request.max_content_length
    chunks, size = [], 0
    try:
        while chunk := request.stream.read(64 * 1024):
            size += len(chunk)
            if cap is not None and size > cap:
                raise RequestEntityTooLarge()
            chunks.append(chunk)
    except RequestEntityTooLarge:
        raise nodes.TooLarge(f"the body is over {cap} bytes", "body") from None
    return nodes.parse_json(b"".join(chunks))


def _tagged(resp, node):
    resp.set_etag(nodes.etag(node))
    return resp


@bp.get("/nodes")
@reader_required
def list_nodes():
    ctx = _ctx()
    role, state = request.args.get("role"), request.args.get("state")
    if role is not None and role not in ctx.site.roles:
        raise nodes.InvalidNode(f"role: unknown role {role!r} (known: {', '.join(ctx.site.roles)})", "role")
    if state is not None and state not in STATES:
        raise nodes.InvalidNode(f"state: unknown state {state!r} (known: {', '.join(STATES)})", "state")
    found = [] if state == DISCOVERED else [n.public() for n in ctx.registry.list(role=role, state=state)]
    if role is None and state in (None, DISCOVERED):
        found += [d.public() for d in ctx.registry.discovered()]
    return jsonify(nodes=found)


@bp.post("/nodes")
@admin_required
def create_node():
    ctx = _ctx()
    node = nodes.register(ctx.site, ctx.registry, _body())
    resp = jsonify(node.public())
    resp.status_code = 201
    resp.headers["Location"] = f"/api/v1/nodes/{node.mac}"
    return _tagged(resp, node)


@bp.get("/nodes/<mac>")
@reader_required
def get_node(mac: str):
    registry, mac = _ctx().registry, _mac(mac)
    node = registry.find(mac)
    if node is None:
        return jsonify(registry.get_discovered(mac).public())
    return _tagged(jsonify(node.public()), node)


@bp.post("/nodes/<mac>/enroll")
@admin_required
def enroll(mac: str):
    """A discovered machine becomes a registered node, armed for install (registry/nodes.enroll)."""
    ctx = _ctx()
    node = nodes.enroll(ctx.site, ctx.registry, _mac(mac), _body())
    resp = jsonify(node.public())
    resp.headers["Location"] = f"/api/v1/nodes/{node.mac}"
    return _tagged(resp, node)


@bp.patch("/nodes/<mac>")
@admin_required
def patch_node(mac: str):
    ctx = _ctx()
    mac, data = _mac(mac), _body()
    # no If-Match: last writer wins field by field (the change is merged inside the transaction)
    if_match = request.if_match.contains if "If-Match" in request.headers else None
    node = nodes.change(ctx.site, ctx.registry, mac, data, if_match=if_match)
    return _tagged(jsonify(node.public()), node)


@bp.delete("/nodes/<mac>")
@admin_required
def delete_node(mac: str):
    registry, mac = _ctx().registry, _mac(mac)
    if registry.find(mac) is None and registry.find_discovered(mac) is not None:
        registry.forget_discovered(mac)     # forgotten; it is discovered again if it boots again
    else:
        registry.remove(mac)
    return "", 204


@bp.get("/nodes/<mac>/events")
@reader_required
def node_events(mac: str):
    events = _ctx().registry.events(_mac(mac))
    return jsonify(events=[e.as_dict() for e in events])


@bp.post("/nodes/<mac>/events")
def post_event(mac: str):
    """A kickstart's callback or a step report: the boot server's table answers it (node_http)."""
    return boot.answer()


@bp.get("/nodes/<mac>/plan")
def node_plan_view(mac: str):
    """For readers, and for the node itself (its first-boot runner)."""
    ctx = _ctx()
    node = ctx.registry.get(_mac(mac))
    if not may_read():
        try:
            check_firstboot_token(node, bearer())
        except Forbidden:
            return unauthorized("this request needs a read token or the node's first-boot credential")
    rows = node_plan(load_plan(), ctx.registry, node)
    if request.args.get("format") == "text":
        # '|' rather than tabs: the shell's read would merge a tab-separated empty field
        text = "".join(f"{r['id']}|{r['wait'] or ''}|{r['state']}\n" for r in rows)
        return current_app.response_class(text, mimetype="text/plain")
    return jsonify(node=node.hostname, state=node.state, steps=rows)


@bp.get("/nodes/<mac>/config")
def node_config(mac: str):
    """The node's configuration for its steps, with the secrets its own steps read and no
    others: for its first-boot credential only (not even the admin token: the secrets file is
    the operator's copy)."""
    ctx = _ctx()
    node = ctx.registry.get(_mac(mac))
    check_firstboot_token(node, bearer())
    text = config_env(ctx.site, ctx.credentials, node, ctx.registry.list(), load_plan())
    return current_app.response_class(text, mimetype="text/plain")


@bp.get("/barriers/<name>")
def barrier(name: str):
    """For readers, and for any node holding a first-boot credential (runners wait here)."""
    if not may_read() and not _ctx().registry.is_firstboot_credential(bearer()):
        return unauthorized("this request needs a read token or a node's first-boot credential")
    plan = load_plan()
    if name not in plan.barriers:
        raise NotFound(f"no barrier named {name!r} (known: {', '.join(plan.barriers)})")
    return jsonify(barrier_status(plan, _ctx().registry, name))


@bp.post("/nodes/<mac>/rebuild")
@admin_required
def rebuild(mac: str):
    # the body is optional: a bare POST (what clients sent before power control) re-arms only
    data = _body() if request.content_length or request.headers.get("Transfer-Encoding") else {}
    if not isinstance(data, dict) or set(data) - {"power_cycle"} or \
            not isinstance(data.get("power_cycle", False), bool):
        raise nodes.InvalidNode('the body may only be {"power_cycle": true|false}', "power_cycle")
    mac = _mac(mac)
    if not data.get("power_cycle"):
        return jsonify(_ctx().registry.rebuild(mac).public())
    from provisioner.power import control
    node, state = control.rebuild_and_cycle(_ctx().registry, mac)
    return jsonify({**node.public(), "power": state})


@bp.post("/nodes/<mac>/power")
@admin_required
def power(mac: str):
    """Runs while the request waits (a cycle up to its deadline): one node is one BMC session."""
    from provisioner.power import control
    data = _body()
    if not isinstance(data, dict) or set(data) != {"action"} or data["action"] not in control.ACTIONS:
        raise nodes.InvalidNode(f'the body must be {{"action": one of {", ".join(control.ACTIONS)}}}', "action")
    ctx = _ctx()
    node = ctx.registry.get(_mac(mac))
    if node.spec.bmc is None:
        raise control.NoBmc(node)
    outcome = control.power(ctx.registry, node, data["action"])
    if outcome.error:
        raise control.BmcFailed(outcome.error)
    return jsonify(outcome.as_dict())


@bp.get("/openapi.json")
def openapi():
    return jsonify(openapi_document())


@bp.errorhandler(RegistryError)
def registry_error(e: RegistryError):
    body = {"error": e.error, "detail": e.detail}
    if e.field:
        body["field"] = e.field
    if getattr(e, "node", None) is not None:      # a rebuild done whose power cycle failed
        body["node"] = e.node.public()
    resp = jsonify(body)
    resp.status_code = e.status
    return resp
