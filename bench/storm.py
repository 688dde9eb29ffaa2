"""Boot storm: N machines PXE-booting at once, against this service and against tftp-hpa + nginx.

Each simulated machine does what firmware, lpxelinux and Anaconda do, in order:
  TFTP lpxelinux.0 and ldlinux.c32 (tsize + blksize 1408, lockstep, as pxelinux negotiates),
  TFTP pxelinux.cfg/01-<mac>, HTTP GET kernel and initrd, HTTP GET /ks/<mac>, and the %pre and
  %post callbacks (POST .../events with the node's install token).
The reference stack serves the same bytes: in.tftpd (tftp-hpa) with the per-MAC configs
pre-rendered to files, and nginx with the kernel, initrd and kickstarts as files (callbacks
answered by `return 200`). Everything listens on 127.0.0.1.

    python3 bench/storm.py --nodes 100 --nodes 1000
Needs Debian's nginx and tftpd-hpa (apt-get install nginx tftpd-hpa).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (bench_site, cpu_seconds, free_port, peak_rss_mib,  # noqa: E402
                          register_nodes, wait_tcp)

LOADERS = ("lpxelinux.0", "ldlinux.c32")
TFTP_OPTS = {"tsize": "0", "blksize": "1408"}
RETRIES = 5
TIMEOUT = 2.0


# -- the client ---------------------------------------------------------------------------------

class TftpGet(asyncio.DatagramProtocol):
    """One lockstep TFTP read, resending its last packet on timeout like firmware does."""

    def __init__(self, loop, name: str):
        self.done = loop.create_future()
        self.name = name
        self.size = 0
        self.expected = 1
        self.blksize = 512
        self.last = None
        self.peer = None
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport

    def send(self, data, addr):
        self.last = (data, addr)
        self.transport.sendto(data, addr)

    def datagram_received(self, data, addr):
        if self.done.done() or len(data) < 4:
            return
        op = (data[0] << 8) | data[1]
        if op == 6:                                 # OACK
            fields = data[2:].split(b"\0")
            opts = {fields[i].decode().lower(): fields[i + 1].decode() for i in range(0, len(fields) - 1, 2)}
            self.blksize = int(opts.get("blksize", 512))
            self.peer = addr
            self.send(b"\x00\x04\x00\x00", addr)
        elif op == 3:
            block = (data[2] << 8) | data[3]
            self.peer = addr
            if block == self.expected % 65536:
                self.size += len(data) - 4
                self.expected += 1
                self.send(b"\x00\x04" + data[2:4], addr)
                if len(data) - 4 < self.blksize:
                    self.done.set_result(self.size)
            else:
                self.transport.sendto(b"\x00\x04" + struct.pack("!H", (self.expected - 1) % 65536), addr)
        elif op == 5:
            self.done.set_exception(RuntimeError(f"TFTP error {data[2:4].hex()} for {self.name}"))

    def error_received(self, exc):
        pass


async def tftp_get(loop, port: int, name: str) -> int:
    req = b"\x00\x01" + name.encode() + b"\0octet\0" + b"".join(
        k.encode() + b"\0" + v.encode() + b"\0" for k, v in TFTP_OPTS.items())
    transport, proto = await loop.create_datagram_endpoint(lambda: TftpGet(loop, name),
                                                           local_addr=("127.0.0.1", 0))
    try:
        proto.send(req, ("127.0.0.1", port))
        for _ in range(RETRIES):
            try:
                return await asyncio.wait_for(asyncio.shield(proto.done), TIMEOUT)
            except asyncio.TimeoutError:
                if proto.last:
                    transport.sendto(*proto.last)
        raise RuntimeError(f"TFTP timeout for {name}")
    finally:
        transport.close()


_PIPE = None
_DEVNULL = None


async def _discard(loop, sock, count: int) -> int:
    """Drop `count` body bytes with splice(2): socket -> pipe -> /dev/null, never copied into
    Python, so the client is cheap next to the servers it measures."""
    global _PIPE, _DEVNULL
    if _PIPE is None:
        import fcntl
        _PIPE = os.pipe()
        fcntl.fcntl(_PIPE[1], 1031, 1 << 20)        # F_SETPIPE_SZ
        _DEVNULL = os.open("/dev/null", os.O_WRONLY)
    flags = os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK
    done = 0
    fd = sock.fileno()
    while done < count:
        try:
            n = os.splice(fd, _PIPE[1], min(count - done, 1 << 20), flags=flags)
        except BlockingIOError:
            ready = loop.create_future()
            loop.add_reader(fd, ready.set_result, None)
            try:
                await ready
            finally:
                loop.remove_reader(fd)
            continue
        if n == 0:
            break
        done += n
        while n:        # empty the pipe before yielding: it is shared by every transfer
            n -= os.splice(_PIPE[0], _DEVNULL, n, flags=os.SPLICE_F_MOVE)
    return done


async def http(port: int, method: str, path: str, body: bytes = b"", headers: dict | None = None) -> tuple[int, bytes]:
    """One request on a fresh connection, as loaders and installers make them. A large body is
    received into one reused buffer and dropped, so the client costs little next to the server."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        await loop.sock_connect(sock, ("127.0.0.1", port))
        head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        for k, v in (headers or {}).items():
            head += f"{k}: {v}\r\n"
        if body:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        await loop.sock_sendall(sock, head.encode() + b"\r\n" + body)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = await loop.sock_recv(sock, 65536)
            if not chunk:
                raise RuntimeError(f"{path}: connection closed before the headers")
            data += chunk
        header, _, rest = data.partition(b"\r\n\r\n")
        lines = header.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        length = None
        for line in lines[1:]:
            k, _, v = line.partition(":")
            if k.lower() == "content-length":
                length = int(v)
        kept, got = rest, len(rest)
        if length is not None and length > 1 << 20:
            got += await _discard(loop, sock, length - got)
            kept = b""
        # a buffer per request: a shared one would be overwritten while this coroutine waits
        view = memoryview(bytearray(65536))
        while length is None or got < length:
            n = await loop.sock_recv_into(sock, view)
            if n == 0:
                break
            if got < 1 << 20:
                kept += bytes(view[:n])
            got += n
        if length is not None and got != length:
            raise RuntimeError(f"{path}: short body {got}/{length}")
        return status, kept
    finally:
        sock.close()


