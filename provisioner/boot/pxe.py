"""Per-MAC boot configs, generated from the registry at the moment a machine asks.

One function, `answer`, turns (channel, requested name) into bytes or a file for the TFTP server
and the HTTP endpoints alike; every boot decision it makes is logged in one line: MAC, what was
asked, what was answered, why. Nothing is written to disk, so there is nothing to sync.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from provisioner.boot import distros
from provisioner.boot.bootfiles import loader_path
from provisioner.config import machine_ifname
from provisioner.boot.decision import Decision, decide
from provisioner.boot.inspection import INSPECT_DIR, inspect_file
from provisioner.macaddr import InvalidMAC, canonical_mac
from provisioner.mirror import served_url
from provisioner.boot.tftp import ERR_NOT_FOUND, Resolved

log = logging.getLogger(__name__)

_PXELINUX_MAC = re.compile(r"pxelinux\.cfg/01-(?P<mac>[0-9A-Fa-f-]{17})")
_GRUB_MAC = re.compile(r"(?:.*/)?grub\.cfg-01-(?P<mac>[0-9A-Fa-f:-]{17})")
_GRUB_GENERIC = re.compile(r"(?:.*/)?grub\.cfg")
# what a per-MAC config's loader says of the machine's firmware; iPXE runs on either
_LOADER_FIRMWARE = {"pxelinux": "bios", "grub": "uefi"}
# the inspection ramdisk, at the path an imported distribution's files have (so GRUB reaches
# it the same way over TFTP and HTTP); no distribution is called "inspect"
_INSPECT_FILE = re.compile(rf"boot/{INSPECT_DIR}/(?P<file>vmlinuz|initrd\.img)")
_DISTRO_FILE = re.compile(r"boot/(?P<distro>[a-z0-9_][a-z0-9_.-]*)/(?P<file>vmlinuz|initrd\.img)")


@dataclass
class BootAnswer:
    text: str
    decision: Decision


class Boot:
    """Boot configs for one service: the registry, the renderer and the state directory."""

    def __init__(self, ctx, state_dir: Path):
        self.ctx = ctx
        self.state_dir = Path(state_dir)

    # -- the decision and its rendering -----------------------------------------------------

    def decision(self, mac: str) -> Decision:
        registry, on = self.ctx.registry, self.ctx.site.discovery.enabled
        node = registry.find(mac)
        d = decide(node, on, on and node is None and registry.find_discovered(mac) is not None)
        if d.inspect and not all(inspect_file(self.state_dir, f) for f in ("vmlinuz", "initrd.img")):
            # a loader sent to a kernel that is not there stops at its prompt: the disk is better
            return Decision("local", f"{d.reason}, but there is no inspection ramdisk "
                            "(provisioner bootfiles inspect)", None)
        return d

    def inspect_args(self, mac: str) -> str:
        """The inspection ramdisk's command line: where to report, and the NIC it booted from."""
        return " ".join([f"provisioner.report={self.ctx.site.boot_url}/discover/{mac}",
                         f"provisioner.mac={mac}", *self.ctx.site.kernel_args])

    def kernel_args(self, node) -> str:
        site, spec = self.ctx.site, node.spec
        gateway = "" if site.gateway in (None, spec.ip) else site.gateway
        install = machine_ifname(spec.interface)
        args = [
            f"inst.ks={site.boot_url}/ks/{spec.mac}",
            # the service's copy when the mirror is on: stage2 and packages need no route out
            f"inst.repo={served_url(site, site.install_tree)}",
            # every NIC the site knows gets its name from its MAC (nic0, nic1: README "Kickstarts");
            # a NIC left out would keep a kernel ethN name and race the renames (dracut's ifname=)
            *(f"ifname={name}:{mac}" for name, mac in self.ctx.renderer.ifnames(node)),
            f"ip={spec.ip}::{gateway}:{site.network.netmask}:{spec.hostname}.{site.domain}:{install}:none",
            *(f"nameserver={ns}" for ns in site.nameservers),
            *site.kernel_args,
            # last, so a site's inst.text cannot undo it: in cmdline mode a setting the kickstart
            # lacks is an error %onerror reports, not a menu that waits for nobody
            "inst.cmdline",
        ]
        return " ".join(args)

    def render(self, kind: str, mac: str, asked: str, channel: str) -> BootAnswer:
        """kind: pxelinux | grub | ipxe."""
        d = self.decision(mac)
        firmware = _LOADER_FIRMWARE.get(kind)
        if d.node is not None and firmware and d.node.spec.firmware != firmware:
            self.ctx.registry.learn_firmware(d.node.mac, firmware, f"{kind} asked {asked[:100]} over {channel}")
        ctx = {"decision": d, "mac": mac, "node": d.node.spec if d.node else None}
        if d.install:
            distro = self.ctx.site.distro
            ctx.update(self._kernel_locations(kind, distro))
            ctx["args"] = self.kernel_args(d.node)
        elif d.inspect:
            ctx.update(self._kernel_locations(kind, INSPECT_DIR))
            ctx["args"] = self.inspect_args(mac)
        text = self.ctx.renderer.env.get_template(f"{kind}.j2").render(ctx)
        who = f" ({d.node.hostname})" if d.node else ""
        log.info("boot %s %s%s: asked %s, answered %s: %s", channel, mac, who, asked[:200], d.action, d.reason)
        return BootAnswer(text, d)

    def _kernel_locations(self, kind: str, distro: str) -> dict:
        base = self.ctx.site.boot_url
        http = {"kernel": f"{base}/boot/{distro}/vmlinuz", "initrd": f"{base}/boot/{distro}/initrd.img"}
        if kind in ("pxelinux", "ipxe"):
            return http     # lpxelinux and iPXE fetch over HTTP themselves
        # GRUB 2.06 names an HTTP server as (http,host) and cannot take a port: TFTP otherwise
        url = urlparse(base)
        if url.scheme == "http" and url.port in (None, 80):
            root = f"(http,{url.hostname})"
            return {"kernel": f"{root}/boot/{distro}/vmlinuz", "initrd": f"{root}/boot/{distro}/initrd.img"}
        return {"kernel": f"/boot/{distro}/vmlinuz", "initrd": f"/boot/{distro}/initrd.img"}

    def grub_generic(self) -> str:
        """GRUB's generic config name (asked first over HTTP, or when the per-MAC one was not):
        a redirect to the per-MAC config beside it."""
        return self.ctx.renderer.env.get_template("grub-generic.j2").render()

    # -- TFTP -------------------------------------------------------------------------------

    def tftp_resolve(self, name: str, peer: tuple[str, int]) -> Resolved:
        rel = name.replace("\\", "/").lstrip("/")
        for pattern, kind in ((_PXELINUX_MAC, "pxelinux"), (_GRUB_MAC, "grub")):
            m = pattern.fullmatch(rel)
            if m:
                mac = self._mac(m.group("mac"))
                if mac is None:
                    return Resolved(why="not a MAC in the name")
                return Resolved(data=self.render(kind, mac, rel, f"tftp {peer[0]}").text.encode())
        if rel == "pxelinux.cfg/default":
            # reached only by a client whose per-MAC name we did not answer: boot from disk
            return Resolved(data=self.ctx.renderer.env.get_template("pxelinux.j2").render(
                decision=Decision("local", "no per-MAC config asked", None), mac=None, node=None).encode())
        if rel.startswith("pxelinux.cfg/"):
            return Resolved(why="no such config (per-MAC names only)")
        if _GRUB_GENERIC.fullmatch(rel):
            return Resolved(data=self.grub_generic().encode())
        m = _INSPECT_FILE.fullmatch(rel)
        if m:
            path = inspect_file(self.state_dir, m.group("file"))
            return Resolved(path=path) if path else Resolved(why="no inspection ramdisk (provisioner bootfiles inspect)")
        m = _DISTRO_FILE.fullmatch(rel)
        if m:
            path = distros.boot_file(self.state_dir, m.group("distro"), m.group("file"))
            return Resolved(path=path) if path else Resolved(why="distro not imported")
        path = loader_path(self.state_dir, self.ctx.site.distro, rel)
        if path is None:
            return Resolved(error=ERR_NOT_FOUND, why="not a boot file here")
        return Resolved(path=path)

    def file_resolve(self, url_path: str) -> Path | None:
        """What may be sent over HTTP: imported kernels and initrds, and the boot loaders."""
        m = _INSPECT_FILE.fullmatch(url_path[1:]) if url_path.startswith("/") else None
        if m:
            return inspect_file(self.state_dir, m.group("file"))
        m = _DISTRO_FILE.fullmatch(url_path[1:]) if url_path.startswith("/") else None
        if m:
            return distros.boot_file(self.state_dir, m.group("distro"), m.group("file"))
        if url_path.startswith("/bootfiles/") and "%" not in url_path:
            return loader_path(self.state_dir, self.ctx.site.distro, url_path[len("/bootfiles/"):])
        return None

    @staticmethod
    def _mac(text: str) -> str | None:
        try:
            return canonical_mac(text)
        except InvalidMAC:
            return None
