"""The boot decision: what a PXE-booting machine is told, from its registry entry alone.

A machine is reinstalled only while it is armed (provisioner/registry/states.py has the
lifecycle that arms and disarms it). A machine the registry does not know boots from its disk,
unless the site turned discovery on: then it gets the inspection ramdisk, which reports what
the machine is and powers it off (boot/discovery.py). Every PXE answer (TFTP or HTTP) comes
from `decide`.
"""

from __future__ import annotations

from dataclasses import dataclass

from provisioner.registry.db import Node


@dataclass(frozen=True)
class Decision:
    action: str             # install | inspect | local
    reason: str
    node: Node | None

    @property
    def install(self) -> bool:
        return self.action == "install"

    @property
    def inspect(self) -> bool:
        return self.action == "inspect"


def decide(node: Node | None, discovery: bool = False, discovered: bool = False) -> Decision:
    """What a PXE-booting machine with this registry entry is told to do. discovery: the site's
    discovery.enabled; discovered: an unregistered MAC the registry holds as discovered."""
    if node is None:
        if not discovery:
            return Decision("local", "not registered, discovery off", None)
        if discovered:
            return Decision("inspect", "discovered, not enrolled: inspecting again", None)
        return Decision("inspect", "not registered, discovery on", None)
    if not node.netboot:
        return Decision("local", f"{node.state}, netboot disarmed (rebuild to reinstall)", node)
    return Decision("install", f"{node.state}, armed for install", node)
