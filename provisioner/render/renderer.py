"""One Jinja2 environment for every rendered file; the context for a node's kickstart.

The renderer never touches the database: callers hand it a Node. What differs between roles is
decided here, in Python; the templates in templates/kickstarts/ only lay the answers out.
"""

from __future__ import annotations

import ipaddress
import os
import time
from importlib import resources
from functools import lru_cache
from pathlib import Path

import jinja2

from provisioner.render import storage
from provisioner.config import Site, machine_ifname
from provisioner.credentials import Credentials
from provisioner.mirror import mirror_base, served_url
from provisioner.registry.db import Node

# What the service reads ships inside the package (a wheel carries it): found through
# importlib.resources, as a directory on disk (a zipped install is not supported).
PACKAGE_DIR = Path(str(resources.files("provisioner")))
TEMPLATES_DIR = PACKAGE_DIR / "templates"
KICKSTART_TEMPLATE = "node.ks.j2"


def template_dirs(site: Site) -> list[Path]:
    """Operator overrides first (site `templates:` or $PROVISIONER_TEMPLATES), then the shipped ones."""
    dirs = []
    if site.templates:
        dirs.append(site.templates)
    if os.environ.get("PROVISIONER_TEMPLATES"):
        dirs.append(Path(os.environ["PROVISIONER_TEMPLATES"]))
    dirs += [TEMPLATES_DIR / "kickstarts", TEMPLATES_DIR / "pxe"]
    return dirs


def make_environment(site: Site, auto_reload: bool = True) -> jinja2.Environment:
    # A running service picks up edited templates by itself; a one-shot command (regenerate)
    # skips the per-render stat of every template file.
    env = jinja2.Environment(
        auto_reload=auto_reload,
        loader=jinja2.FileSystemLoader([str(d) for d in template_dirs(site)]),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )
    env.filters["shquote"] = shquote
    return env


def shquote(value: object) -> str:
    """Single-quote for POSIX sh."""
    return "'" + str(value).replace("'", "'\"'\"'") + "'"


