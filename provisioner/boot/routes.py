"""The paths booting and installing machines fetch, on the service port too.

Machines are sent to the boot server (`bootsrv`), which answers these same paths from the same
table, `node_http.NodeHttp`; this blueprint hands Flask's requests to that table, so an operator
(or a loader pointed at the service port) gets the same answer. The installer's callback,
POST /api/v1/nodes/<mac>/events, goes through the same table from `api`.
"""

from __future__ import annotations

from flask import Blueprint, Response, current_app, request, send_file

from provisioner.boot.node_http import Reply

bp = Blueprint("boot", __name__)


def answer() -> Response:
    node_http = current_app.extensions["provisioner"].node_http
    refusal = node_http.admit(request.method, request.path, request.headers.get("Authorization"),
                             request.remote_addr)
    if refusal is not None:     # the body stays unread
        return to_response(refusal)
    reply = node_http.answer(request.method, request.path, request.get_data(), request.headers.get("Authorization"),
                             request.remote_addr)
    node_http.after_round()     # here a round is one request
    return to_response(reply)


def to_response(reply: Reply) -> Response:
    if reply.path is not None:
        # Content-Length, and Range for loaders that resume (send_file's conditional mode)
        return send_file(reply.path, mimetype=reply.content_type, conditional=True, max_age=0)
    return Response(reply.body, status=reply.status, content_type=reply.content_type)


for _rule in ("/ks/<mac>", "/hosts", "/hooks.tar.gz", "/boot.ipxe", "/ipxe/<mac>", "/pxelinux.cfg/01-<mac>",
              "/grub/grub.cfg-01-<mac>", "/boot/<distro>/<name>", "/bootfiles/<path:name>"):
    bp.add_url_rule(_rule, endpoint=_rule.replace(".", "_"), view_func=lambda **_: answer(), methods=["GET"])
bp.add_url_rule("/discover/<mac>", endpoint="discover", view_func=lambda **_: answer(), methods=["POST"])
