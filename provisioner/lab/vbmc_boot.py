"""Loaded into the lab's vbmcd (its sitecustomize): a network boot set over IPMI leaves the disk
after it, as a real BMC's boot override does.

VirtualBMC 3.3 (virtualbmc/vbmc.py, set_boot_device) ignores IPMI's "this boot only" flag and
rewrites the domain to boot from that one device: it removes every device's boot order and
writes a single <os><boot dev='network'/>. libvirt then starts QEMU with `-boot strict=on`, so
once the node is installed and the service answers its network boot with "boot from your
disk", SeaBIOS has no disk to go to and the machine halts. A real BMC's override, and
sushy-tools' Redfish emulator (libvirtdriver.py, set_boot_device: the target first, then the
disks that had an order), leave the disk in the order after it. This adds <boot dev='hd'/>
after a network boot and changes nothing else: the IPMI session, the command and vbmc's own
handling of it are vbmc's.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET


def _patch() -> None:
    import libvirt
    from virtualbmc import utils
    from virtualbmc import vbmc

    original = vbmc.VirtualBMC.set_boot_device
    if getattr(original, "keeps_the_disk", False):
        return

    def set_boot_device(self, bootdevice):
        result = original(self, bootdevice)
        if result is None and vbmc.SET_BOOT_DEVICES_MAP.get(bootdevice) == "network":
            try:
                with utils.libvirt_open(**self._conn_args) as conn:
                    domain = utils.get_libvirt_domain(conn, self.domain_name)
                    tree = ET.fromstring(domain.XMLDesc(libvirt.VIR_DOMAIN_XML_SECURE
                                                        | libvirt.VIR_DOMAIN_XML_INACTIVE))
                    for os_element in tree.findall("os"):
                        if not any(b.get("dev") == "hd" for b in os_element.findall("boot")):
                            ET.SubElement(os_element, "boot").set("dev", "hd")
                    conn.defineXML(ET.tostring(tree, encoding="unicode"))
            except Exception:
                # as vbmc answers its own failures: busy, and the client may try again
                return vbmc.IPMI_COMMAND_NODE_BUSY
        return result

    set_boot_device.keeps_the_disk = True
    vbmc.VirtualBMC.set_boot_device = set_boot_device


try:
    _patch()
except ImportError:         # not in vbmcd
    pass
