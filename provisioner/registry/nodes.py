"""Register and change nodes: one path for the HTTP API and the CLI.

Input is validated against the site (roles, network, layout fit) before the registry sees it;
the registry then checks uniqueness inside its transaction. A change is merged into the node
as it is inside that transaction too, so two changes of one node cannot lose each other.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict
from typing import Callable

from provisioner.config import ConfigError, NodeSpec, Site, parse_node, validate_roles
from provisioner.registry.db import Conflict, Discovered, Node, Registry, RegistryError
from provisioner.render.storage import FIRMWARES

EDITABLE = ("mac", "hostname", "ip", "roles", "interface", "aliases", "nics", "disk_bytes", "firmware", "bmc")
REQUIRED = ("mac", "hostname", "ip", "roles")
# what an enroll names; the MAC, NICs' names, disk size and firmware come from the inventory
ENROLLABLE = ("hostname", "ip", "roles", "interface", "aliases", "nics", "firmware", "bmc")
ENROLL_REQUIRED = ("hostname", "ip", "roles")
NIC_KEYS = ("mac", "name", "mode")
BMC_KEYS = ("url", "username", "password")
TEXT = ("mac", "hostname", "ip", "interface")
LISTS = ("aliases", "roles", "nics")

# The shape limits below are checked before the site's validation: its messages quote the bad
# value, and a megabyte of hostname should not come back in a 400 (nor be run through regexes).
MAX_TEXT = 253              # the longest DNS name; every text field is far shorter when valid
MAX_ITEMS = 64              # aliases, roles or NICs of one node
MAX_DISK_BYTES = 2**63 - 1  # SQLite's INTEGER is 64-bit signed: more would not store
# Far deeper than any body this API takes. Checked right after parsing, because what comes later
# recurses over values (repr in error messages, jsonify) from deeper in the stack than the parser.
MAX_DEPTH = 16


class InvalidNode(RegistryError):
    """400: the body names a bad field."""


class TooLarge(RegistryError):
    """413: the body is over the size the server takes."""
    status = 413
    error = "too large"


class PreconditionFailed(RegistryError):
    """412: If-Match named a version of the node that is no longer the current one."""
    status = 412
    error = "precondition failed"


def parse_json(raw: bytes) -> object:
    """An API body as JSON, or InvalidNode: never RecursionError (json recurses per nesting
    level, so 100,000 `[` exhaust the stack) and never anything nested deeper than MAX_DEPTH."""
    if not raw.strip():
        # also what a server that gives no way to read a body without Content-Length passes on
        raise InvalidNode("the body is empty: send a JSON object with Content-Length and "
                          "Content-Type: application/json")
    try:
        data = json.loads(raw)
    except RecursionError:
        raise InvalidNode(f"the body is nested deeper than {MAX_DEPTH} levels") from None
    except ValueError as e:      # UnicodeDecodeError too
        raise InvalidNode(f"the body is not JSON ({_clip(str(e), 80)}); send a JSON object "
                          "with Content-Type: application/json") from None
    level = [data]
    for _ in range(MAX_DEPTH + 1):
        level = [v for c in level if isinstance(c, (list, dict))
                 for v in (c.values() if isinstance(c, dict) else c)]
        if not level:
            return data
    raise InvalidNode(f"the body is nested deeper than {MAX_DEPTH} levels")


def etag(node: Node) -> str:
    """The node's version as its entity tag (unquoted; HTTP quotes it)."""
    return str(node.version)


def spec_from(site: Site, data: object) -> NodeSpec:
    _check_shape(data)
    for key in REQUIRED:
        if key not in data:
            raise InvalidNode(f"{key}: required", key)
    return _parse(site, data)


def register(site: Site, registry: Registry, data: object) -> Node:
    return registry.add(spec_from(site, data), source="api")


