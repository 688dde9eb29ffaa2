"""The install lifecycle: which callback moves a node from which state to which, as data.

    discovered (known by MAC and inventory only, never armed) -> registered (enroll)
    registered (armed) -> installing (kickstart fetched) -> installed (%post callback, disarmed)
                                      \\-> failed (%onerror, still armed: nothing usable is on disk)
    installed -> registered (rebuild: re-armed, new install token)

A machine is reinstalled only while it is armed. `installed` disarms it; only an operator's
rebuild arms it again. What a booting machine is told follows from this
(provisioner/boot/decision.py).
"""

from __future__ import annotations

# A machine the registry did not know that PXE-booted the inspection ramdisk (discovery on).
# It has no name, address or roles, so nothing can install it until it is enrolled.
DISCOVERED = "discovered"

# callback type -> (states it may come from, state it leads to, whether it disarms netboot)
CALLBACKS: dict[str, tuple[frozenset[str], str, bool]] = {
    "installing": (frozenset({"registered", "installing", "failed"}), "installing", False),
    "installed": (frozenset({"registered", "installing"}), "installed", True),
    "failed": (frozenset({"registered", "installing"}), "failed", False),
    # the layout an installer made (the lab's rehearsal installer reports it); no state change
    "layout": (frozenset({"installing"}), "installing", False),
}
DETAIL_MAX = 64 * 1024      # a failed install's log tail is kept, but not without bound

# A first-boot step's reports: started, then ok, skipped (the step itself found that what it does
# cannot run on this node and said why: never faked as done) or failed. ok and skipped both let
# the plan go on: barriers open and the node is deployed when each of its steps is one of them.
STEP_STATUSES = ("started", "ok", "skipped", "failed")
STEP_DONE = frozenset({"ok", "skipped"})
