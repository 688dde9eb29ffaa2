"""What every BMC driver offers, and the errors drivers raise (without the node's name: the
caller adds it, and the URL, never the password)."""

from __future__ import annotations

from typing import Protocol

ON, OFF = "on", "off"


class DriverError(Exception):
    """The BMC answered, but not as asked (or not in a way this driver understands)."""


class Unreachable(DriverError):
    """No answer, or the connection broke. Before a state change was sent it is safe to retry."""


class AuthFailed(DriverError):
    """The BMC refused the user name or password; retrying only locks the account sooner."""


class Driver(Protocol):
    def power_state(self) -> str:
        """ON or OFF."""

    def set_power(self, state: str) -> None:
        """Ask for ON or OFF (hard off: a node being reinstalled has nothing to shut down
        cleanly). One request; whether it took effect is for `power_state` to say."""

    def boot_pxe_once(self) -> None:
        """Make the next boot, and only the next, a network boot."""

    def close(self) -> None:
        ...
