"""Bearer tokens: the admin token guards every API write, a node's install token its callbacks."""

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


def admin_required(view):
    @wraps(view)
    def wrapper(*args, **kwargs):
        if not token_matches(bearer(), current_app.config["CREDENTIALS"].admin_token):
            resp = jsonify(error="unauthorized",
                           detail="this request needs 'Authorization: Bearer <admin token>' "
                                  "(see 'provisioner token')")
            resp.status_code = 401
            resp.headers["WWW-Authenticate"] = 'Bearer realm="provisioner"'
            return resp
        return view(*args, **kwargs)
    return wrapper
