"""The install lifecycle and the boot decision: the rules, as data, in one place.

    registered (armed) -> installing (kickstart fetched) -> installed (%post callback, disarmed)
                                      \\-> failed (%onerror, still armed: nothing usable is on disk)
    installed -> registered (rebuild: re-armed, new install token)

A machine is reinstalled only while it is armed. `installed` disarms it; only an operator's
rebuild arms it again. Every PXE answer (TFTP or HTTP) comes from `decide`.
"""

from __future__ import annotations

from dataclasses import dataclass

from provisioner.registry import Node

# callback type -> (states it may come from, state it leads to, whether it disarms netboot)
CALLBACKS: dict[str, tuple[frozenset[str], str, bool]] = {
    "installing": (frozenset({"registered", "installing", "failed"}), "installing", False),
    "installed": (frozenset({"registered", "installing"}), "installed", True),
    "failed": (frozenset({"registered", "installing"}), "failed", False),
    # the layout an installer made (the lab's rehearsal installer reports it); no state change
    "layout": (frozenset({"installing"}), "installing", False),
}
DETAIL_MAX = 64 * 1024      # a failed install's log tail is kept, but not without bound


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