SERVE_ARGS: list[str] = []   # extra `provisioner serve` options to try (--serve-arg)
ONLY = None   # "tftp" or "http": measure one half alone (for finding where time goes)
STACK = "both"


async def boot_one(loop, stack: dict, mac: str, token: str | None, ks_times: list) -> None:
    if ONLY != "http":
        for name in LOADERS:
            await tftp_get(loop, stack["tftp"], name)
        await tftp_get(loop, stack["tftp"], f"pxelinux.cfg/01-{mac.replace(':', '-')}")
    if ONLY == "tftp":
        return
    for path in stack["kernel"], stack["initrd"]:
        status, _ = await http(stack["files"], "GET", path)
        if status != 200:
            raise RuntimeError(f"{path}: HTTP {status}")
    t0 = time.perf_counter()
    status, ks = await http(stack["ks"], "GET", f"/ks/{mac}")
    ks_times.append(time.perf_counter() - t0)
    if status != 200:
        raise RuntimeError(f"/ks/{mac}: HTTP {status}")
    events_port = stack["events"]
    if token is None:   # ours: the token and the callback URL are in the kickstart, as Anaconda has them
        token = ks.split(b"PROVISIONER_TOKEN='", 1)[1].split(b"'", 1)[0].decode()
        events_url = ks.split(b"PROVISIONER_EVENTS='", 1)[1].split(b"'", 1)[0].decode()
        events_port = urlsplit(events_url).port
    for kind in ("installing", "installed"):
        status, _ = await http(events_port, "POST", f"/api/v1/nodes/{mac}/events",
                               json.dumps({"type": kind, "detail": "storm"}).encode(),
                               {"Authorization": f"Bearer {token}"})
        if status != 200:
            raise RuntimeError(f"{kind} callback: HTTP {status}")


