"""Test hosts in network namespaces this test suite creates (and always removes).

Lab and PXE traffic in the tests stays inside these namespaces: a bridge with the service's
address (192.168.0.254/24 by default), and taps or veths for the clients.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from contextlib import contextmanager


def can_make_namespaces() -> bool:
    return os.geteuid() == 0 and shutil.which("ip") is not None and os.path.exists("/dev/net/tun")


def sh(*args: str, ns: str | None = None, check: bool = True, **kw) -> subprocess.CompletedProcess:
    cmd = (["ip", "netns", "exec", ns] if ns else []) + list(args)
    return subprocess.run(cmd, check=check, capture_output=True, text=True, **kw)


class Namespace:
    def __init__(self, prefix: str = "pv"):
        self.name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        sh("ip", "netns", "add", self.name)
        self.run("ip", "link", "set", "lo", "up")

    def run(self, *args: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
        return sh(*args, ns=self.name, check=check, **kw)

    def popen(self, args: list[str], **kw) -> subprocess.Popen:
        return subprocess.Popen(["ip", "netns", "exec", self.name, *args], **kw)

    def bridge(self, name: str = "br0", address: str = "192.168.0.254/24") -> str:
        self.run("ip", "link", "add", name, "type", "bridge")
        self.run("ip", "addr", "add", address, "dev", name)
        self.run("ip", "link", "set", name, "up")
        return name

    def tap(self, name: str, bridge: str) -> str:
        self.run("ip", "tuntap", "add", "dev", name, "mode", "tap")
        self.run("ip", "link", "set", name, "master", bridge)
        self.run("ip", "link", "set", name, "up")
        return name

    def veth_to(self, other: "Namespace", bridge: str, mac: str, name: str = "eth0") -> str:
        """A veth pair: one end on our bridge, the other in `other` as `name` with `mac`."""
        here = f"v{uuid.uuid4().hex[:8]}"
        self.run("ip", "link", "add", here, "type", "veth", "peer", "name", name, "netns", other.name)
        self.run("ip", "link", "set", here, "master", bridge)
        self.run("ip", "link", "set", here, "up")
        other.run("ip", "link", "set", name, "address", mac)
        other.run("ip", "link", "set", name, "up")
        return name

    def delete(self) -> None:
        # kill whatever still runs inside, then remove the namespace
        pids = sh("ip", "netns", "pids", self.name, check=False).stdout.split()
        for pid in pids:
            try:
                os.kill(int(pid), 9)
            except (ProcessLookupError, ValueError):
                pass
        sh("ip", "netns", "del", self.name, check=False)


@contextmanager
def namespaces(count: int = 1):
    made = []
    try:
        for _ in range(count):
            made.append(Namespace())
        yield made
    finally:
        for ns in made:
            ns.delete()
