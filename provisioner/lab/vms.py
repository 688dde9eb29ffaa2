"""The libvirt lab: the registry's nodes as virtual machines on one host, booting through the
same DHCP -> TFTP -> HTTP -> kickstart path as the hardware.

What it builds, all named `pv-*` so `down` finds exactly what `up` made:
  - an isolated network for the install network, with a DHCP host entry per registered NIC and
    `<bootp file=lpxelinux.0 server=...>` pointing at the service (the host's address on that
    network), and for UEFI clients the signed shim, passed to libvirt's dnsmasq as an option
    (`<bootp>` takes one file for every client);
  - an isolated stand-in for the public network, for the gateway's public NIC;
  - a directory storage pool, and per node a sparse qcow2 disk of the node's `disk_bytes` (the
    report's 80 GB and 250 GB disks) on SATA, so it is `sda` as in Tables 1 and 2;
  - per node a domain with the registry's MACs, network boot first (the registry, not the boot
    order, decides install or local boot), and its serial console appended to a log file (kept
    across power cycles: a BMC's cycle starts a new QEMU, which would otherwise truncate it). A node
    whose firmware is uefi boots OVMF (with Microsoft's keys enrolled, Secure Boot on and SMM, for
    the nodes `lab up --secure-boot-node` names, or every UEFI node with `--secure-boot`) on q35
    with a virtio NIC: OVMF drives virtio itself, and Secure Boot would
    refuse QEMU's unsigned iPXE option ROMs.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse
from xml.sax.saxutils import escape, quoteattr

from provisioner.config import Site
from provisioner.boot.dhcp import BIOS_LOADER, EFI_LOADER
from provisioner.lab.bmc import Machine
from provisioner.registry.db import Node

PREFIX = "pv-"
INSTALL_NET = "pv-install"
PUBLIC_NET = "pv-public"
POOL = "pv-lab"
PUBLIC_CIDR = ipaddress.IPv4Network("198.51.100.0/24")   # documentation range: the lab's "internet"
BOOT_FILE = BIOS_LOADER
OVMF_DIR = "/usr/share/OVMF"
# (code, variable store template): plain UEFI, and Secure Boot with Microsoft's keys enrolled
OVMF = {False: ("OVMF_CODE_4M.fd", "OVMF_VARS_4M.fd"), True: ("OVMF_CODE_4M.ms.fd", "OVMF_VARS_4M.ms.fd")}
DNSMASQ_NS = "http://libvirt.org/schemas/network/dnsmasq/1.0"


class LabError(RuntimeError):
    pass


@dataclass(frozen=True)
class LabSettings:
    work_dir: Path                       # pool and console logs
    memory_mib: int = 1024
    vcpus: int = 1
    emulator: str | None = None          # None: libvirt's default for the domain type
    domain_type: str = "qemu"            # TCG; "kvm" where the host has it
    secure_boot: bool = False            # every UEFI node boots with Secure Boot enforced
    # these nodes (hostnames) boot with Secure Boot whatever the flag above says: one lab can
    # hold plain UEFI and Secure Boot machines side by side
    secure_boot_nodes: frozenset[str] = frozenset()

    def secure(self, node: Node) -> bool:
        return self.secure_boot and node.spec.firmware == "uefi" or node.hostname in self.secure_boot_nodes

    def uefi(self, node: Node) -> bool:
        # a node picked for Secure Boot whose firmware is still to be learned boots UEFI, and the
        # service learns it from the loader that asks
        return node.spec.firmware == "uefi" or node.hostname in self.secure_boot_nodes

    @property
    def pool_dir(self) -> Path:
        return self.work_dir / "pool"

    def console_log(self, hostname: str) -> Path:
        return self.work_dir / "consoles" / f"{hostname}.log"


def service_address(site: Site) -> str:
    """The host's address on the install network: where the service listens in the lab."""
    host = urlparse(site.service_url).hostname
    if ipaddress.IPv4Address(host) not in site.network:
        raise LabError(f"service.url {site.service_url} is not on the install network {site.network}: "
                       "the lab's VMs could not reach it")
    return host


def host_xml(node: Node) -> str:
    return f"<host mac={quoteattr(node.mac)} name={quoteattr(node.hostname)} ip={quoteattr(node.spec.ip)}/>"


