"""The boot decision: what a PXE-booting machine is told, from its registry entry alone.

A machine is reinstalled only while it is armed (provisioner/registry/states.py has the
lifecycle that arms and disarms it). Every PXE answer (TFTP or HTTP) comes from `decide`.
"""

from __future__ import annotations

from dataclasses import dataclass

from provisioner.registry.db import Node


@dataclass(frozen=True)
class Decision:
    action: str             # install | local
    reason: str
    node: Node | None

    @property
    def install(self) -> bool:
        return self.action == "install"


def decide(node: Node | None) -> Decision:
    """What a PXE-booting machine with this registry entry is told to do."""
    if node is None:
        return Decision("local", "not registered", None)
    if not node.netboot:
        return Decision("local", f"{node.state}, netboot disarmed (rebuild to reinstall)", node)
    return Decision("install", f"{node.state}, armed for install", node)