def enroll(site: Site, registry: Registry, mac: str, data: object, *, detail: dict | None = None) -> Node:
    """A discovered machine becomes a registered node, armed for install. The body names what
    inspection cannot know (hostname, ip, roles; optionally interface, aliases, nics, firmware,
    bmc); the rest comes from its inventory: the install NIC is the one it booted from, its other
    NICs are listed (mode off) so each gets its name, and the layout's fit is checked against
    the size inspection measured of the disk the roles' layout installs to (layouts.<name>.disk)."""
    _check_shape(data, ENROLLABLE)
    for key in ENROLL_REQUIRED:
        if key not in data:
            raise InvalidNode(f"{key}: required", key)
    try:
        layout = site.layout_for(validate_roles(data["roles"], site, "node.roles"))
    except ConfigError as e:
        raise InvalidNode(_strip(str(e)), "roles") from None

    def build(found: Discovered) -> NodeSpec:
        inv = found.inventory
        boot = found.boot_nic()
        disks = {d["name"]: d["bytes"] for d in inv.get("disks", [])}
        if layout.disk not in disks:
            have = ", ".join(f"{n} ({b} bytes)" for n, b in disks.items()) or "none"
            raise Conflict(f"layout {layout.name} installs to {layout.disk}, which inspection did not find "
                           f"on {found.mac} (its disks: {have})", "disk_bytes")
        merged = {"mac": found.mac, "interface": boot["name"] if boot else "eth0",
                  "nics": [{"mac": n["mac"], "name": n["name"], "mode": "off"}
                           for n in inv.get("nics", []) if n["mac"] != found.mac],
                  "disk_bytes": disks[layout.disk], **data}
        if "firmware" not in data and inv.get("firmware"):
            merged["firmware"] = inv["firmware"]
        return _parse(site, merged)

    return registry.enroll(mac, build, detail=detail)


def change(site: Site, registry: Registry, mac: str, data: object, *,
           if_match: Callable[[str], bool] | None = None) -> Node:
    """Apply a partial change; what the body leaves out stays as it is.

    if_match: given the node's current entity tag, whether the change may go ahead (the
    caller's If-Match); asked inside the write transaction, so no write slips in between."""
    _check_shape(data)
    if not data:
        raise InvalidNode("the body changes nothing: give at least one of " + ", ".join(EDITABLE))

    def merge(node: Node) -> NodeSpec:
        if if_match is not None and not if_match(etag(node)):
            raise PreconditionFailed(f"{node.hostname} is at version {etag(node)}, not the one If-Match "
                                     "names: it changed since it was read; read it again", "If-Match")
        merged = spec_dict(node.spec)
        merged.update(data)
        if isinstance(data.get("bmc"), dict) and "bmc" in merged and node.spec.bmc is not None:
            # a BMC is changed key by key: a new URL keeps the password, which is never read back
            merged["bmc"] = {**_bmc_dict(node.spec.bmc), **data["bmc"]}
        return _parse(site, merged)

    return registry.update(mac, merge)


def spec_dict(spec: NodeSpec) -> dict:
    d = asdict(spec)
    # asdict keeps tuples; the parser takes JSON's lists
    d["roles"], d["aliases"], d["nics"] = list(spec.roles), list(spec.aliases), list(d["nics"])
    if d["disk_bytes"] is None:
        del d["disk_bytes"]
    if d["firmware"] is None:
        del d["firmware"]
    if spec.bmc is None:
        del d["bmc"]
    else:
        d["bmc"] = _bmc_dict(spec.bmc)
    return d


def _bmc_dict(bmc) -> dict:
    d = {"url": bmc.url, "username": bmc.username}
    if bmc.password is not None:
        d["password"] = bmc.password
    return d


def _parse(site: Site, data: dict) -> NodeSpec:
    try:
        return parse_node(data, site, "node")
    except ConfigError as e:
        raise InvalidNode(_strip(str(e)), _field(str(e))) from None


