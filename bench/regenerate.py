"""Benchmark: `provisioner regenerate` for N registered nodes (default 10,000).

Builds a site like the report's testbed on a /16 (no traffic is sent anywhere: the addresses
only appear in kickstarts), registers N nodes, then times two runs of the real command in a
child process: the first writes every kickstart, the second finds nothing changed.
Reports wall seconds and the child's peak RSS.

    python3 bench/regenerate.py [--nodes 10000]
"""

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import bench_site, register_nodes  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=10_000)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-regenerate-"))
    site_path = bench_site(work)
    state = work / "state"
    start = time.monotonic()
    count = len(register_nodes(state, site_path, args.nodes - 5))
    print(f"registered {count} nodes in {time.monotonic() - start:.1f}s", file=sys.stderr)

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