def install_network_xml(site: Site, nodes: list[Node], pool: tuple[str, str] | None = None) -> str:
    """nodes: the DHCP reservations; pool: addresses lent to machines with none (the site's
    discovery.dhcp_pool, for machines the service does not know yet)."""
    server = service_address(site)
    hosts = "\n".join(f"      {host_xml(n)}" for n in sorted(nodes, key=lambda n: ipaddress.IPv4Address(n.spec.ip)))
    if pool is not None:
        hosts = f"      <range start={quoteattr(pool[0])} end={quoteattr(pool[1])}/>\n{hosts}"
    # libvirt's <bootp> becomes an untagged dhcp-boot; dnsmasq prefers a tagged one that matches
    options = [
        "dhcp-match=set:efi-x86_64,option:client-arch,7",
        "dhcp-match=set:efi-x86_64,option:client-arch,9",
        f"dhcp-boot=tag:efi-x86_64,{EFI_LOADER},,{server}",
    ]
    raw = "\n".join(f"    <dnsmasq:option value={quoteattr(o)}/>" for o in options)
    return f"""<network xmlns:dnsmasq='{DNSMASQ_NS}'>
  <name>{INSTALL_NET}</name>
  <bridge name='pvbr-install' stp='off' delay='0'/>
  <ip address={quoteattr(server)} netmask={quoteattr(str(site.network.netmask))}>
    <dhcp>
{hosts}
      <bootp file={quoteattr(BOOT_FILE)} server={quoteattr(server)}/>
    </dhcp>
  </ip>
  <dnsmasq:options>
{raw}
  </dnsmasq:options>
</network>
"""


def public_network_xml() -> str:
    hosts = list(PUBLIC_CIDR.hosts())
    return f"""<network>
  <name>{PUBLIC_NET}</name>
  <bridge name='pvbr-public' stp='off' delay='0'/>
  <ip address='{hosts[0]}' netmask='{PUBLIC_CIDR.netmask}'>
    <dhcp>
      <range start='{hosts[99]}' end='{hosts[199]}'/>
    </dhcp>
  </ip>
</network>
"""


def pool_xml(settings: LabSettings) -> str:
    return f"""<pool type='dir'>
  <name>{POOL}</name>
  <target><path>{escape(str(settings.pool_dir))}</path></target>
</pool>
"""


def volume_name(node: Node) -> str:
    return f"{PREFIX}{node.hostname}.qcow2"


def volume_xml(node: Node) -> str:
    if not node.spec.disk_bytes:
        raise LabError(f"{node.hostname} has no disk_bytes: the lab cannot size its disk")
    return f"""<volume>
  <name>{volume_name(node)}</name>
  <capacity unit='bytes'>{node.spec.disk_bytes}</capacity>
  <allocation unit='bytes'>0</allocation>
  <target><format type='qcow2'/></target>
</volume>
"""


def domain_xml(node: Node, settings: LabSettings, disk_path: str) -> str:
    uefi = settings.uefi(node)
    secure_boot = settings.secure(node)
    if secure_boot and node.spec.firmware == "bios":
        raise LabError(f"{node.hostname} is registered with bios firmware: it cannot boot with Secure Boot "
                       "(nodes change --firmware uefi, or leave it out of --secure-boot-node)")
    model = "<model type='virtio'/>\n      <rom enabled='no'/>" if uefi else "<model type='e1000'/>"
    nics = [f"""    <interface type='network'>
      <source network='{INSTALL_NET}'/>
      <mac address={quoteattr(node.mac)}/>
      {model}
      <boot order='1'/>
    </interface>"""]
    for nic in node.spec.nics:
        if nic.mode == "dhcp":      # the gateway's public side
            nics.append(f"""    <interface type='network'>
      <source network='{PUBLIC_NET}'/>
      <mac address={quoteattr(nic.mac)}/>
      <model type='e1000'/>
    </interface>""")
    log = escape(str(settings.console_log(node.hostname)))
    emulator = f"\n    <emulator>{escape(settings.emulator)}</emulator>" if settings.emulator else ""
    machine, loader, features = "pc", "", ""
    if uefi:
        code, template = OVMF[secure_boot]
        secure = "yes" if secure_boot else "no"
        nvram = escape(str(settings.pool_dir / f"{PREFIX}{node.hostname}_VARS.fd"))
        machine = "q35"
        loader = (f"\n    <loader readonly='yes' secure='{secure}' type='pflash'>{OVMF_DIR}/{code}</loader>"
                  f"\n    <nvram template='{OVMF_DIR}/{template}'>{nvram}</nvram>")
        # the Secure Boot firmware keeps its variables out of the OS's reach only with SMM
        features = "<smm state='on'/>" if secure_boot else ""
    return f"""<domain type={quoteattr(settings.domain_type)}>
  <name>{PREFIX}{escape(node.hostname)}</name>
  <description>provisioner lab: {escape(node.hostname)} ({escape(", ".join(node.spec.roles))})</description>
  <memory unit='MiB'>{settings.memory_mib}</memory>
  <vcpu>{settings.vcpus}</vcpu>
  <os>
    <type arch='x86_64' machine='{machine}'>hvm</type>{loader}
  </os>
  <features><acpi/><apic/>{features}</features>
  <on_reboot>restart</on_reboot>
  <devices>{emulator}
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file={quoteattr(disk_path)}/>
      <target dev='sda' bus='sata'/>
      <boot order='2'/>
    </disk>
{chr(10).join(nics)}
    <serial type='file'>
      <source path='{log}' append='on'/>
      <target port='0'/>
    </serial>
    <console type='file'>
      <source path='{log}' append='on'/>
      <target type='serial' port='0'/>
    </console>
  </devices>
</domain>
"""


