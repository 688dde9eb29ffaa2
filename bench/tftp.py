"""TFTP alone: N clients each fetch the two pxelinux loaders and a small config at once, as the
storm's machines do, from our TftpServer (in a process of its own, nothing else in it) and from
in.tftpd (tftp-hpa). Prints each server's CPU seconds and CPU per DATA packet: the figure to
compare a change to tftp.py by, as it hardly moves with the machine's other load.

    python3 bench/tftp.py --clients 1000 [--runs 3] [--only ours]
The loaders are random bytes of lpxelinux.0's and ldlinux.c32's sizes (the content does not
change the work); everything listens on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import cpu_seconds, free_port  # noqa: E402
from bench.storm import tftp_get  # noqa: E402

FILES = {"lpxelinux.0": 75072, "ldlinux.c32": 119524, "pxelinux.cfg/01-52-54-00-00-00-01": 700}
BLKSIZE = 1408

# our server, alone in its process, serving a directory (the per-source cap raised: every
# client shares 127.0.0.1, as in the storm)
SERVER = """
import sys, time
from pathlib import Path
from provisioner.boot.tftp import TftpServer, Resolved, safe_static_path
root = Path(sys.argv[1])
def resolve(name, peer):
    path = safe_static_path(root, name)
    return Resolved(path=path) if path else Resolved()
s = TftpServer(resolve, "127.0.0.1", int(sys.argv[2]), max_per_source=int(sys.argv[3]))
s.serve_forever()
"""


def packets(n: int) -> int:
    return n * sum(size // BLKSIZE + 1 for size in FILES.values())


async def clients(port: int, n: int) -> tuple[float, list[str]]:
    loop = asyncio.get_running_loop()
    failures: list[str] = []

    async def one():
        try:
            for name in FILES:
                await tftp_get(loop, port, name)
        except Exception as e:
            failures.append(str(e))
    t0 = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(n)))
    return time.perf_counter() - t0, failures


def _user(pid: int) -> float:
    """User CPU of one process (the rest of its CPU is the kernel's: the sockets)."""
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[11]) / os.sysconf("SC_CLK_TCK")


def measure(name: str, argv: list[str], port: int, n: int) -> None:
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)})
    try:
        time.sleep(1.0)
        cpu0, user0 = cpu_seconds(proc.pid), _user(proc.pid)
        wall, failures = asyncio.run(clients(port, n))
        cpu, user = cpu_seconds(proc.pid) - cpu0, _user(proc.pid) - user0
    finally:
        proc.terminate()
        proc.wait()
    print(f"{name:<9} clients {n}  wall {wall:6.2f}s  server CPU {cpu:6.2f}s  "
          f"(user {user:5.2f}s)  {cpu / packets(n) * 1e6:5.1f} us/packet  failures {len(failures)}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--only", choices=("ours", "tftp-hpa"))
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-tftp-"))
    root = work / "tftp"        # not the 0700 temp dir itself: in.tftpd chroots there and drops root
    try:
        for name, size in FILES.items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_bytes(os.urandom(size))
        for _ in range(args.runs):
            if args.only != "tftp-hpa":
                port = free_port(2)
                measure("ours", [sys.executable, "-c", SERVER, str(root), str(port), str(2 * args.clients + 16)],
                        port, args.clients)
            if args.only != "ours" and shutil.which("in.tftpd"):
                port = free_port(2)
                measure("tftp-hpa", ["in.tftpd", "-L", "-a", f"127.0.0.1:{port}", "-s", str(root)], port,
                        args.clients)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