def _check_shape(data: object, allowed: tuple[str, ...] = EDITABLE) -> None:
    """Refuse, as InvalidNode, what the site's validation would choke on or quote at length:
    unknown keys, wrong JSON types, over-long text or lists, a disk size SQLite cannot hold."""
    if not isinstance(data, dict):
        raise InvalidNode(f"the body must be a JSON object, not {_kind(data)}")
    for key, value in data.items():
        if key not in allowed:
            raise InvalidNode(f"{_clip(key)}: unknown key (expected one of {', '.join(allowed)})",
                              _clip(key))
        if key in TEXT:
            _text(value, key)
        elif key in LISTS:
            if not isinstance(value, list):
                raise InvalidNode(f"{key}: must be an array, not {_kind(value)}", key)
            if len(value) > MAX_ITEMS:
                raise InvalidNode(f"{key}: {len(value)} items; at most {MAX_ITEMS}", key)
            for i, item in enumerate(value):
                if key != "nics":
                    _text(item, key, f"{key}[{i}]")
                    continue
                if not isinstance(item, dict):
                    raise InvalidNode(f"nics[{i}]: must be an object, not {_kind(item)}", key)
                for k, v in item.items():
                    if k not in NIC_KEYS:
                        raise InvalidNode(f"nics[{i}].{_clip(k)}: unknown key (expected one of "
                                          f"{', '.join(NIC_KEYS)})", key)
                    _text(v, key, f"nics[{i}].{k}")
        elif key == "firmware" and value is not None:
            # null clears it: the next boot loader that asks sets it again
            if value not in FIRMWARES:
                raise InvalidNode(f"firmware: {_clip(repr(value))} is not one of {', '.join(FIRMWARES)} "
                                  "(or null: learned from the boot loader that asks)", key)
        elif key == "bmc" and value is not None:
            # the rest (URL schemes, lengths) is provisioner.power.bmc's, through parse_node
            if not isinstance(value, dict):
                raise InvalidNode(f"bmc: must be an object with {', '.join(BMC_KEYS)} (or null: no BMC), "
                                  f"not {_kind(value)}", key)
            for k, v in value.items():
                if k not in BMC_KEYS:
                    raise InvalidNode(f"bmc.{_clip(k)}: unknown key (expected one of {', '.join(BMC_KEYS)})", key)
                if not isinstance(v, str):
                    raise InvalidNode(f"bmc.{k}: must be a string, not {_kind(v)}", key)
                if len(v) > 512:
                    raise InvalidNode(f"bmc.{k}: over 512 characters", key)
        elif key == "disk_bytes" and value is not None:
            # bool is an int to Python, and 2**64 passes `isinstance(int)` but not SQLite
            if isinstance(value, bool) or not isinstance(value, int):
                raise InvalidNode(f"disk_bytes: must be a whole number of bytes, not {_kind(value)}", key)
            if not 0 < value <= MAX_DISK_BYTES:
                raise InvalidNode(f"disk_bytes: {_clip(str(value))} is not a positive number of bytes "
                                  f"up to {MAX_DISK_BYTES}", key)


def _text(value: object, field: str, where: str | None = None) -> None:
    where = where or field
    if not isinstance(value, str):
        raise InvalidNode(f"{where}: must be a string, not {_kind(value)}", field)
    if len(value) > MAX_TEXT:
        raise InvalidNode(f"{where}: {len(value)} characters; at most {MAX_TEXT}", field)


def _kind(value: object) -> str:
    """The JSON name of a value's type, as the client wrote it."""
    for t, name in ((bool, "boolean"), (int, "number"), (float, "number"), (str, "string"),
                    (list, "array"), (dict, "object")):
        if isinstance(value, t):
            return name
    return "null" if value is None else type(value).__name__


def _clip(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def _field(message: str) -> str | None:
    m = re.match(r"node\.([a-z_]+)", message)
    return m.group(1) if m else None


def _strip(message: str) -> str:
    return message[len("node."):] if message.startswith("node.") else message
