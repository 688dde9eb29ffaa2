"""The request loop's latency with CPU-bound Python threads beside it in the process (in a storm:
the kickstart renderer, the callbacks' pool, the transfer loop between sendfile calls), at
Python's default switch interval (5 ms) and at the boot server's (BootServer.switch_interval).
A client in a process of its own fetches an 8.5 KiB answer 300 times, 5 ms apart.

    python3 bench/gil_latency.py 0.005; python3 bench/gil_latency.py 0.0005
"""
import json
import subprocess
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from provisioner.boot.bootsrv import BootServer  # noqa: E402
from provisioner.boot.node_http import Reply  # noqa: E402

CLIENT = """
import socket, time, json, sys
req = b"GET /ks/x HTTP/1.1\\r\\nHost: a\\r\\nConnection: close\\r\\n\\r\\n"
times = []
for _ in range(300):
    t0 = time.perf_counter()
    with socket.create_connection(("127.0.0.1", int(sys.argv[1]))) as s:
        s.sendall(req)
        while s.recv(65536):
            pass
    times.append((time.perf_counter() - t0) * 1000)
    time.sleep(0.005)
print(json.dumps(times))
"""


def main() -> None:
    BootServer.switch_interval = float(sys.argv[1])
    sys.setswitchinterval(0.005)
    body = b"x" * 8500
    server = BootServer(lambda *a, **k: Reply(200, body), "127.0.0.1", 0).start()
    stop = threading.Event()

    def burn():     # pure Python, as rendering and the pool's JSON and logging are
        while not stop.is_set():
            sum(i * i for i in range(2000))
    for _ in range(2):
        threading.Thread(target=burn, daemon=True).start()
    out = subprocess.run([sys.executable, "-c", CLIENT, str(server.port)], capture_output=True, text=True).stdout
    stop.set()
    server.stop()
    times = sorted(json.loads(out))
    print(f"switch interval {sys.getswitchinterval() * 1000:.1f} ms: p50 {times[150]:.2f} ms "
          f"p90 {times[270]:.2f} ms p99 {times[297]:.2f} ms")


if __name__ == "__main__":
    main()
