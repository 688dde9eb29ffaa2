"""Discovery: what the inspection ramdisk reports of a machine the registry does not know.

The report is anonymous (the machine has no credential yet, and anyone on the install network
may send one), so everything in it is checked before the registry sees it: one JSON object of
at most BODY_MAX bytes, known keys only, bounded lists and text, MACs and interface names as
the site's own validation takes them. A report can only create or replace a discovered record;
it can never touch a registered node (db.Registry.discover refuses), and no more than
discovery.max_nodes machines are held. The site's rules (config.Rule) may then enroll the
machine on their own.
"""

from __future__ import annotations

import logging
import re

from provisioner.config import Site, machine_ifname
from provisioner.macaddr import InvalidMAC, canonical_mac
from provisioner.registry import nodes
from provisioner.registry.db import Discovered, Node, Registry, RegistryError
from provisioner.registry.nodes import InvalidNode, TooLarge, parse_json
from provisioner.render.storage import FIRMWARES

log = logging.getLogger(__name__)

BODY_MAX = 64 * 1024
MAX_NICS = 64
MAX_DISKS = 64
MAX_TEXT = 128
INT64 = 2**63 - 1
KEYS = {"boot_mac", "nics", "disks", "cpus", "virt", "memory_bytes", "system", "firmware"}
VIRT = ("", "vmx", "svm")
_IFNAME = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,14}")
_DISK = re.compile(r"[a-z][a-z0-9_-]{0,31}")


def parse_inventory(mac: str, raw: bytes) -> dict:
    """The report as the registry keeps it, or InvalidNode (400) / TooLarge (413) naming what is wrong."""
    if len(raw) > BODY_MAX:
        raise TooLarge(f"an inventory is at most {BODY_MAX} bytes; this one is {len(raw)}", "body")
    data = parse_json(raw)
    if not isinstance(data, dict):
        raise InvalidNode("the body must be a JSON object")
    extra = sorted(set(data) - KEYS)
    if extra:
        raise InvalidNode(f"{_clip(extra[0])}: unknown key (expected {', '.join(sorted(KEYS))})", _clip(extra[0]))
    for key in ("nics", "disks", "cpus", "virt", "memory_bytes", "system"):
        if key not in data:
            raise InvalidNode(f"{key}: required", key)
    if "boot_mac" in data and _mac(data["boot_mac"], "boot_mac") != mac:
        raise InvalidNode(f"boot_mac: {data['boot_mac']!r} is not the MAC of the path ({mac})", "boot_mac")

    nics = []
    for i, n in enumerate(_list(data["nics"], "nics", MAX_NICS)):
        _keys(n, {"mac", "name", "link"}, f"nics[{i}]")
        name = _text(n["name"], f"nics[{i}].name")
        if not _IFNAME.fullmatch(name):
            raise InvalidNode(f"nics[{i}].name: {_clip(repr(name))} is not an interface name", "nics")
        if not isinstance(n["link"], bool):
            raise InvalidNode(f"nics[{i}].link: must be true or false", "nics")
        nics.append({"mac": _mac(n["mac"], f"nics[{i}].mac"), "name": name, "link": n["link"]})
    macs = [n["mac"] for n in nics]
    if mac not in macs:
        raise InvalidNode(f"nics: the NIC it booted from ({mac}) is not listed", "nics")
    for key, values in (("MAC", macs), ("name", [n["name"] for n in nics]),
                        ("machine name", [machine_ifname(n["name"]) for n in nics])):
        dup = next((v for v in values if values.count(v) > 1), None)
        if dup:
            raise InvalidNode(f"nics: {key} {dup} is listed twice", "nics")

    disks = []
    for i, d in enumerate(_list(data["disks"], "disks", MAX_DISKS)):
        _keys(d, {"name", "bytes", "model"}, f"disks[{i}]")
        name = _text(d["name"], f"disks[{i}].name")
        if not _DISK.fullmatch(name):
            raise InvalidNode(f"disks[{i}].name: {_clip(repr(name))} is not a disk name like sda", "disks")
        disks.append({"name": name, "bytes": _int(d["bytes"], f"disks[{i}].bytes", 0),
                      "model": _text(d["model"], f"disks[{i}].model")})
    names = [d["name"] for d in disks]
    dup = next((v for v in names if names.count(v) > 1), None)
    if dup:
        raise InvalidNode(f"disks: {dup} is listed twice", "disks")

    if data["virt"] not in VIRT:
        raise InvalidNode(f"virt: must be one of vmx, svm or \"\" (none), not {_clip(repr(data['virt']))}", "virt")
    system = data["system"]
    _keys(system, {"vendor", "model", "serial"}, "system")
    out = {
        "boot_mac": mac, "nics": nics, "disks": disks, "cpus": _int(data["cpus"], "cpus", 1, 65536),
        "virt": data["virt"], "memory_bytes": _int(data["memory_bytes"], "memory_bytes", 0),
        "system": {k: _text(system[k], f"system.{k}") for k in ("vendor", "model", "serial")},
    }
    if "firmware" in data:
        if data["firmware"] not in FIRMWARES:
            raise InvalidNode(f"firmware: must be one of {', '.join(FIRMWARES)}", "firmware")
        out["firmware"] = data["firmware"]
    return out


