"""Benchmark: `provisioner regenerate` for N registered nodes (default 10,000).

Builds a site like the report's testbed on a /16 (no traffic is sent anywhere: the addresses
only appear in kickstarts), registers N nodes, then times two runs of the real command in a
child process: the first writes every kickstart, the second finds nothing changed.
Reports wall seconds and the child's peak RSS.

    python3 bench/regenerate.py [--nodes 10000]
"""

import argparse
import ipaddress
import resource
import subprocess
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path

import yaml

from provisioner.config import load_site, parse_node
from provisioner.registry import Registry


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=10_000)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-regenerate-"))
    data = yaml.safe_load(resources.files("provisioner").joinpath("site.yaml").read_text())
    data["network"] = {"cidr": "172.16.0.0/16", "gateway": "172.16.0.1", "nameservers": []}
    for n in data["nodes"]:
        n["ip"] = n["ip"].replace("192.168.0.", "172.16.0.")
    site_path = work / "site.yaml"
    site_path.write_text(yaml.safe_dump(data))
    site = load_site(site_path)

    state = work / "state"
    registry = Registry.in_state_dir(state)
    registry.sync_site(site)
    net = ipaddress.IPv4Network("172.16.0.0/16")
    start = time.monotonic()
    for i in range(len(site.nodes), args.nodes):
        ip = net.network_address + 256 + i
        roles = ["controller"] if i % 50 == 0 else ["compute"]
        registry.add(parse_node({"mac": f"52:54:01:{i >> 16 & 255:02x}:{i >> 8 & 255:02x}:{i & 255:02x}",
                                 "hostname": f"node{i}", "ip": str(ip), "roles": roles,
                                 "interface": "eth1"}, site))
    print(f"registered {registry.count()} nodes in {time.monotonic() - start:.1f}s", file=sys.stderr)
    registry.close()

    out = work / "ks"
    cmd = [sys.executable, "-m", "provisioner", "--state-dir", str(state), "--site", str(site_path),
           "regenerate", "--out", str(out)]
    for label in ("first run (writes all)", "second run (no change)"):
        t0 = time.monotonic()
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        wall = time.monotonic() - t0
        print(f"{label}: {wall:.2f}s wall, {after.ru_utime - before.ru_utime:.2f}s user CPU, "
              f"peak RSS {after.ru_maxrss / 1024:.0f} MiB; {proc.stdout.strip().splitlines()[-1]}")
    size = sum(p.stat().st_size for p in out.glob("*.ks"))
    print(f"{len(list(out.glob('*.ks')))} kickstarts, {size / 2**20:.0f} MiB, in {out}")


if __name__ == "__main__":
    main()
