"""Register and change nodes: one path for the HTTP API and the CLI.

Input is validated against the site (roles, network, layout fit) before the registry sees it;
the registry then checks uniqueness inside its transaction.
"""

from __future__ import annotations

import re
from dataclasses import asdict

from provisioner.config import ConfigError, NodeSpec, Site, parse_node
from provisioner.registry import Node, Registry, RegistryError

EDITABLE = ("mac", "hostname", "ip", "roles", "interface", "aliases", "nics", "disk_bytes")
REQUIRED = ("mac", "hostname", "ip", "roles")


class InvalidNode(RegistryError):
    """400: the body names a bad field."""


def spec_from(site: Site, data: object) -> NodeSpec:
    if not isinstance(data, dict):
        raise InvalidNode("the body must be a JSON object")
    for key in REQUIRED:
        if key not in data:
            raise InvalidNode(f"{key}: required", key)
    try:
        return parse_node(data, site, "node")
    except ConfigError as e:
        raise InvalidNode(_strip(str(e)), _field(str(e))) from None


def register(site: Site, registry: Registry, data: object) -> Node:
    return registry.add(spec_from(site, data), source="api")


def change(site: Site, registry: Registry, mac: str, data: object) -> Node:
    """Apply a partial change; what the body leaves out stays as it is."""
    if not isinstance(data, dict):
        raise InvalidNode("the body must be a JSON object")
    if not data:
        raise InvalidNode("the body changes nothing: give at least one of " + ", ".join(EDITABLE))
    node = registry.get(mac)
    merged = spec_dict(node.spec)
    merged.update(data)
    return registry.update(mac, spec_from(site, merged))


def spec_dict(spec: NodeSpec) -> dict:
    d = asdict(spec)
    # asdict keeps tuples; the parser takes JSON's lists
    d["roles"], d["aliases"], d["nics"] = list(spec.roles), list(spec.aliases), list(d["nics"])
    if d["disk_bytes"] is None:
        del d["disk_bytes"]
    return d


def _field(message: str) -> str | None:
    m = re.match(r"node\.([a-z_]+)", message)
    return m.group(1) if m else None


def _strip(message: str) -> str:
    return message[len("node."):] if message.startswith("node.") else message
