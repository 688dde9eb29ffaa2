"""libvirt://<domain>: a lab VM, powered through libvirt rather than a BMC.

The connection is $PROVISIONER_LIBVIRT_URI, else qemu:///system (where `provisioner lab up`
defines its VMs). There is no user name or password to check: libvirt's own access control
(the socket's permissions, polkit) decides."""

from __future__ import annotations

import os

from provisioner.power.base import OFF, ON, DriverError, Unreachable

DEFAULT_URI = "qemu:///system"


def libvirt_uri() -> str:
    return os.environ.get("PROVISIONER_LIBVIRT_URI") or DEFAULT_URI


class VirtDriver:
    def __init__(self, bmc, timeout: float):
        import libvirt
        self._libvirt = libvirt
        uri = libvirt_uri()
        try:
            self._conn = libvirt.open(uri)
        except libvirt.libvirtError as e:
            raise Unreachable(f"cannot connect to libvirt at {uri}: {e.get_error_message()}") from None
        name = bmc.url.split("://", 1)[1]
        try:
            self._dom = self._conn.lookupByName(name)
        except libvirt.libvirtError:
            self._conn.close()
            raise DriverError(f"libvirt at {uri} has no domain {name!r}") from None

    def power_state(self) -> str:
        try:
            return ON if self._dom.isActive() else OFF
        except self._libvirt.libvirtError as e:
            raise DriverError(e.get_error_message()) from None

    def set_power(self, state: str) -> None:
        try:
            if state == ON and not self._dom.isActive():
                self._dom.create()
            elif state == OFF and self._dom.isActive():
                self._dom.destroy()
        except self._libvirt.libvirtError as e:
            raise DriverError(e.get_error_message()) from None

    def boot_pxe_once(self) -> None:
        # the lab defines its VMs with the network first in the boot order and a disk after it,
        # and an installed node's PXE answer is "boot the local disk": every boot is a network
        # boot already, so there is nothing to set once
        pass

    def close(self) -> None:
        try:
            self._conn.close()
        except self._libvirt.libvirtError:
            pass
