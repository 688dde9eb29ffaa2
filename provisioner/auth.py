"""Bearer tokens and who holds which.

- admin token: every API write, and every read.
- read-only token: reads (listings, events, plans, barriers); the site can open reads to all.
- a node's install token: that install's callbacks (node_http), until `installed`.
- a node's first-boot credential: its configuration, its plan and step reports, and barriers,
  from `installed` until `deployed` or a rebuild (registry).
"""

from __future__ import annotations

import hmac
from functools import wraps

from flask import current_app, jsonify, request


def bearer() -> str | None:
    return parse_bearer(request.headers.get("Authorization"))


def parse_bearer(header: str | None) -> str | None:
    scheme, _, token = (header or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def token_matches(given: str | None, expected: str) -> bool:
    # constant time, so the token cannot be guessed byte by byte from response times
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


def unauthorized(detail: str):
    resp = jsonify(error="unauthorized", detail=detail)
    resp.status_code = 401
    resp.headers["WWW-Authenticate"] = 'Bearer realm="provisioner"'
    return resp


def admin_required(view):
    @wraps(view)
    def wrapper(*args, **kwargs):
        if not token_matches(bearer(), current_app.config["CREDENTIALS"].admin_token):
            return unauthorized("this request needs 'Authorization: Bearer <admin token>' "
                                "(see 'provisioner token')")
        return view(*args, **kwargs)
    return wrapper


def may_read() -> bool:
    """The request may read listings, events, plans and barriers."""
    if current_app.extensions["provisioner"].site.open_reads:
        return True
    creds, given = current_app.config["CREDENTIALS"], bearer()
    return token_matches(given, creds.admin_token) or token_matches(given, creds.reader_token)


def reader_required(view):
    @wraps(view)
    def wrapper(*args, **kwargs):
        if not may_read():
            return unauthorized("this request needs 'Authorization: Bearer <token>': the read-only "
                                "token ('provisioner token --read-only') or the admin token")
        return view(*args, **kwargs)
    return wrapper
