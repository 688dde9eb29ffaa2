"""site.yaml: load it, validate it, and name the bad key when it is wrong.

The embedded default (provisioner/site.yaml) is the report's five-node testbed.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from urllib.parse import urlparse

import yaml

from provisioner.render import storage
from provisioner.macaddr import InvalidMAC, canonical_mac
from provisioner.power.bmc import Bmc, InvalidBmc, parse_bmc

DEFAULT_SITE = "embedded:site.yaml"
_HOSTNAME = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")
_DOMAIN_LABEL = _HOSTNAME
_IFNAME = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,14}")
# dracut renames a NIC with ifname=<name>:<mac> and warns against the kernel's own ethN names:
# on a host with two NICs the rename races the kernel's naming of the other one.
_KERNEL_IFNAME = re.compile(r"eth(?P<n>[0-9]+)")
MACHINE_IFNAME_PREFIX = "nic"
_SSH_KEY = re.compile(r"(?P<type>ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(?:256|384|521)|"
                      r"sk-ssh-ed25519@openssh\.com|sk-ecdsa-sha2-nistp256@openssh\.com) "
                      r"(?P<blob>[A-Za-z0-9+/]+={0,2})(?: (?P<comment>[\x20-\x7e]*))?")
_ROLE = re.compile(r"[a-z][a-z0-9_-]{0,31}")
_PACKAGE = re.compile(r"[@^A-Za-z0-9][A-Za-z0-9_.+:^@/-]*")
_TIMEZONE = re.compile(r"[A-Za-z0-9_+-]+(/[A-Za-z0-9_+-]+)*")
NIC_MODES = ("dhcp", "off")


class ConfigError(ValueError):
    """site.yaml is wrong; the message starts with the path of the bad key."""


@dataclass(frozen=True)
class Repo:
    name: str
    baseurl: str


@dataclass(frozen=True)
class Mirror:
    """A local copy of the install tree and os.repos, served by the boot server (README, "Mirror")."""
    enabled: bool = False
    concurrency: int = 4        # downloads at once from the upstream


@dataclass(frozen=True)
class Slot:
    """A name and address a discovery rule hands to the next machine it matches."""
    hostname: str
    ip: str


@dataclass(frozen=True)
class Rule:
    """Enroll discovered machines on their own: the first ones to match take `slots` in order
    (README, "Discovery"). `match` keys: disk_bytes_min/max (the disk the roles' layout installs
    to), cpus_min, memory_bytes_min, virt (true: vmx or svm), vendor, model (exact)."""
    roles: tuple[str, ...]
    slots: tuple[Slot, ...]
    match: tuple[tuple[str, object], ...] = ()


@dataclass(frozen=True)
class Discovery:
    """What an unknown MAC that PXE-boots gets: local boot (off), or the inspection ramdisk."""
    enabled: bool = False
    max_nodes: int = 256            # discovered machines held at once; reports beyond are refused
    dhcp_pool: tuple[str, str] | None = None   # addresses full-mode DHCP lends unknown machines
    rules: tuple[Rule, ...] = ()


DISCOVERY_MATCH = {"disk_bytes_min": int, "disk_bytes_max": int, "cpus_min": int, "memory_bytes_min": int,
                   "virt": bool, "vendor": str, "model": str}


@dataclass(frozen=True)
class Role:
    name: str
    layout: str | None
    requires: tuple[str, ...]
    packages: tuple[str, ...]


@dataclass(frozen=True)
class Nic:
    mac: str
    name: str
    mode: str   # dhcp | off

    def __post_init__(self):
        # a registry written before the machine names keeps the report's ethN: read as nicN
        object.__setattr__(self, "name", machine_ifname(self.name))


@dataclass(frozen=True)
class NodeSpec:
    """A node as site.yaml or the API describes it, before the registry adds state."""
    mac: str
    hostname: str
    ip: str
    roles: tuple[str, ...]
    interface: str = "eth0"
    aliases: tuple[str, ...] = ()
    nics: tuple[Nic, ...] = ()
    disk_bytes: int | None = None
    firmware: str | None = None         # bios | uefi; None until set or learned from its boot loader
    bmc: Bmc | None = None              # power control (provisioner/power); its password is sealed at rest

    def __post_init__(self):
        object.__setattr__(self, "interface", machine_ifname(self.interface))


@dataclass(frozen=True)
class Site:
    name: str
    domain: str
    timezone: str
    service_url: str
    network: ipaddress.IPv4Network
    gateway: str | None
    nameservers: tuple[str, ...]
    ntp_servers: tuple[str, ...]
    os_name: str
    os_version: str
    os_arch: str
    install_tree: str
    repos: tuple[Repo, ...]
    openstack_release: str
    roles: dict[str, Role]
    packages: tuple[str, ...]
    layouts: dict[str, storage.Layout]
    nodes: tuple[NodeSpec, ...]
    source: str = DEFAULT_SITE
    templates: Path | None = None
    warnings: tuple[str, ...] = field(default=())
    kernel_args: tuple[str, ...] = ()
    boot_url: str = ""
    provider_network: dict = field(default_factory=dict)
    selfservice_cidr: str = ""
    test_image: str = ""
    # security: site options that trade safety for reach (README, "Security")
    open_reads: bool = False                    # listings, events, plans without a token
    kickstart_node_address_only: bool = True    # /ks/<mac> only to that node's own address
    tls_ca: Path | None = None                  # the CA of an operator's API certificate
    ssh_authorized_keys: tuple[str, ...] = ()   # root's SSH keys on every node (sshkey)
    mirror: Mirror = Mirror()
    os_mirror: str = ""                         # os.mirror: the upstream the mirror copies
    discovery: Discovery = Discovery()

    @property
    def distro(self) -> str:
        """The name `provisioner distro import` gives this site's OS tree (centos-stream-9-x86_64)."""
        return distro_name(self.os_name, self.os_version, self.os_arch)

    def layout_for(self, roles: tuple[str, ...] | list[str]) -> storage.Layout:
        """The one storage layout a set of roles asks for."""
        wanted = {self.roles[r].layout for r in roles if r in self.roles and self.roles[r].layout}
        if not wanted:
            raise ConfigError(f"roles {', '.join(roles)} name no storage layout "
                              f"(give the node one of: {', '.join(r.name for r in self.roles.values() if r.layout)})")
        if len(wanted) > 1:
            raise ConfigError(f"roles {', '.join(roles)} ask for different storage layouts "
                              f"({', '.join(sorted(wanted))}); a disk takes one")
        return self.layouts[wanted.pop()]

    def packages_for(self, roles: tuple[str, ...] | list[str]) -> list[str]:
        out = list(self.packages)
        for r in roles:
            for p in self.roles[r].packages:
                if p not in out:
                    out.append(p)
        return out