async def storm(stack: dict, macs: list[str]) -> dict:
    loop = asyncio.get_running_loop()
    times, failures, ks_times = [], [], []

    async def one(mac):
        t0 = time.perf_counter()
        try:
            await boot_one(loop, stack, mac, stack.get("token"), ks_times)
            times.append(time.perf_counter() - t0)
        except Exception as e:  # a failed boot is counted, not fatal to the storm
            failures.append(f"{mac}: {e}")

    probe = subprocess.Popen([sys.executable, str(Path(__file__).with_name("probe.py")), str(stack["ks"]),
                              stack["probe_mac"]], stdout=subprocess.PIPE, text=True)
    c0 = time.process_time()
    t0 = time.perf_counter()
    await asyncio.gather(*(one(m) for m in macs))
    wall = time.perf_counter() - t0
    client_cpu = time.process_time() - c0
    probe.terminate()
    probe_ms = json.loads(probe.communicate()[0] or "[]")
    return {"wall": wall, "times": times, "failures": failures, "ks_times": ks_times,
            "client_cpu": client_cpu, "probe_ms": probe_ms}


# -- the stacks ---------------------------------------------------------------------------------

def make_tree(work: Path, initrd_mib: int) -> Path:
    import hashlib
    kernel = next(Path("/boot").glob("vmlinuz-*")).read_bytes()
    initrd = os.urandom(initrd_mib << 20)
    tree = work / "tree"
    (tree / "images/pxeboot").mkdir(parents=True)
    (tree / "images/pxeboot/vmlinuz").write_bytes(kernel)
    (tree / "images/pxeboot/initrd.img").write_bytes(initrd)
    (tree / ".treeinfo").write_text(
        "[release]\nname = CentOS Stream\nversion = 9\n[tree]\narch = x86_64\n[images-x86_64]\n"
        "kernel = images/pxeboot/vmlinuz\ninitrd = images/pxeboot/initrd.img\n[checksums]\n"
        f"images/pxeboot/vmlinuz = sha256:{hashlib.sha256(kernel).hexdigest()}\n"
        f"images/pxeboot/initrd.img = sha256:{hashlib.sha256(initrd).hexdigest()}\n")
    return tree


def cli(state: Path, site: Path, *args: str) -> str:
    return subprocess.run([sys.executable, "-m", "provisioner", "--state-dir", str(state), "--site", str(site), *args],
                          capture_output=True, text=True, check=True).stdout


def start_ours(work: Path, n: int, tree: Path) -> tuple[subprocess.Popen, dict, list[str]]:
    http_port, boot_port, tftp_port = free_port(), free_port(), free_port(socket.SOCK_DGRAM)
    site = bench_site(work, f"http://127.0.0.1:{http_port}", f"http://127.0.0.1:{boot_port}")
    state = work / "state"
    every = register_nodes(state, site, n)
    macs, probe_mac = every[:n], every[n]
    cli(state, site, "bootfiles", "import")
    cli(state, site, "distro", "import", "--from", str(tree))
    proc = subprocess.Popen([sys.executable, "-m", "provisioner", "--state-dir", str(state), "--site", str(site),
                             "serve", "--http", f"127.0.0.1:{http_port}", "--tftp", f"127.0.0.1:{tftp_port}",
                             "--boot", f"127.0.0.1:{boot_port}",
                             # every simulated machine shares 127.0.0.1; real ones each have an address
                             # (two each: the next request can come before the last ACK is read)
                             "--tftp-per-source", str(2 * n + 16), *SERVE_ARGS],
                            stdout=subprocess.DEVNULL, stderr=open(work / "service.log", "w"))
    wait_tcp(http_port)
    wait_tcp(boot_port)
    # let every worker finish booting before the clock starts: a few requests reach them all
    for _ in range(20):
        asyncio.run(http(http_port, "GET", "/hosts"))
    # the machines go where their pxelinux config sends them, as real ones do
    status, config = asyncio.run(http(http_port, "GET", f"/pxelinux.cfg/01-{probe_mac.replace(':', '-')}"))
    ks_url = urlsplit(config.split(b"inst.ks=", 1)[1].split()[0].decode())
    time.sleep(1)
    distro = "centos-stream-9-x86_64"
    return proc, {"http": http_port, "files": boot_port, "tftp": tftp_port, "ks": ks_url.port, "events": None,
                  "kernel": f"/boot/{distro}/vmlinuz", "initrd": f"/boot/{distro}/initrd.img",
                  "probe_mac": probe_mac}, macs


