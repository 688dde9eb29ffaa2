"""Kickstart latency probe: one GET /ks/<mac> every 20 ms on a fresh connection, from its own
process, until stopped (SIGTERM); prints the latencies in ms as JSON.

Run beside the storm client, it measures the server's answer time during the storm without
the storm client's own event-loop lag in it.
"""

import json
import signal
import socket
import sys
import time

port, mac = int(sys.argv[1]), sys.argv[2]
times = []
running = True


def stop(*_):
    global running
    running = False


signal.signal(signal.SIGTERM, stop)
request = f"GET /ks/{mac} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()
while running:
    t0 = time.perf_counter()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
            s.sendall(request)
            status = b""
            while chunk := s.recv(65536):
                status = status or chunk[:12]
        if b" 200" in status:
            times.append((time.perf_counter() - t0) * 1000)
    except OSError:
        pass
    time.sleep(0.02)
print(json.dumps(times))
