"""The roles lab's networks, all inside network namespaces made here and removed by `delete`.

  lab namespace   pvr-<id>: two bridges, nothing else, and no route anywhere
                    br-install  the install network; the service's address (192.168.0.254)
                    br-public   the stand-in public network; the "upstream" router's address
  node namespace  pvr-<id>-<hostname>: the NICs one container sees, veths whose other ends
                  are on the bridges; systemd-nspawn is handed it with --network-namespace-path

The nodes' addresses are set from outside, before boot, as the installer would have left them
(static on the install network; the gateway's public NIC gets a fixed address where a real one
would get a DHCP lease), so the containers need no network configuration of their own.
"""

from __future__ import annotations

import ctypes
import ipaddress
import os
import signal
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

# documentation range, as site.yaml's provider network; .1 answers as the upstream router
PUBLIC_CIDR = ipaddress.IPv4Network("203.0.113.0/24")
UPSTREAM = "203.0.113.1"
# below the provider network's floating-IP pool (site.yaml: .101-.250)
PUBLIC_HOSTS = range(2, 100)
INSTALL_BRIDGE = "br-install"
PUBLIC_BRIDGE = "br-public"


class NetworkError(RuntimeError):
    pass


@dataclass(frozen=True)
class NicPlan:
    name: str                      # the interface name inside the container
    mac: str
    bridge: str | None             # None: an unused NIC (mode off), not plugged in anywhere
    address: str | None = None     # CIDR


@dataclass(frozen=True)
class NodePlan:
    hostname: str
    nics: tuple[NicPlan, ...]
    default_via: str | None
    nameservers: tuple[str, ...] = field(default=())


def plan_node(spec, network: ipaddress.IPv4Network, gateway: str | None, public_hosts) -> NodePlan:
    """A node's NICs from its registry entry, routed as the kickstart routes them.

    public_hosts: an iterator of free addresses on the public network, shared by all nodes."""
    nics = [NicPlan(spec.interface, spec.mac, INSTALL_BRIDGE, f"{spec.ip}/{network.prefixlen}")]
    default_via = None if gateway in (None, spec.ip) else gateway
    for nic in spec.nics:
        if nic.mode == "dhcp":
            host = next(public_hosts)
            nics.append(NicPlan(nic.name, nic.mac, PUBLIC_BRIDGE, f"{host}/{PUBLIC_CIDR.prefixlen}"))
            default_via = UPSTREAM
        else:
            nics.append(NicPlan(nic.name, nic.mac, None))
    return NodePlan(spec.hostname, tuple(nics), default_via)


def ip(*args: str, ns: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    cmd = ["ip"] + (["-n", ns] if ns else []) + list(args)
    r = subprocess.run(cmd, capture_output=True, text=True)
    if check and r.returncode != 0:
        raise NetworkError(f"{' '.join(cmd)}: {r.stderr.strip()}")
    return r


def namespaces() -> set[str]:
    out = ip("netns", "list").stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


class LabNetwork:
    def __init__(self, lab_id: str, service_cidr: str):
        self.name = f"pvr-{lab_id}"
        self.service_cidr = service_cidr        # e.g. 192.168.0.254/24

    def node_ns(self, hostname: str) -> str:
        return f"{self.name}-{hostname}"

    def ns_path(self, ns: str) -> str:
        return f"/run/netns/{ns}"

    def owned(self) -> list[str]:
        """Our namespaces that exist now, the nodes' first (their veths go with them)."""
        mine = [n for n in namespaces() if n == self.name or n.startswith(self.name + "-")]
        return sorted(mine, key=lambda n: n == self.name)

    def create(self) -> None:
        ip("netns", "add", self.name)
        ip("link", "set", "lo", "up", ns=self.name)
        self._bridge(INSTALL_BRIDGE, self.service_cidr)
        self._bridge(PUBLIC_BRIDGE, f"{UPSTREAM}/{PUBLIC_CIDR.prefixlen}")

    def _bridge(self, name: str, address: str) -> None:
        ip("link", "add", name, "type", "bridge", "stp_state", "0", "forward_delay", "0", ns=self.name)
        ip("addr", "add", address, "dev", name, ns=self.name)
        ip("link", "set", name, "up", ns=self.name)

    def add_node(self, index: int, plan: NodePlan) -> str:
        """Make the node's namespace with its NICs plugged in and addressed; returns its name."""
        ns = self.node_ns(plan.hostname)
        ip("netns", "add", ns)
        ip("link", "set", "lo", "up", ns=ns)
        for k, nic in enumerate(plan.nics):
            outside = f"vn{index}n{k}"       # unique in the lab namespace, within IFNAMSIZ
            ip("link", "add", outside, "type", "veth", "peer", "name", nic.name, "netns", ns, ns=self.name)
            if nic.bridge:
                ip("link", "set", outside, "master", nic.bridge, ns=self.name)
            ip("link", "set", outside, "up", ns=self.name)
            ip("link", "set", nic.name, "address", nic.mac, ns=ns)
            if nic.address:
                ip("addr", "add", nic.address, "dev", nic.name, ns=ns)
                ip("link", "set", nic.name, "up", ns=ns)
        if plan.default_via:
            ip("route", "add", "default", "via", plan.default_via, ns=ns)
        return ns

    def delete(self) -> list[str]:
        """Remove every namespace of this lab (and with them every veth and bridge)."""
        gone = []
        for ns in self.owned():
            # a namespace outlives `ip netns del` while a process is still in it
            for pid in ip("netns", "pids", ns, check=False).stdout.split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            ip("netns", "del", ns, check=False)
            gone.append(ns)
        return gone

    def exec_argv(self, argv: list[str]) -> list[str]:
        """argv run inside the lab namespace, where the service's address lives."""
        return ["ip", "netns", "exec", self.name, *argv]


def public_addresses():
    return (PUBLIC_CIDR.network_address + i for i in PUBLIC_HOSTS)


CLONE_NEWNET = 0x40000000


class NamespaceThread:
    """One thread of this process inside a network namespace (setns is per thread): the sockets
    it opens live there, so this process can talk to the lab's service without a route to it
    from the host. Everything handed to `call` runs on that thread."""

    def __init__(self, ns: str):
        self._pool = ThreadPoolExecutor(1, thread_name_prefix=f"netns-{ns}", initializer=_enter, initargs=(ns,))

    def call(self, fn, *args, **kwargs):
        return self._pool.submit(fn, *args, **kwargs).result()

    def close(self) -> None:
        self._pool.shutdown(wait=True)


def _enter(ns: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/run/netns/{ns}", os.O_RDONLY | os.O_CLOEXEC)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns into {ns}: {os.strerror(err)}")
    finally:
        os.close(fd)