def distro_name(name: str, version: str, arch: str) -> str:
    slug = re.sub(r"[^a-z0-9_]+", "-", f"{name} {version} {arch}".lower()).strip("-")
    return slug


def _flag(value: object, where: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{where}: must be true or false")
    return value


def load_site(path: str | Path | None = None) -> Site:
    """Load and validate a site file; None or DEFAULT_SITE gives the embedded testbed."""
    if path is None or str(path) == DEFAULT_SITE:
        text = resources.files("provisioner").joinpath("site.yaml").read_text()
        source = DEFAULT_SITE
    else:
        try:
            text = Path(path).read_text()
        except OSError as e:
            raise ConfigError(f"{path}: cannot read ({e.strerror})") from None
        source = str(path)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{source}: not valid YAML: {e}") from None
    return parse_site(data, source)


def parse_site(data: object, source: str = "site.yaml") -> Site:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping")
    allowed = {"name", "domain", "timezone", "service", "network", "ntp_servers", "os", "openstack",
               "roles", "packages", "layouts", "nodes", "templates", "boot", "security",
               "ssh_authorized_keys", "mirror", "discovery"}
    _only_keys(data, allowed, "")
    name = _str(data.get("name", "site"), "name")
    domain = _str(data.get("domain"), "domain").lower()
    if not all(_DOMAIN_LABEL.fullmatch(lbl) for lbl in domain.split(".")):
        raise ConfigError(f"domain: {domain!r} is not a DNS domain")
    tz = _str(data.get("timezone", "UTC"), "timezone")
    if not _TIMEZONE.fullmatch(tz):
        raise ConfigError(f"timezone: {tz!r} is not a time zone name like Europe/Berlin")

    svc = _map(data.get("service"), "service")
    _only_keys(svc, {"url", "boot_url", "tls_ca"}, "service")
    tls_ca = svc.get("tls_ca")
    if tls_ca is not None:
        tls_ca = Path(_str(tls_ca, "service.tls_ca"))
        if source != DEFAULT_SITE and not tls_ca.is_absolute():
            tls_ca = Path(source).parent / tls_ca
    service_url = _url(svc.get("url"), "service.url").rstrip("/")
    if svc.get("boot_url") is not None:
        boot_url = _url(svc.get("boot_url"), "service.boot_url").rstrip("/")
    else:
        # `provisioner serve` puts the boot server one port above the service; it speaks plain
        # HTTP whatever the API speaks (firmware and installers cannot pin a CA)
        u = urlparse(service_url)
        boot_url = f"http://{u.hostname}:{(u.port or (443 if u.scheme == 'https' else 80)) + 1}"

    sec = _map(data.get("security", {}), "security")
    _only_keys(sec, {"open_reads", "kickstart_node_address_only"}, "security")
    open_reads = _flag(sec.get("open_reads", False), "security.open_reads")
    ks_address_only = _flag(sec.get("kickstart_node_address_only", True), "security.kickstart_node_address_only")

    net = _map(data.get("network"), "network")
    _only_keys(net, {"cidr", "gateway", "nameservers"}, "network")
    try:
        network = ipaddress.IPv4Network(_str(net.get("cidr"), "network.cidr"), strict=True)
    except ValueError as e:
        raise ConfigError(f"network.cidr: {e}") from None
    gateway = net.get("gateway")
    if gateway is not None:
        gateway = _ip_in(gateway, network, "network.gateway")
    nameservers = tuple(_ip(x, f"network.nameservers[{i}]")
                        for i, x in enumerate(_list(net.get("nameservers", []), "network.nameservers")))

    ntp = _list(data.get("ntp_servers", []), "ntp_servers")
    ntp_servers = tuple(_hostish(x, f"ntp_servers[{i}]") for i, x in enumerate(ntp))

    ostack = _map(data.get("openstack"), "openstack")
    _only_keys(ostack, {"release", "provider_network", "selfservice_cidr", "test_image"}, "openstack")
    prov = _map(ostack.get("provider_network", {"cidr": "203.0.113.0/24", "gateway": "203.0.113.1",
                                                "pool_start": "203.0.113.101", "pool_end": "203.0.113.250"}),
                "openstack.provider_network")
    _only_keys(prov, {"cidr", "gateway", "pool_start", "pool_end"}, "openstack.provider_network")
    try:
        prov_net = ipaddress.IPv4Network(_str(prov.get("cidr"), "openstack.provider_network.cidr"), strict=True)
        self_net = ipaddress.IPv4Network(_str(ostack.get("selfservice_cidr", "172.16.1.0/24"),
                                              "openstack.selfservice_cidr"), strict=True)
    except ValueError as e:
        raise ConfigError(f"openstack: {e}") from None
    provider = {k: _ip_in(prov.get(k), prov_net, f"openstack.provider_network.{k}")
                for k in ("gateway", "pool_start", "pool_end")}
    provider["cidr"] = str(prov_net)
    test_image = _url(ostack.get("test_image", "http://download.cirros-cloud.net/0.6.2/"
                                 "cirros-0.6.2-x86_64-disk.img"), "openstack.test_image")
    release = _str(ostack.get("release"), "openstack.release")
    if not re.fullmatch(r"[a-z0-9.]+", release):
        raise ConfigError(f"openstack.release: {release!r} is not a release name like epoxy")

    osd = _map(data.get("os"), "os")
    _only_keys(osd, {"name", "version", "arch", "mirror", "install_tree", "repos"}, "os")
    fill = {
        "mirror": _url(osd.get("mirror"), "os.mirror").rstrip("/"),
        "version": str(osd.get("version", "9")),
        "arch": _str(osd.get("arch", "x86_64"), "os.arch"),
        "openstack_release": release,
    }
    install_tree = _url(_fill(_str(osd.get("install_tree"), "os.install_tree"), fill, "os.install_tree"),
                        "os.install_tree")
    repos = []
    for i, r in enumerate(_list(osd.get("repos", []), "os.repos")):
        rw = f"os.repos[{i}]"
        r = _map(r, rw)
        _only_keys(r, {"name", "baseurl"}, rw)
        rname = _str(r.get("name"), f"{rw}.name")
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", rname):
            raise ConfigError(f"{rw}.name: {rname!r} may hold only letters, digits, '.', '_' and '-'")
        repos.append(Repo(rname, _url(_fill(_str(r.get("baseurl"), f"{rw}.baseurl"), fill, f"{rw}.baseurl"),
                                      f"{rw}.baseurl")))
    if len({r.name for r in repos}) != len(repos):
        raise ConfigError("os.repos: a repository name is used twice")

    mirror = _mirror(data.get("mirror", {}))
    _check_sources_resolve(install_tree, repos, nameservers, mirror, fill["mirror"])
    if mirror.enabled:
        _check_resolvable(boot_url, "service.boot_url", nameservers,
                          "the mirror sends installing nodes there")

    boot = _map(data.get("boot", {}), "boot")
    _only_keys(boot, {"kernel_args"}, "boot")
    kernel_args = []
    for i, arg in enumerate(_list(boot.get("kernel_args", []), "boot.kernel_args")):
        if not isinstance(arg, str) or not re.fullmatch(r"[\x21-\x7e]+", arg):
            raise ConfigError(f"boot.kernel_args[{i}]: {arg!r} must be one printable word")
        kernel_args.append(arg)

    layouts = {}
    for lname, ldata in _map(data.get("layouts"), "layouts").items():
        try:
            layouts[lname] = storage.parse_layout(lname, ldata, f"layouts.{lname}")
        except storage.LayoutError as e:
            raise ConfigError(str(e)) from None
    warnings: list[str] = []
    for layout in layouts.values():
        try:
            warnings += storage.plan(layout).warnings
        except storage.LayoutError as e:
            raise ConfigError(f"layouts.{layout.name}: {e}") from None

    roles = {}
    for rname, rdata in _map(data.get("roles"), "roles").items():
        rw = f"roles.{rname}"
        if not _ROLE.fullmatch(str(rname)):
            raise ConfigError(f"{rw}: {rname!r} is not a role name")
        rdata = _map(rdata if rdata is not None else {}, rw)
        _only_keys(rdata, {"layout", "requires", "packages"}, rw)
        layout = rdata.get("layout")
        if layout is not None and layout not in layouts:
            raise ConfigError(f"{rw}.layout: no layout named {layout!r} (have: {', '.join(layouts)})")
        requires = tuple(_str(x, f"{rw}.requires[{i}]")
                         for i, x in enumerate(_list(rdata.get("requires", []), f"{rw}.requires")))
        roles[rname] = Role(rname, layout, requires, _packages(rdata.get("packages", []), f"{rw}.packages"))
    for role in roles.values():
        for i, req in enumerate(role.requires):
            if req not in roles:
                raise ConfigError(f"roles.{role.name}.requires[{i}]: no role named {req!r}")

    ssh_keys = tuple(_ssh_key(k, f"ssh_authorized_keys[{i}]")
                     for i, k in enumerate(_list(data.get("ssh_authorized_keys", []), "ssh_authorized_keys")))

    templates = data.get("templates")
    if templates is not None:
        templates = Path(_str(templates, "templates"))
        if source != DEFAULT_SITE and not templates.is_absolute():
            templates = Path(source).parent / templates

    site = Site(
        name=name, domain=domain, timezone=tz, service_url=service_url, boot_url=boot_url, network=network,
        gateway=gateway, nameservers=nameservers, ntp_servers=ntp_servers,
        os_name=_str(osd.get("name", "CentOS Stream"), "os.name"), os_version=fill["version"],
        os_arch=fill["arch"], install_tree=install_tree, repos=tuple(repos),
        openstack_release=release, roles=roles, packages=_packages(data.get("packages", []), "packages"),
        layouts=layouts, nodes=(), source=source, templates=templates, warnings=tuple(warnings),
        kernel_args=tuple(kernel_args), provider_network=provider, selfservice_cidr=str(self_net),
        test_image=test_image, open_reads=open_reads, kickstart_node_address_only=ks_address_only,
        tls_ca=tls_ca, ssh_authorized_keys=ssh_keys, mirror=mirror, os_mirror=fill["mirror"],
    )
    object.__setattr__(site, "discovery", _discovery(data.get("discovery", {}), site))
    nodes = []
    for i, n in enumerate(_list(data.get("nodes", []), "nodes")):
        nodes.append(parse_node(_bmc_password_file(n, source, f"nodes[{i}]"), site, f"nodes[{i}]"))
    _check_unique(nodes)
    _check_slots(site, nodes)
    object.__setattr__(site, "nodes", tuple(nodes))
    return site


def _discovery(value: object, site: Site) -> Discovery:
    d = _map(value if value is not None else {}, "discovery")
    _only_keys(d, {"enabled", "max_nodes", "dhcp_pool", "rules"}, "discovery")
    enabled = _flag(d.get("enabled", False), "discovery.enabled")
    cap = d.get("max_nodes", Discovery.max_nodes)
    if isinstance(cap, bool) or not isinstance(cap, int) or not 1 <= cap <= 100_000:
        raise ConfigError(f"discovery.max_nodes: {cap!r} is not a number of machines from 1 to 100000")
    pool = d.get("dhcp_pool")
    if pool is not None:
        p = _map(pool, "discovery.dhcp_pool")
        _only_keys(p, {"start", "end"}, "discovery.dhcp_pool")
        start = _ip_in(p.get("start"), site.network, "discovery.dhcp_pool.start")
        end = _ip_in(p.get("end"), site.network, "discovery.dhcp_pool.end")
        if ipaddress.IPv4Address(start) > ipaddress.IPv4Address(end):
            raise ConfigError(f"discovery.dhcp_pool: start {start} is after end {end}")
        pool = (start, end)
    elif enabled:
        # full-mode DHCP lends unknown machines nothing (dhcp.py): a default pool at the top of
        # the network, below its last address (often the service or a router)
        net = site.network
        count = min(32, max(1, (net.num_addresses - 2) // 4))
        end_ip = net.broadcast_address - 2 if net.prefixlen < 31 else net.broadcast_address
        pool = (str(end_ip - (count - 1)), str(end_ip))
    if pool is not None:
        service = urlparse(site.service_url).hostname
        for what, ip in (("network.gateway", site.gateway), ("the service's address", service)):
            if ip and _is_ip(ip) and _in_pool(ip, pool):
                raise ConfigError(f"discovery.dhcp_pool: {pool[0]}-{pool[1]} holds {what} {ip}"
                                  + ("" if d.get("dhcp_pool") else " (the default pool: set discovery.dhcp_pool)"))
    rules = []
    for i, r in enumerate(_list(d.get("rules", []), "discovery.rules")):
        rw = f"discovery.rules[{i}]"
        r = _map(r, rw)
        _only_keys(r, {"match", "roles", "nodes"}, rw)
        roles = validate_roles(r.get("roles"), site, f"{rw}.roles")
        match = _map(r.get("match", {}), f"{rw}.match")
        _only_keys(match, set(DISCOVERY_MATCH), f"{rw}.match")
        for key, kind in DISCOVERY_MATCH.items():
            if key in match:
                v = match[key]
                if kind is int and (isinstance(v, bool) or not isinstance(v, int) or v < 0):
                    raise ConfigError(f"{rw}.match.{key}: {v!r} is not a whole number")
                if kind is bool and not isinstance(v, bool):
                    raise ConfigError(f"{rw}.match.{key}: must be true or false")
                if kind is str:
                    _str(v, f"{rw}.match.{key}")
        slots = []
        for j, s in enumerate(_list(r.get("nodes"), f"{rw}.nodes")):
            sw = f"{rw}.nodes[{j}]"
            s = _map(s, sw)
            _only_keys(s, {"hostname", "ip"}, sw)
            slots.append(Slot(_hostname(s.get("hostname"), f"{sw}.hostname"), _ip_in(s.get("ip"), site.network, f"{sw}.ip")))
        if not slots:
            raise ConfigError(f"{rw}.nodes: a rule needs at least one {{hostname, ip}} to hand out")
        rules.append(Rule(roles, tuple(slots), tuple(sorted(match.items()))))
    return Discovery(enabled, cap, pool, tuple(rules))


def _is_ip(text: str) -> bool:
    try:
        ipaddress.IPv4Address(text)
        return True
    except ValueError:
        return False


def _in_pool(ip: str, pool: tuple[str, str] | None) -> bool:
    if pool is None:
        return False
    a = ipaddress.IPv4Address(ip)
    return ipaddress.IPv4Address(pool[0]) <= a <= ipaddress.IPv4Address(pool[1])


def _check_slots(site: Site, nodes: list[NodeSpec]) -> None:
    """A rule's names and addresses are for machines not yet known: none may be a site node's,
    another rule's, or inside the pool DHCP lends discovered machines."""
    taken = {n.hostname: n.hostname for n in nodes} | {a: n.hostname for n in nodes for a in n.aliases}
    ips = {n.ip: n.hostname for n in nodes}
    for i, rule in enumerate(site.discovery.rules):
        for j, slot in enumerate(rule.slots):
            sw = f"discovery.rules[{i}].nodes[{j}]"
            if slot.hostname in taken:
                raise ConfigError(f"{sw}.hostname: {slot.hostname} is already used by {taken[slot.hostname]}")
            if slot.ip in ips:
                raise ConfigError(f"{sw}.ip: {slot.ip} is already used by {ips[slot.ip]}")
            if _in_pool(slot.ip, site.discovery.dhcp_pool):
                raise ConfigError(f"{sw}.ip: {slot.ip} is inside discovery.dhcp_pool")
            taken[slot.hostname], ips[slot.ip] = f"{sw}", f"{sw}"


def _mirror(value: object) -> Mirror:
    m = _map(value if value is not None else {}, "mirror")
    _only_keys(m, {"enabled", "concurrency"}, "mirror")
    concurrency = m.get("concurrency", Mirror.concurrency)
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or not 1 <= concurrency <= 32:
        raise ConfigError(f"mirror.concurrency: {concurrency!r} is not a number of downloads from 1 to 32")
    return Mirror(_flag(m.get("enabled", False), "mirror.enabled"), concurrency)


def _check_sources_resolve(install_tree: str, repos: list[Repo], nameservers: tuple[str, ...],
                           mirror: Mirror, upstream: str) -> None:
    """Installing nodes fetch the install tree and repos themselves: a host name there needs a
    resolver they are told about. With the mirror on they fetch from this service instead, and
    the mirror copies everything from os.mirror, so each source must lie under it."""
    sources = [("os.install_tree", install_tree)] + [(f"os.repos[{i}].baseurl", r.baseurl)
                                                     for i, r in enumerate(repos)]
    for where, url in sources:
        if mirror.enabled:
            if not url.startswith(upstream.rstrip("/") + "/"):
                raise ConfigError(f"{where}: {url} is not under os.mirror {upstream}; the mirror "
                                  "copies one upstream, keeping its layout")
        else:
            _check_resolvable(url, where, nameservers, "installing nodes fetch from it",
                              "or turn the mirror on (mirror: {enabled: true}) to serve it from this service")


def _check_resolvable(url: str, where: str, nameservers: tuple[str, ...], why: str, fix: str = "") -> None:
    host = urlparse(url).hostname or ""
    try:
        ipaddress.ip_address(host)
        return
    except ValueError:
        pass
    if not nameservers:
        raise ConfigError(f"{where}: {url} names the host {host}, which {why}, but network.nameservers "
                          f"is empty: nodes cannot resolve it (set network.nameservers{', ' + fix if fix else ''})")


def _bmc_password_file(node: object, source: str, where: str) -> object:
    """A site file's node may name its BMC password's file (bmc.password_file, relative to the
    site file) rather than hold the password: the site file is often in version control."""
    if not isinstance(node, dict) or not isinstance(node.get("bmc"), dict) or "password_file" not in node["bmc"]:
        return node
    bmc = dict(node["bmc"])
    if "password" in bmc:
        raise ConfigError(f"{where}.bmc: give password or password_file, not both")
    name = _str(bmc.pop("password_file"), f"{where}.bmc.password_file")
    path = Path(name) if source.startswith("embedded:") else Path(source).parent / name
    try:
        bmc["password"] = path.read_text().rstrip("\n")
    except OSError as e:
        raise ConfigError(f"{where}.bmc.password_file: cannot read {path} ({e.strerror})") from None
    return {**node, "bmc": bmc}


def parse_node(data: object, site: Site, where: str = "node") -> NodeSpec:
    """Validate one node description (from site.yaml or an API body) against the site."""
    d = _map(data, where)
    _only_keys(d, {"mac", "hostname", "ip", "roles", "interface", "aliases", "nics", "disk_bytes", "firmware",
                   "bmc"}, where)
    mac = _mac(d.get("mac"), f"{where}.mac")
    hostname = _hostname(d.get("hostname"), f"{where}.hostname")
    aliases = tuple(_hostname(a, f"{where}.aliases[{i}]")
                    for i, a in enumerate(_list(d.get("aliases", []), f"{where}.aliases")))
    if hostname in aliases or len(set(aliases)) != len(aliases):
        raise ConfigError(f"{where}.aliases: a name is given twice")
    ip = _ip_in(d.get("ip"), site.network, f"{where}.ip")
    if _in_pool(ip, site.discovery.dhcp_pool):
        raise ConfigError(f"{where}.ip: {ip} is inside discovery.dhcp_pool, which DHCP lends to "
                          "machines it does not know")
    roles = validate_roles(d.get("roles"), site, f"{where}.roles")
    if site.gateway == ip and "gateway" in site.roles and "gateway" not in roles:
        raise ConfigError(f"{where}.ip: {ip} is the network's gateway; only a node with role gateway may have it")
    interface = _ifname(d.get("interface", "eth0"), f"{where}.interface")
    nics = []
    for i, nd in enumerate(_list(d.get("nics", []), f"{where}.nics")):
        nw = f"{where}.nics[{i}]"
        nd = _map(nd, nw)
        _only_keys(nd, {"mac", "name", "mode"}, nw)
        mode = nd.get("mode", "off")
        if mode not in NIC_MODES:
            raise ConfigError(f"{nw}.mode: {mode!r} is not one of {', '.join(NIC_MODES)}")
        nics.append(Nic(_mac(nd.get("mac"), f"{nw}.mac"), _ifname(nd.get("name"), f"{nw}.name"), mode))
    macs = [mac] + [n.mac for n in nics]
    if len(set(macs)) != len(macs):
        raise ConfigError(f"{where}.nics: MAC address {next(m for m in macs if macs.count(m) > 1)} is given twice")
    names = [interface] + [n.name for n in nics]
    if len(set(names)) != len(names):
        raise ConfigError(f"{where}.nics: interface name {next(n for n in names if names.count(n) > 1)} is given twice")
    disk = d.get("disk_bytes")
    if disk is not None and (isinstance(disk, bool) or not isinstance(disk, int) or disk <= 0):
        raise ConfigError(f"{where}.disk_bytes: {disk!r} is not a positive number of bytes")
    if disk is not None and disk >= 1 << 63:        # the registry's INTEGER is 64-bit signed
        raise ConfigError(f"{where}.disk_bytes: {disk} is more than any disk (2^63 bytes)")
    firmware = d.get("firmware")
    if firmware is not None and firmware not in storage.FIRMWARES:
        raise ConfigError(f"{where}.firmware: {firmware!r} is not one of {', '.join(storage.FIRMWARES)}")
    layout = _layout(site, roles, f"{where}.roles")
    try:
        storage.check_fit(layout, disk, firmware)
    except storage.LayoutError as e:
        raise ConfigError(f"{where}.disk_bytes: {e}") from None
    try:
        bmc = parse_bmc(d.get("bmc"), f"{where}.bmc")
    except InvalidBmc as e:
        raise ConfigError(str(e)) from None
    return NodeSpec(mac, hostname, ip, roles, interface, aliases, tuple(nics), disk, firmware, bmc=bmc)


def validate_roles(value: object, site: Site, where: str) -> tuple[str, ...]:
    roles = _list(value, where)
    if not roles:
        raise ConfigError(f"{where}: a node needs at least one role ({', '.join(site.roles)})")
    out: list[str] = []
    for i, r in enumerate(roles):
        if r not in site.roles:
            raise ConfigError(f"{where}[{i}]: unknown role {r!r} (known: {', '.join(site.roles)})")
        if r in out:
            raise ConfigError(f"{where}[{i}]: role {r!r} is given twice")
        out.append(r)
    for r in out:
        for req in site.roles[r].requires:
            if req not in out:
                raise ConfigError(f"{where}: role {r!r} requires role {req!r}")
    _layout(site, tuple(out), where)
    return tuple(out)


def _layout(site: Site, roles: tuple[str, ...], where: str) -> storage.Layout:
    try:
        return site.layout_for(roles)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None


def _check_unique(nodes: list[NodeSpec]) -> None:
    seen: dict[str, str] = {}
    for i, n in enumerate(nodes):
        keys = [("MAC", m) for m in [n.mac] + [x.mac for x in n.nics]]
        keys += [("hostname", h) for h in (n.hostname,) + n.aliases]
        keys += [("IP", n.ip)]
        for kind, value in keys:
            k = f"{kind}:{value}"
            if k in seen:
                raise ConfigError(f"nodes[{i}]: {kind} {value} is already used by {seen[k]}")
            seen[k] = n.hostname


def _fill(template: str, values: dict, where: str) -> str:
    try:
        return template.format(**values)
    except (KeyError, IndexError, ValueError) as e:
        raise ConfigError(f"{where}: unknown placeholder {e} (use {{mirror}}, {{version}}, {{arch}}, "
                          "{openstack_release})") from None


def _only_keys(d: dict, allowed: set[str], where: str) -> None:
    extra = sorted(str(k) for k in set(d) - allowed)
    if extra:
        prefix = f"{where}." if where else ""
        raise ConfigError(f"{prefix}{extra[0]}: unknown key (expected one of {', '.join(sorted(allowed))})")


def _map(value: object, where: str) -> dict:
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: must be a mapping, not {_kind(value)}")
    return value


def _list(value: object, where: str) -> list:
    if not isinstance(value, list):
        raise ConfigError(f"{where}: must be a list, not {_kind(value)}")
    return value


def _str(value: object, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where}: must be a non-empty string, not {_kind(value)}")
    return value.strip()


def _kind(value: object) -> str:
    return "nothing" if value is None else type(value).__name__


def _url(value: object, where: str) -> str:
    url = _str(value, where)
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc or any(c.isspace() for c in url):
        raise ConfigError(f"{where}: {url!r} is not an http(s) URL")
    return url


def _mac(value: object, where: str) -> str:
    try:
        return canonical_mac(value)
    except InvalidMAC as e:
        raise ConfigError(f"{where}: {e}") from None


def _hostname(value: object, where: str) -> str:
    if not isinstance(value, str) or not _HOSTNAME.fullmatch(value.lower()) or value.isdigit():
        raise ConfigError(f"{where}: {value!r} is not a host name (RFC 1123: letters, digits and "
                          "inner hyphens, 1-63 characters)")
    return value.lower()


def _hostish(value: object, where: str) -> str:
    text = _str(value, where)
    try:
        ipaddress.ip_address(text)
        return text
    except ValueError:
        pass
    labels = text.lower().rstrip(".").split(".")
    if not all(_DOMAIN_LABEL.fullmatch(lbl) for lbl in labels):
        raise ConfigError(f"{where}: {text!r} is neither an IP address nor a host name")
    return text.lower()


def _ip(value: object, where: str) -> str:
    try:
        return str(ipaddress.IPv4Address(_str(value, where)))
    except ValueError:
        raise ConfigError(f"{where}: {value!r} is not an IPv4 address") from None


def _ip_in(value: object, network: ipaddress.IPv4Network, where: str) -> str:
    ip = ipaddress.IPv4Address(_ip(value, where))
    if ip not in network:
        raise ConfigError(f"{where}: {ip} is not inside the install network {network}")
    if network.prefixlen < 31 and ip in (network.network_address, network.broadcast_address):
        raise ConfigError(f"{where}: {ip} is the network's {'network' if ip == network.network_address else 'broadcast'} address")
    return str(ip)


def _ifname(value: object, where: str) -> str:
    if not isinstance(value, str) or not _IFNAME.fullmatch(value):
        raise ConfigError(f"{where}: {value!r} is not an interface name like nic0")
    return machine_ifname(value)


def machine_ifname(name: str) -> str:
    """The name a NIC gets on the machine: the report's ethN becomes nicN (README, "Kickstarts").

    Everything the node is told (ifname= on the kernel command line, the kickstart, the role
    steps' NODE_INTERFACE and PUBLIC_INTERFACE) reads the name from here, so they agree."""
    m = _KERNEL_IFNAME.fullmatch(name)
    return f"{MACHINE_IFNAME_PREFIX}{m.group('n')}" if m else name


def _ssh_key(value: object, where: str) -> str:
    """One public key as authorized_keys holds it (type, base64 blob, optional comment), whose
    blob names the same type: a pasted private key, a fingerprint or a truncated line is refused."""
    import base64
    import binascii
    if not isinstance(value, str):
        raise ConfigError(f"{where}: must be a public key line like 'ssh-ed25519 AAAA... user@host'")
    key = value.strip()
    m = _SSH_KEY.fullmatch(key)
    # the line is rendered inside double quotes in the kickstart
    if not m or '"' in key or "\\" in key:
        raise ConfigError(f"{where}: {key[:40]!r}... is not an OpenSSH public key line "
                          "('ssh-ed25519 AAAA... comment'; no options, no quotes)")
    try:
        blob = base64.b64decode(m.group("blob"), validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(f"{where}: the key's base64 part does not decode") from None
    kind = m.group("type").encode()
    if blob[:4] != len(kind).to_bytes(4, "big") or blob[4:4 + len(kind)] != kind:
        raise ConfigError(f"{where}: the key's data is not a {m.group('type')} key (truncated or mixed up?)")
    return key


def _packages(value: object, where: str) -> tuple[str, ...]:
    out = []
    for i, p in enumerate(_list(value, where)):
        if not isinstance(p, str) or not _PACKAGE.fullmatch(p):
            raise ConfigError(f"{where}[{i}]: {p!r} is not a package or group name")
        out.append(p)
    return tuple(out)