def start_reference(work: Path, ours_work: Path, macs: list[str], probe_mac: str, tree: Path) -> tuple[list, dict]:
    """The same bytes, pre-rendered, served by tftp-hpa and nginx."""
    state, site = ours_work / "state", ours_work / "site.yaml"
    troot = work / "tftp"
    (troot / "pxelinux.cfg").mkdir(parents=True)
    for name in LOADERS:
        shutil.copy(state / "bootfiles" / name, troot / name)
    www = work / "www"
    (www / "ks").mkdir(parents=True)
    (www / "boot").mkdir()
    shutil.copy(tree / "images/pxeboot/vmlinuz", www / "boot/vmlinuz")
    shutil.copy(tree / "images/pxeboot/initrd.img", www / "boot/initrd.img")
    # the configs and kickstarts exactly as our service renders them, written to files
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from provisioner.app import open_context
    ctx = open_context(state, site, reload_templates=False)
    boot = ctx.boot
    for mac in macs + [probe_mac]:
        node = ctx.registry.get(mac)
        (troot / "pxelinux.cfg" / f"01-{mac.replace(':', '-')}").write_text(
            boot.render("pxelinux", mac, "bench", "bench").text)
        (www / "ks" / mac).write_text(ctx.renderer.kickstart(node))
    http_port, tftp_port = free_port(), free_port(socket.SOCK_DGRAM)
    conf = work / "nginx.conf"
    user = "user root;" if os.geteuid() == 0 else ""   # the files are in a private temp dir
    conf.write_text(f"""
daemon off;
{user}
master_process on;
worker_processes auto;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    default_type application/octet-stream;
    server {{
        listen 127.0.0.1:{http_port} backlog=4096;
        root {www};
        location /ks/ {{ default_type text/plain; }}
        location /api/ {{ return 200 '{{}}'; }}
    }}
}}
""")
    nginx = subprocess.Popen(["nginx", "-c", str(conf), "-p", str(work)], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    tftpd = subprocess.Popen(["in.tftpd", "-L", "-a", f"127.0.0.1:{tftp_port}", "-s", str(troot)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_tcp(http_port)
    time.sleep(0.3)
    return [tftpd, nginx], {"http": http_port, "files": http_port, "tftp": tftp_port, "ks": http_port,
                            "events": http_port, "kernel": "/boot/vmlinuz",
                            "initrd": "/boot/initrd.img", "token": "reference", "probe_mac": probe_mac}


def summary(name: str, r: dict, cpu: float, rss: float) -> dict:
    times = sorted(r["times"])
    ks = sorted(r["ks_times"])

    def pct(xs, p):
        return xs[min(len(xs) - 1, int(len(xs) * p))] if xs else float("nan")
    probe = sorted(r["probe_ms"])
    return {"stack": name, "wall_s": r["wall"], "p50_s": pct(times, 0.5), "p99_s": pct(times, 0.99),
            "ks_p99_ms": pct(ks, 0.99) * 1000, "probe_p50_ms": pct(probe, 0.5), "probe_p99_ms": pct(probe, 0.99),
            "probes": len(probe), "failures": len(r["failures"]), "server_cpu_s": cpu,
            "server_peak_rss_mib": rss, "client_cpu_s": r["client_cpu"], "first_failures": r["failures"][:3]}


def run(n: int, initrd_mib: int) -> list[dict]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    work = Path(tempfile.mkdtemp(prefix=f"bench-storm-{n}-"))
    tree = make_tree(work, initrd_mib)
    ours_work = work / "ours"
    ours_work.mkdir()
    proc, stack, macs = start_ours(ours_work, n, tree)
    ref_work = work / "reference"
    ref_work.mkdir()
    results = []
    try:
        if STACK != "reference":
            cpu0 = cpu_seconds(proc.pid)
            r = asyncio.run(storm(stack, macs))
            results.append(summary("ours", r, cpu_seconds(proc.pid) - cpu0, peak_rss_mib(proc.pid)))
        else:
            results.append(None)
    finally:
        proc.terminate()
        proc.wait()
    if STACK == "ours":
        if not os.environ.get("BENCH_KEEP"):
            shutil.rmtree(work, ignore_errors=True)
        return results + [None]
    procs, ref = start_reference(ref_work, ours_work, macs, stack["probe_mac"], tree)
    try:
        cpu0 = sum(cpu_seconds(p.pid) for p in procs)
        r = asyncio.run(storm(ref, macs))
        results.append(summary("tftp-hpa+nginx", r, sum(cpu_seconds(p.pid) for p in procs) - cpu0,
                               sum(peak_rss_mib(p.pid) for p in procs)))
    finally:
        for p in procs:
            p.terminate()
            p.wait()
    if not os.environ.get("BENCH_KEEP"):
        shutil.rmtree(work, ignore_errors=True)
    return results


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, action="append", help="storm size (repeat); default 100 and 1000")
    ap.add_argument("--initrd-mib", type=int, default=16, help="size of the synthetic initrd")
    ap.add_argument("--only", choices=("tftp", "http"), help="run one half of each boot alone")
    ap.add_argument("--serve-arg", action="append", default=[], help="pass an option to `provisioner serve`")
    ap.add_argument("--stack", choices=("ours", "reference", "both"), default="both",
                    help="which stack to storm (one alone: for comparing changes back to back)")
    args = ap.parse_args()
    global ONLY, SERVE_ARGS, STACK
    ONLY = args.only
    STACK = args.stack
    SERVE_ARGS = args.serve_arg
    for missing in [t for t in ("nginx", "in.tftpd") if shutil.which(t) is None]:
        sys.exit(f"{missing} not found: apt-get install nginx tftpd-hpa")
    print(f"kernel: {next(Path('/boot').glob('vmlinuz-*'))}, initrd: {args.initrd_mib} MiB random; "
          f"machine: {os.cpu_count()} cores")
    for n in args.nodes or [100, 1000]:
        ours, ref = run(n, args.initrd_mib)
        if ours is None or ref is None:
            for r in (ours, ref):
                if r is not None:
                    print(f"N={n:<5} {r['stack']:<15} wall {r['wall_s']:7.2f}s  probe p50/p99 {r['probe_p50_ms']:5.1f}/"
                          f"{r['probe_p99_ms']:5.1f}ms ({r['probes']})  failures {r['failures']}  "
                          f"server CPU {r['server_cpu_s']:6.2f}s  client CPU {r['client_cpu_s']:6.2f}s", flush=True)
                    for f in r["first_failures"]:
                        print(f"    failure: {f}")
            continue
        for r in (ours, ref):
            print(f"N={n:<5} {r['stack']:<15} wall {r['wall_s']:7.2f}s  per-node p50 {r['p50_s']:6.2f}s "
                  f"p99 {r['p99_s']:6.2f}s  ks p99 {r['ks_p99_ms']:6.1f}ms (in-storm), "
                  f"probe p50/p99 {r['probe_p50_ms']:5.1f}/{r['probe_p99_ms']:5.1f}ms ({r['probes']})  failures {r['failures']}  "
                  f"server CPU {r['server_cpu_s']:6.2f}s  peak RSS {r['server_peak_rss_mib']:6.1f} MiB  "
                  f"client CPU {r['client_cpu_s']:6.2f}s")
            for f in r["first_failures"]:
                print(f"    failure: {f}")
        print(f"N={n:<5} ratio ours/reference: wall {ours['wall_s'] / ref['wall_s']:.2f}x, "
              f"server CPU {ours['server_cpu_s'] / max(ref['server_cpu_s'], 1e-9):.2f}x")


if __name__ == "__main__":
    main()
