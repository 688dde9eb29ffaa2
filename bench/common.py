"""Shared set-up for the benchmarks: a site on a /16 with N registered nodes.

No traffic goes anywhere from this: the addresses only appear inside kickstarts and configs.
Servers the benchmarks start listen on 127.0.0.1 only.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import time
from importlib import resources
from pathlib import Path

import yaml

from provisioner.config import load_site, parse_node
from provisioner.registry.db import Registry

NETWORK = ipaddress.IPv4Network("172.16.0.0/16")


def bench_site(work: Path, service_url: str = "http://127.0.0.1:8080", boot_url: str | None = None) -> Path:
    data = yaml.safe_load(resources.files("provisioner").joinpath("site.yaml").read_text())
    data["network"] = {"cidr": str(NETWORK), "gateway": "172.16.0.1", "nameservers": []}
    data["service"] = {"url": service_url, **({"boot_url": boot_url} if boot_url else {})}
    # every simulated machine fetches its kickstart from loopback, not from its own address
    data["security"] = {**data.get("security", {}), "kickstart_node_address_only": False}
    for n in data["nodes"]:
        n["ip"] = n["ip"].replace("192.168.0.", "172.16.0.")
    path = work / "site.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def node_mac(i: int) -> str:
    return f"52:54:01:{i >> 16 & 255:02x}:{i >> 8 & 255:02x}:{i & 255:02x}"


def node_body(i: int) -> dict:
    return {"mac": node_mac(i), "hostname": f"node{i}", "ip": str(NETWORK.network_address + 256 + i),
            "roles": ["controller"] if i % 50 == 0 else ["compute"], "interface": "eth1"}


def register_nodes(state: Path, site_path: Path, count: int) -> list[str]:
    """Register `count` nodes beyond the site's own; return every MAC in the registry."""
    site = load_site(site_path)
    registry = Registry.in_state_dir(state)
    registry.sync_site(site)
    for i in range(count):
        registry.add(parse_node(node_body(i), site))
    macs = [n.mac for n in registry.list()]
    registry.close()
    return macs


def free_port(kind=socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_tcp(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


def process_tree(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            children = Path(f"/proc/{p}/task/{p}/children").read_text().split()
        except OSError:
            children = []
        todo += [int(c) for c in children]
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process tree, reaped children included."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for p in process_tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(x) for x in fields[11:15])   # utime stime cutime cstime
    return total / tick


def peak_rss_mib(pid: int) -> float:
    """Sum of each live process's high-water RSS in the tree."""
    total = 0
    for p in process_tree(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024