class Lab:
    """up / down / status against a libvirt connection (qemu:///system, or test:///default)."""

    def __init__(self, conn, site: Site, settings: LabSettings):
        import libvirt
        # lookups that find nothing are expected here; libvirt would print each one to stderr
        libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
        self.conn = conn
        self.site = site
        self.settings = settings

    def up(self, nodes: list[Node], start: bool = True, progress=lambda line: None, *, reserve: bool = True,
           pool: tuple[str, str] | None = None) -> None:
        """reserve: the install network's DHCP reserves each node's address (without, machines
        get an address from `pool` until `reserve` is called for them)."""
        self.settings.pool_dir.mkdir(parents=True, exist_ok=True)
        (self.settings.work_dir / "consoles").mkdir(parents=True, exist_ok=True)
        install = install_network_xml(self.site, nodes if reserve else [], pool)
        for name, xml in ((INSTALL_NET, install), (PUBLIC_NET, public_network_xml())):
            net = self._lookup(self.conn.networkLookupByName, name)
            if net is None:
                net = self.conn.networkDefineXML(xml)
                progress(f"defined network {name}")
            if not net.isActive():
                net.create()
        pool = self._lookup(self.conn.storagePoolLookupByName, POOL)
        if pool is None:
            pool = self.conn.storagePoolDefineXML(pool_xml(self.settings), 0)
            progress(f"defined storage pool {POOL}")
        if not pool.isActive():
            pool.create(0)
        for node in nodes:
            vol = self._lookup(pool.storageVolLookupByName, volume_name(node))
            if vol is None:
                vol = pool.createXML(volume_xml(node), 0)
                progress(f"created disk {volume_name(node)} ({node.spec.disk_bytes} bytes, sparse)")
            dom = self._lookup(self.conn.lookupByName, f"{PREFIX}{node.hostname}")
            if dom is None:
                dom = self.conn.defineXML(domain_xml(node, self.settings, vol.path()))
                progress(f"defined {PREFIX}{node.hostname}")
        if start:
            self.start(nodes, progress)

    def start(self, nodes: list[Node], progress=lambda line: None) -> None:
        for node in nodes:
            dom = self.conn.lookupByName(f"{PREFIX}{node.hostname}")
            if not dom.isActive():
                dom.create()
                progress(f"started {PREFIX}{node.hostname}")

    def machines(self, nodes: list[Node]) -> list[Machine]:
        """The nodes' domains as their BMCs know them (defined by `up`)."""
        out = []
        for node in nodes:
            dom = self.conn.lookupByName(f"{PREFIX}{node.hostname}")
            out.append(Machine(node.hostname, dom.name(), dom.UUIDString()))
        return out

    def reserve(self, nodes: list[Node], progress=lambda line: None) -> None:
        """Add DHCP reservations to the running install network (and its definition): what an
        operator does for machines enrolled after they were discovered on a pool address."""
        import libvirt
        net = self.conn.networkLookupByName(INSTALL_NET)
        have = net.XMLDesc(0)
        for node in nodes:
            if f"mac='{node.mac}'" in have or f'mac="{node.mac}"' in have:
                continue
            both = libvirt.VIR_NETWORK_UPDATE_AFFECT_LIVE | libvirt.VIR_NETWORK_UPDATE_AFFECT_CONFIG
            net.update(libvirt.VIR_NETWORK_UPDATE_COMMAND_ADD_LAST, libvirt.VIR_NETWORK_SECTION_IP_DHCP_HOST, -1,
                       host_xml(node), both)
            progress(f"reserved {node.spec.ip} for {node.hostname} ({node.mac}) on {INSTALL_NET}")

    def down(self, progress=lambda line: None) -> None:
        for dom in self.conn.listAllDomains():
            if dom.name().startswith(PREFIX):
                if dom.isActive():
                    dom.destroy()
                if "<nvram" in dom.XMLDesc(0):
                    import libvirt
                    # a UEFI domain's variable store goes with it (plain undefine refuses one)
                    dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)
                else:
                    dom.undefine()
                progress(f"removed {dom.name()}")
        pool = self._lookup(self.conn.storagePoolLookupByName, POOL)
        if pool is not None:
            if not pool.isActive():
                pool.create(0)
            for vol in pool.listAllVolumes():
                if vol.name().startswith(PREFIX):
                    vol.delete(0)
                    progress(f"deleted disk {vol.name()}")
            pool.destroy()
            pool.undefine()
        for name in (INSTALL_NET, PUBLIC_NET):
            net = self._lookup(self.conn.networkLookupByName, name)
            if net is not None:
                if net.isActive():
                    net.destroy()
                net.undefine()
                progress(f"removed network {name}")

    def status(self) -> dict[str, str]:
        out = {}
        for dom in self.conn.listAllDomains():
            if dom.name().startswith(PREFIX):
                out[dom.name()[len(PREFIX):]] = "running" if dom.isActive() else "shut off"
        return out

    @staticmethod
    def _lookup(fn, name):
        import libvirt
        try:
            return fn(name)
        except libvirt.libvirtError:
            return None