def report(site: Site, registry: Registry, mac_text: str, raw: bytes) -> tuple[Discovered | Node, bool]:
    """Handle one report: (the record, whether it is new), or the node a rule enrolled it as.
    Raises RegistryError (4xx) and then nothing changed."""
    if not site.discovery.enabled:
        raise DiscoveryOff("discovery is off (site.yaml discovery.enabled)")
    try:
        mac = canonical_mac(mac_text)
    except InvalidMAC as e:
        raise InvalidNode(str(e), "mac") from None
    inventory = parse_inventory(mac, raw)
    found, new = registry.discover(mac, inventory, site.discovery.max_nodes)
    enrolled = apply_rules(site, registry, found)
    return (enrolled or found), new


def apply_rules(site: Site, registry: Registry, found: Discovered) -> Node | None:
    """Enroll a discovered machine by the first rule it matches that has a slot left (a slot is
    taken while a node has its host name or address). None when no rule takes it."""
    if not site.discovery.rules:
        return None
    entries = registry.host_entries()
    used_names = {n for _, h, aliases in entries for n in (h, *aliases)}
    used_ips = {ip for ip, _, _ in entries}
    for i, rule in enumerate(site.discovery.rules):
        if not matches(site, rule, found.inventory):
            continue
        slot = next((s for s in rule.slots if s.hostname not in used_names and s.ip not in used_ips), None)
        if slot is None:
            continue
        try:
            return nodes.enroll(site, registry, found.mac,
                                {"hostname": slot.hostname, "ip": slot.ip, "roles": list(rule.roles)},
                                detail={"rule": i})
        except RegistryError as e:
            log.warning("discovery rule %d matched %s but could not enroll it as %s: %s",
                        i, found.mac, slot.hostname, e.detail)
    return None


def matches(site: Site, rule, inventory: dict) -> bool:
    m = dict(rule.match)
    disk = next((d["bytes"] for d in inventory["disks"] if d["name"] == site.layout_for(rule.roles).disk), None)
    if ("disk_bytes_min" in m or "disk_bytes_max" in m) and disk is None:
        return False
    checks = (
        ("disk_bytes_min", lambda v: disk >= v),
        ("disk_bytes_max", lambda v: disk <= v),
        ("cpus_min", lambda v: inventory["cpus"] >= v),
        ("memory_bytes_min", lambda v: inventory["memory_bytes"] >= v),
        ("virt", lambda v: bool(inventory["virt"]) == v),
        ("vendor", lambda v: inventory["system"]["vendor"] == v),
        ("model", lambda v: inventory["system"]["model"] == v),
    )
    return all(check(m[key]) for key, check in checks if key in m)


class DiscoveryOff(RegistryError):
    status = 404
    error = "not found"


def _list(value: object, where: str, most: int) -> list:
    if not isinstance(value, list):
        raise InvalidNode(f"{where}: must be an array", where)
    if len(value) > most:
        raise InvalidNode(f"{where}: {len(value)} items; at most {most}", where)
    return value


def _keys(value: object, want: set[str], where: str) -> None:
    if not isinstance(value, dict) or set(value) != want:
        raise InvalidNode(f"{where}: must be an object with exactly {', '.join(sorted(want))}", where.split("[")[0])


def _text(value: object, where: str) -> str:
    if not isinstance(value, str) or len(value) > MAX_TEXT or not value.isprintable():
        raise InvalidNode(f"{where}: must be printable text of at most {MAX_TEXT} characters",
                          where.split("[")[0].split(".")[0])
    return value


def _int(value: object, where: str, least: int, most: int = INT64) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not least <= value <= most:
        raise InvalidNode(f"{where}: must be a whole number from {least} to {most}", where.split("[")[0])
    return value


def _mac(value: object, where: str) -> str:
    try:
        return canonical_mac(value)
    except (InvalidMAC, TypeError, AttributeError) as e:
        raise InvalidNode(f"{where}: {_clip(str(e), 80)}", where.split("[")[0].split(".")[0]) from None


def _clip(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[:limit] + "..."