class Renderer:
    def __init__(self, site: Site, credentials: Credentials, auto_reload: bool = True,
                 ca_pem: str | None = None):
        self.site = site
        self.credentials = credentials
        self.ca_pem = ca_pem        # the CA %post installs for the runner, when the API is HTTPS
        self.env = make_environment(site, auto_reload)
        self._version: tuple = ()
        self._version_at = -1.0
        self._storage = lru_cache(maxsize=None)(self._storage_context)
        self._packages = lru_cache(maxsize=None)(lambda roles: tuple(site.packages_for(roles)))

    def templates_version(self) -> tuple:
        """Changes when a template is edited, added or removed; looked at once a second at most."""
        if time.monotonic() - self._version_at > 1.0:
            self._version = tuple((str(p), p.stat().st_mtime_ns) for d in template_dirs(self.site)
                                  if d.is_dir() for p in sorted(d.rglob("*")) if p.is_file())
            self._version_at = time.monotonic()
        return self._version

    def kickstart(self, node: Node) -> str:
        return self.env.get_template(KICKSTART_TEMPLATE).render(self.kickstart_context(node))

    def kickstart_context(self, node: Node) -> dict:
        site, spec = self.site, node.spec
        layout = site.layout_for(spec.roles)
        return {
            "site": site,
            "node": spec,
            "fqdn": f"{spec.hostname}.{site.domain}",
            "roles": spec.roles,
            "network": self.network_lines(node),
            "storage": self._storage(layout.name, spec.firmware),
            "packages": self._packages(spec.roles),
            "root_password_hash": self.credentials.root_password_hash,
            "ssh_authorized_keys": site.ssh_authorized_keys,
            "service_url": site.service_url,
            # what the installer itself fetches and reports goes to the boot server
            "events_url": f"{site.boot_url}/api/v1/nodes/{spec.mac}/events",
            "hosts_url": f"{site.boot_url}/hosts",
            "hooks_url": f"{site.boot_url}/hooks.tar.gz",
            "install_token": node.install_token,
            "ca_pem": self.ca_pem,
            "secure_events_url": f"{site.service_url}/api/v1/nodes/{spec.mac}/events",
            # where packages come from: this service's mirror when it is on (README, "Mirror")
            "install_url": served_url(site, site.install_tree),
            "repos": [{"name": r.name, "baseurl": served_url(site, r.baseurl)} for r in site.repos],
            "mirror_url": mirror_base(site) if site.mirror.enabled else None,
            "mirror_repos": self.mirror_repos(),
        }

    def mirror_repos(self) -> list[dict]:
        """The installed system's dnf repos when the mirror is on ([] when off): the install
        tree and os.repos at the service. The first-boot steps install from them long before
        compute1's NAT exists, and the release packages' own repo files name the internet."""
        site = self.site
        if not site.mirror.enabled:
            return []
        out = [{"id": "install-tree", "name": f"{site.os_name} {site.os_version} install tree (mirror)",
                "baseurl": served_url(site, site.install_tree)}]
        for r in site.repos:
            if r.baseurl != site.install_tree:
                out.append({"id": r.name, "name": f"{r.name} (mirror)", "baseurl": served_url(site, r.baseurl)})
        return out

    def network_lines(self, node: Node) -> list[dict]:
        """Report 5.4.1 per interface: static on the install network, DHCP on a public NIC, the rest off.

        Devices are matched by MAC alone. Their names (nic0, nic1 for the report's eth0, eth1)
        come from ifname=<name>:<mac> on the kernel command line (pxe.py, `ifnames`): dracut
        renames the NICs with it and Anaconda writes it to the installed system as systemd .link
        files (pyanaconda/modules/network/installation.py). --interfacename is not written:
        Anaconda reads it only together with --vlanid (get_device_name_from_network_data in
        pyanaconda/modules/network/nm_client.py).
        """
        site, spec = self.site, node.spec
        is_gateway = site.gateway == spec.ip
        has_public = any(n.mode == "dhcp" for n in spec.nics)
        install = {
            "device": spec.mac, "name": machine_ifname(spec.interface), "bootproto": "static", "ip": spec.ip,
            "netmask": str(site.network.netmask),
            # the gateway itself routes out through its public NIC; everyone else through it
            "gateway": None if is_gateway or site.gateway is None else site.gateway,
            "nodefroute": has_public,
            "nameservers": list(site.nameservers),
            "hostname": f"{spec.hostname}.{site.domain}",
            "onboot": True,
            "activate": True,
        }
        lines = [install]
        for nic in spec.nics:
            # a public NIC is up in the installer too: with --nodefroute on the install NIC, its
            # DHCP lease holds the only default route the installer has
            lines.append({"device": nic.mac, "name": machine_ifname(nic.name), "bootproto": nic.mode,
                          "onboot": nic.mode != "off", "activate": nic.mode == "dhcp"})
        return lines

    def ifnames(self, node: Node) -> list[tuple[str, str]]:
        """(name, mac) of every NIC the site knows for the node, for ifname= on the kernel command
        line: a NIC left out would keep the kernel's ethN, which may be the name another one is
        renamed to."""
        return [(line["name"], line["device"]) for line in self.network_lines(node)]

    def _storage_context(self, layout_name: str, firmware: str | None = None) -> dict:
        layout = storage.for_firmware(self.site.layouts[layout_name], firmware)
        plan = storage.plan(layout)
        return {
            "layout": layout,
            "plan": plan,
            "disk": layout.disk,
            "firmware": firmware,
            "required_bytes": storage.required_bytes(layout),
            "sfdisk": storage.sfdisk_script(layout),
            "pesize_kib": storage.EXTENT_MIB * 1024,
        }

    def hosts_file(self, entries: list[tuple[str, str, tuple[str, ...]]]) -> str:
        """/etc/hosts for the whole cluster (the report's config/hosts and 03-copy-hosts), from
        (ip, hostname, aliases) entries."""
        lines = ["127.0.0.1   localhost localhost.localdomain localhost4 localhost4.localdomain4",
                 "::1         localhost localhost.localdomain localhost6 localhost6.localdomain6",
                 f"# cluster {self.site.name}, from the provisioner's registry"]
        for ip, hostname, aliases in sorted(entries, key=lambda e: ipaddress.IPv4Address(e[0])):
            names = [f"{hostname}.{self.site.domain}", hostname, *aliases]
            lines.append(f"{ip:<11} {' '.join(names)}")
        return "\n".join(lines) + "\n"
