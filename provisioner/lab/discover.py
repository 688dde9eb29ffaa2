"""`lab up --discover`: the lab's machines start unknown to the service, are discovered by the
inspection ramdisk, and are enrolled as an operator would: by MAC, with the name, address and
roles a site file gives them, and their (lab) BMC.

The machines come from a site file's `nodes:` but not from the service's site: every node of
that one is registered as it is read (registry.sync_site), and a registered machine is never
discovered.
"""

from __future__ import annotations

import time
from dataclasses import asdict

from provisioner.config import NodeSpec, load_site
from provisioner.registry import nodes as node_ops
from provisioner.registry.db import Node, RegistryError


class DiscoverError(RuntimeError):
    pass


def lab_node(spec: NodeSpec) -> Node:
    """A machine the lab builds before the registry knows it (what `Lab.up` reads of a node)."""
    return Node(0, spec, "unknown", False, "", None, "lab", "", "")


def machines(ctx, machines_file) -> list[Node]:
    """The machines to build: the file's nodes (default: the embedded testbed's), checked for
    what would stop them being discovered."""
    if not getattr(ctx.site, "discovery", None) or not ctx.site.discovery.enabled:
        raise DiscoverError(f"the service's site ({ctx.site.source}) has discovery off: unknown machines would "
                            "boot from their disks; set discovery: {enabled: true} there")
    specs = load_site(machines_file).nodes
    if not specs:
        raise DiscoverError(f"{machines_file or 'the embedded site'} has no nodes: nothing to build")
    known = [f"{s.hostname} ({s.mac})" for s in specs if ctx.registry.find(s.mac) is not None]
    if known:
        raise DiscoverError(f"registered already, so never discovered: {', '.join(known)} (remove them, or give "
                            "--machines a file with others; the service's own --site registers its nodes)")
    return [lab_node(s) for s in specs]


def ensure_inspection(state_dir) -> list[str]:
    """The inspection ramdisk unknown machines boot (built once, as `bootfiles inspect` does)."""
    from provisioner.boot import inspection
    if all(inspection.inspect_file(state_dir, name) for name in inspection.FILES):
        return []
    try:
        return inspection.build(state_dir)
    except inspection.InspectionError as e:
        raise DiscoverError(f"inspection ramdisk: {e}") from None


def wait_discovered(registry, nodes: list[Node], timeout: float, progress=lambda nodes: None,
                    poll: float = 2.0) -> None:
    """Until every machine is a discovered record (or registered: a site rule may have enrolled it)."""
    deadline = time.monotonic() + timeout
    while True:
        shown, missing = [], []
        for n in nodes:
            found = registry.find(n.mac) or registry.find_discovered(n.mac)
            shown.append(found or _Waiting(n.mac))
            if found is None:
                missing.append(n.hostname)
        progress(shown)
        if not missing:
            return
        if time.monotonic() > deadline:
            raise DiscoverError(f"not discovered after {timeout:.0f}s: {', '.join(missing)} (their consoles say why)")
        time.sleep(poll)


class _Waiting:
    hostname = None
    state = "booting"
    last_event = None

    def __init__(self, mac):
        self.mac = mac


def enroll(ctx, machine: Node, bmc_url: str, credentials: tuple[str, str]) -> Node:
    """Enroll a discovered machine by its MAC, as `nodes enroll` does, with the site file's name,
    address and roles, and its lab BMC (the password is sealed by the registry)."""
    spec = machine.spec
    already = ctx.registry.find(spec.mac)
    if already is not None:       # enrolled by one of the site's discovery rules meanwhile
        return already
    user, password = credentials
    data = {"hostname": spec.hostname, "ip": spec.ip, "roles": list(spec.roles), "interface": spec.interface,
            "bmc": {"url": bmc_url, "username": user, "password": password}}
    if spec.aliases:
        data["aliases"] = list(spec.aliases)
    if spec.nics:
        data["nics"] = [asdict(n) for n in spec.nics]
    try:
        return node_ops.enroll(ctx.site, ctx.registry, spec.mac, data, detail={"by": "lab up --discover"})
    except RegistryError as e:
        raise DiscoverError(f"{spec.hostname} ({spec.mac}): {e.detail}") from None
