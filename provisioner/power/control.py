"""Power actions on registered nodes: one node, many through the bounded pool, and the
rebuild that re-arms a node and network-boots it.

Retries: opening a session and reading the power state are retried with back-off when the BMC
does not answer (nothing has changed yet, so asking again is harmless). A request that changes
the power state is sent once: after a lost answer it may or may not have happened, and a cycle
sent twice can turn a machine off in the middle of the installer it just started. Whether it
happened is read back (with retries) until the deadline. Bad credentials are never retried:
BMCs lock an account after a few failures.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable

from provisioner.power.base import OFF, ON, AuthFailed, Driver, DriverError, Unreachable
from provisioner.power.bmc import Bmc
from provisioner.power.pool import DEFAULT_LIMIT, run_bounded
from provisioner.registry.db import Conflict, Node, Registry, RegistryError

log = logging.getLogger(__name__)

ACTIONS = ("on", "off", "cycle", "status")


class BmcFailed(RegistryError):
    """502: the node's BMC did not do what was asked. The detail names the node and the BMC's
    URL, never its password."""
    status = 502
    error = "bmc failure"

    def __init__(self, detail: str, node: Node | None = None):
        super().__init__(detail, "bmc")
        self.node = node


class NoBmc(Conflict):
    def __init__(self, node: Node, doing: str = "nothing was done"):
        super().__init__(f"{node.hostname} has no BMC ({doing}): set one (bmc: url, username, password) first",
                         "bmc")


@dataclass(frozen=True)
class Settings:
    timeout: float = 10.0       # one request to a BMC
    deadline: float = 120.0     # for the power state to become what was asked
    attempts: int = 4           # reads and session setup, while the BMC does not answer
    backoff: float = 0.5        # first wait between attempts; doubles each time
    poll: float = 1.0           # between reads while waiting for a state


def open_driver(bmc: Bmc, timeout: float) -> Driver:
    if bmc.scheme in ("redfish", "redfish+https"):
        from provisioner.power.redfish import RedfishDriver
        return RedfishDriver(bmc, timeout)
    if bmc.scheme == "ipmi":
        from provisioner.power.ipmi import IpmiDriver
        return IpmiDriver(bmc, timeout)
    if bmc.scheme == "libvirt":
        from provisioner.power.virt import VirtDriver
        return VirtDriver(bmc, timeout)
    raise DriverError(f"no driver for {bmc.scheme}://")


Opener = Callable[[Bmc, float], Driver]


@dataclass(frozen=True)
class Outcome:
    hostname: str
    mac: str
    action: str
    power: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def as_dict(self) -> dict:
        return {"node": self.hostname, "mac": self.mac, "action": self.action, "ok": self.ok,
                "power": self.power, "error": self.error}


def act(node: Node, action: str, *, settings: Settings = Settings(), opener: Opener = open_driver,
        pxe_once: bool = False) -> str:
    """Do `action` on the node's BMC; the power state it ends in. Raises BmcFailed, NoBmc."""
    if action not in ACTIONS:
        raise RegistryError(f"action: {action!r} is not one of {', '.join(ACTIONS)}", "action")
    bmc = node.spec.bmc
    if bmc is None:
        raise NoBmc(node)
    where = f"{node.hostname}: BMC {bmc.url}"
    if bmc.password is None and bmc.scheme != "libvirt":
        raise BmcFailed(f"{where}: its password cannot be unsealed with the state directory's bmc.key "
                        "(lost or replaced); set the BMC password again", node)
    changed = []        # what was sent, for the message if a later step fails
    try:
        driver = _retry(lambda: opener(bmc, settings.timeout), settings)
        try:
            if pxe_once:
                # a boot override is a setting, not a power change: sending it twice is harmless
                _retry(driver.boot_pxe_once, settings)
                changed.append("one-time network boot set")
            state = _retry(driver.power_state, settings)
            if action == "status":
                return state
            steps = {"on": [ON], "off": [OFF], "cycle": [OFF, ON] if state == ON else [ON]}[action]
            for target in steps:
                if state != target:
                    # noted before it is sent: if its answer is lost, it may have happened
                    changed.append(f"power {target} sent")
                    driver.set_power(target)
                    state = _wait(driver, target, settings)
            return state
        finally:
            driver.close()
    except AuthFailed as e:
        raise BmcFailed(f"{where}: {e} (user {bmc.username!r}); not retried", node) from None
    except Unreachable as e:
        tries = f" ({settings.attempts} attempts)" if not changed else ""
        raise BmcFailed(f"{where}: {e}{tries}{_after(changed)}", node) from None
    except DriverError as e:
        raise BmcFailed(f"{where}: {e}{_after(changed)}", node) from None


