"""Registration throughput: POST /api/v1/nodes from C concurrent clients against `provisioner serve`.

    python3 bench/register.py [--nodes 2000] [--clients 16]
"""

import argparse
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import bench_site, cpu_seconds, free_port, node_body, peak_rss_mib, wait_tcp  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=2000)
    ap.add_argument("--clients", type=int, default=16)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-register-"))
    port = free_port()
    site = bench_site(work, f"http://127.0.0.1:{port}")
    state = work / "state"
    proc = subprocess.Popen([sys.executable, "-m", "provisioner", "--state-dir", str(state), "--site", str(site),
                             "serve", "--http", f"127.0.0.1:{port}", "--no-tftp", "--no-boot"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_tcp(port)
        token = subprocess.run([sys.executable, "-m", "provisioner", "--state-dir", str(state), "token"],
                               capture_output=True, text=True, check=True).stdout.strip()
        for _ in range(10):
            requests.get(f"http://127.0.0.1:{port}/api/v1/nodes?role=gateway", timeout=10)
        todo = list(range(args.nodes))
        lock = threading.Lock()
        latencies, errors = [], []

        def client():
            s = requests.Session()
            s.headers["Authorization"] = f"Bearer {token}"
            while True:
                with lock:
                    if not todo:
                        return
                    i = todo.pop()
                t0 = time.perf_counter()
                r = s.post(f"http://127.0.0.1:{port}/api/v1/nodes", json=node_body(i), timeout=30)
                latencies.append(time.perf_counter() - t0)
                if r.status_code != 201:
                    errors.append(r.text)

        cpu0 = cpu_seconds(proc.pid)
        t0 = time.perf_counter()
        threads = [threading.Thread(target=client) for _ in range(args.clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
        latencies.sort()
        print(f"{args.nodes} registrations from {args.clients} clients: {wall:.2f}s, "
              f"{args.nodes / wall:.0f}/s, p50 {latencies[len(latencies) // 2] * 1000:.1f}ms, "
              f"p99 {latencies[int(len(latencies) * 0.99)] * 1000:.1f}ms, errors {len(errors)}, "
              f"server CPU {cpu_seconds(proc.pid) - cpu0:.2f}s, peak RSS {peak_rss_mib(proc.pid):.0f} MiB")
    finally:
        proc.terminate()
        proc.wait()


if __name__ == "__main__":
    main()