def _after(changed: list[str]) -> str:
    return f"; before this: {', '.join(changed)}, so the node may be in between" if changed else ""


def _retry(fn, settings: Settings):
    delay = settings.backoff
    for attempt in range(1, settings.attempts + 1):
        try:
            return fn()
        except Unreachable:
            if attempt == settings.attempts:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 8)


def _wait(driver: Driver, target: str, settings: Settings) -> str:
    end = time.monotonic() + settings.deadline
    state = None
    while True:
        try:
            state = driver.power_state()
        except Unreachable:
            pass        # some BMCs stop answering for a moment while the power changes
        if state == target:
            return state
        if time.monotonic() >= end:
            raise DriverError(f"asked for power {target}, but it is still {state or 'unknown'} "
                              f"after {settings.deadline:g}s")
        time.sleep(min(settings.poll, max(0.0, end - time.monotonic())))


def power(registry: Registry, node: Node, action: str, *, settings: Settings = Settings(),
          opener: Opener = open_driver, pxe_once: bool = False) -> Outcome:
    """One node's action, as an event in its history (a status read is not one: it changes
    nothing, and a monitoring loop would bury the history). Failures become the Outcome."""
    try:
        state = act(node, action, settings=settings, opener=opener, pxe_once=pxe_once)
        outcome = Outcome(node.hostname, node.mac, action, power=state)
    except (BmcFailed, NoBmc) as e:
        outcome = Outcome(node.hostname, node.mac, action, error=e.detail)
    if action != "status" and node.spec.bmc is not None:
        _record(registry, node, action, outcome, pxe=pxe_once)
    return outcome


def power_many(registry: Registry, nodes: list[Node], action: str, *, limit: int = DEFAULT_LIMIT,
               settings: Settings = Settings(), opener: Opener = open_driver,
               pxe_once: bool = False) -> list[Outcome]:
    """pxe_once: set a one-time network boot first (the lab's first install of enrolled machines)."""
    return run_bounded(lambda n: power(registry, n, action, settings=settings, opener=opener, pxe_once=pxe_once),
                       nodes, limit)


def rebuild_and_cycle(registry: Registry, mac: str, *, settings: Settings = Settings(),
                      opener: Opener = open_driver) -> tuple[Node, str]:
    """Re-arm the node (rebuild), set a one-time network boot and power-cycle it. The node is
    armed before its BMC is touched, so if the BMC fails the node stays armed (it installs at
    its next network boot, whoever powers it) and BmcFailed says so."""
    node = registry.find(mac)
    if node is not None and node.spec.bmc is None:
        raise NoBmc(node, "not rebuilt")       # before re-arming: nothing is half done
    node = registry.rebuild(mac)
    try:
        state = act(node, "cycle", settings=settings, opener=opener, pxe_once=True)
    except (BmcFailed, NoBmc) as e:
        _record(registry, node, "cycle", Outcome(node.hostname, node.mac, "cycle", error=e.detail), pxe=True)
        raise BmcFailed(f"{node.hostname} is rebuilt and armed for install, but the power cycle failed, "
                        f"so it will install only when it next boots from the network: {e.detail}",
                        registry.get(node.mac)) from None
    _record(registry, node, "cycle", Outcome(node.hostname, node.mac, "cycle", power=state), pxe=True)
    return registry.get(node.mac), state


def _record(registry: Registry, node: Node, action: str, outcome: Outcome, pxe: bool = False) -> None:
    detail = {"action": action, "url": node.spec.bmc.url if node.spec.bmc else None,
              "result": "ok" if outcome.ok else "failed"}
    if pxe:
        detail["boot"] = "pxe once"
    if outcome.ok:
        detail["power"] = outcome.power
        log.info("%s (%s): power %s through %s: now %s", node.hostname, node.mac, action,
                 detail["url"], outcome.power)
    else:
        detail["error"] = outcome.error
        log.warning("%s", outcome.error)
    try:
        registry.add_event(node.mac, "power", detail)
    except RegistryError as e:      # removed meanwhile: the outcome still goes back to the caller
        log.warning("%s: power event not recorded: %s", node.hostname, e.detail)
