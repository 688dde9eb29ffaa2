"""Attacks on a real `python3 -m provisioner serve`, started under RLIMIT_NOFILE 1024 (what
systemd gives a service), with real sockets on loopback. Each is bounded in count and time, and
ends with a legitimate request answered."""

import os
import resource
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

MAC = "52:54:00:0c:00:02"       # compute2 in the embedded site
NOFILE = 1024


def _limit_fds():
    resource.setrlimit(resource.RLIMIT_NOFILE, (NOFILE, NOFILE))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Served:
    def __init__(self, proc, api: int, boot: int | None, log: Path, scheme: str = "http"):
        self.proc, self.api, self.boot, self.log, self.scheme = proc, api, boot, log, scheme

    def kids(self) -> list[int]:
        """Every process under serve, the API's processes included."""
        found, todo = [], [self.proc.pid]
        while todo:
            pid = todo.pop()
            try:
                kids = [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
            except OSError:
                kids = []
            found += kids
            todo += kids
        return found

    def cpu_seconds(self) -> float:
        total = 0
        for pid in [self.proc.pid, *self.kids()]:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += int(fields[11]) + int(fields[12])     # utime, stime
        return total / os.sysconf("SC_CLK_TCK")


def _start(cmd: list[str], log: Path, ready_url: str, **kw) -> subprocess.Popen:
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, preexec_fn=_limit_fds)
    deadline = time.monotonic() + 30
    while True:
        try:
            requests.get(ready_url, timeout=2, **kw)
            return proc
        except requests.ConnectionError:
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)


@pytest.fixture
def serve(state_dir, tmp_path):
    """A function that starts `provisioner serve` with extra options; stopped after the test."""
    procs = []

    def start(*extra: str) -> Served:
        api, boot = _free_port(), _free_port()
        log = tmp_path / f"serve{len(procs)}.log"
        proc = _start([sys.executable, "-m", "provisioner", "--state-dir", str(state_dir), "serve", "--http",
                       f"127.0.0.1:{api}", "--boot", f"127.0.0.1:{boot}", "--no-tftp", *extra], log,
                      f"http://127.0.0.1:{api}/api/v1/openapi.json")
        procs.append(proc)
        return Served(proc, api, boot, log)
    yield start
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()         # its children die with it (PR_SET_PDEATHSIG)
            proc.wait(timeout=10)
            pytest.fail("serve did not stop on SIGTERM within 20 s")


def _answers(url: str, within: float = 1.0, **kw) -> None:
    started = time.monotonic()
    r = requests.get(url, timeout=within + 4, **kw)
    assert r.status_code == 200
    assert time.monotonic() - started < within, f"{url} took {time.monotonic() - started:.2f} s"


def test_a_wrong_token_is_refused_without_waiting_for_the_body(serve):
    served = serve()
    for port in (served.boot, served.api):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            started = time.monotonic()
            s.sendall(f"POST /api/v1/nodes/{MAC}/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer wrong\r\n"
                      f"Content-Type: application/json\r\nContent-Length: 1000000\r\n\r\n".encode())
            reply = s.recv(4096)
            assert reply.startswith(b"HTTP/1.1 403 ") and b'"forbidden"' in reply, reply
            assert time.monotonic() - started < 2       # the body deadline is 30 s
    _answers(f"http://127.0.0.1:{served.boot}/boot.ipxe")


def test_ranges_with_huge_numbers_leak_no_descriptor(serve, state_dir):
    """2,000 requests whose Range has a 5,000-digit number (a file was opened for each): the boot
    server's descriptors come back to where they were, and it still answers."""
    (state_dir / "bootfiles").mkdir(parents=True, exist_ok=True)
    (state_dir / "bootfiles" / "ipxe.efi").write_bytes(b"MZ" * 1000)
    served = serve("--boot-processes", "1")
    boot_pid = served.kids()[-1]
    url = f"http://127.0.0.1:{served.boot}/bootfiles/ipxe.efi"
    _answers(url)
    time.sleep(0.5)
    baseline = len(os.listdir(f"/proc/{boot_pid}/fd"))
    request = f"GET /bootfiles/ipxe.efi HTTP/1.1\r\nHost: x\r\nRange: bytes={'9' * 5000}-\r\n\r\n".encode()
    for _ in range(2000):
        with socket.create_connection(("127.0.0.1", served.boot), timeout=10) as s:
            s.sendall(request)
            assert s.recv(64).startswith(b"HTTP/1.1 416 ")
    deadline = time.monotonic() + 5
    while len(os.listdir(f"/proc/{boot_pid}/fd")) > baseline:
        assert time.monotonic() < deadline, f"{len(os.listdir(f'/proc/{boot_pid}/fd'))} fds, {baseline} before"
        time.sleep(0.1)
    assert requests.get(url, timeout=5).content == b"MZ" * 1000


def _hold(port: int, n: int) -> list[socket.socket]:
    held = []
    for _ in range(n):
        s = socket.socket()
        s.setblocking(False)
        try:
            s.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass
        held.append(s)
    return held


@pytest.mark.parametrize("cap", [None, "4000"], ids=["default cap", "cap above the fd limit"])
def test_at_the_descriptor_limit_the_server_backs_off(serve, cap):
    """1,100 connections held on each port of a serve under RLIMIT_NOFILE 1024. With the default
    cap it stops accepting below the limit; with a cap above it, accept() fails with EMFILE and the
    loop pauses. Either way: little CPU, a short log, and answers again once they close."""
    served = serve("--workers", "1", "--boot-processes", "1", *(("--max-connections", cap) if cap else ()))
    old = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(old[0], 4096), old[1]))
    held = []
    try:
        log_before = len(served.log.read_text().splitlines())
        held = _hold(served.api, 1100) + _hold(served.boot, 1100)
        time.sleep(1.5)         # accepted what it could
        cpu = served.cpu_seconds()
        time.sleep(3)
        spent = served.cpu_seconds() - cpu
        assert spent < 0.5, f"{spent:.2f} s of CPU in 3 s"
        lines = served.log.read_text().splitlines()[log_before:]
        assert len(lines) < 20, lines[:20]
        if cap:     # it did run out, and said so, a few times, not thousands
            assert 1 <= sum("Too many open files" in line for line in lines) <= 6, lines
        assert served.proc.poll() is None
    finally:
        for s in held:
            s.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, old)
    deadline = time.monotonic() + 10
    while True:
        try:
            _answers(f"http://127.0.0.1:{served.api}/api/v1/openapi.json", within=2)
            _answers(f"http://127.0.0.1:{served.boot}/boot.ipxe", within=2)
            break
        except (requests.RequestException, AssertionError):
            assert time.monotonic() < deadline
            time.sleep(0.2)


def test_the_api_survives_clients_that_send_half_a_request(serve):
    """64 clients each hold half a request (gunicorn's 2 x 16 threads fell to 32): the API still
    answers within a second, again and again, while they hold on."""
    served = serve()
    halves = []
    try:
        for i in range(64):
            s = socket.create_connection(("127.0.0.1", served.api), timeout=5)
            s.sendall(b"POST /api/v1/nodes HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n\r\n{\"mac\":" if i % 2
                      else b"GET /api/v1/openapi.json HTTP/1.1\r\nHost: x\r\nX-Slow:")
            halves.append(s)
        for _ in range(10):
            _answers(f"http://127.0.0.1:{served.api}/api/v1/openapi.json")
            time.sleep(0.1)
    finally:
        for s in halves:
            s.close()


@pytest.fixture
def cert(tmp_path):
    key, crt = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
                    "-out", str(crt), "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    return crt, key


def test_the_api_over_tls_is_not_blocked_by_handshakes_that_never_end(state_dir, tmp_path, cert):
    """serve_forever(api_ssl=...): the API speaks HTTPS. 64 clients connect and never finish
    (or never start) their handshake, 8 more send plain HTTP: others are answered within a
    second, and the stalled ones are dropped at the head deadline."""
    crt, key = cert
    port = _free_port()
    script = (
        "import logging, ssl, sys\n"
        "from pathlib import Path\n"
        "from provisioner.http.loop import Limits\n"
        "from provisioner.server import serve_forever\n"
        "logging.basicConfig(level=logging.WARNING)\n"
        "ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)\n"
        f"ctx.load_cert_chain({str(crt)!r}, {str(key)!r})\n"
        f"serve_forever(Path({str(state_dir)!r}), None, '127.0.0.1', {port}, workers=1, threads=4,\n"
        "              limits=Limits(head_timeout=2.0), api_ssl=ctx)\n")
    url = f"https://127.0.0.1:{port}/api/v1/openapi.json"
    proc = _start([sys.executable, "-c", script], tmp_path / "tls.log", url, verify=str(crt))
    stalled = []
    try:
        for i in range(64):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            if i % 2:       # the start of a ClientHello, and no more
                s.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
            stalled.append(s)
        for _ in range(8):
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                s.sendall(b"GET /api/v1/openapi.json HTTP/1.1\r\nHost: x\r\n\r\n")
                try:
                    assert not s.recv(4096).startswith(b"HTTP/1.1 200")
                except ConnectionResetError:
                    pass
        for _ in range(5):
            _answers(url, verify=str(crt))
        r = requests.get(url, verify=str(crt), timeout=5)
        assert r.json()["openapi"].startswith("3.")
        # the stalled ones are let go at the head deadline (2 s here)
        time.sleep(3)
        for s in stalled:
            s.settimeout(2)
            try:
                assert s.recv(4096) == b""
            except ConnectionResetError:
                pass
            except socket.timeout:
                pytest.fail("a stalled handshake was kept past the head deadline")
        ctx = ssl.create_default_context(cafile=str(crt))
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
                s.sendall(b"HEAD /api/v1/openapi.json HTTP/1.1\r\nHost: x\r\n\r\n")
                assert s.recv(4096).startswith(b"HTTP/1.1 200 OK")
    finally:
        for s in stalled:
            s.close()
        proc.terminate()
        proc.wait(timeout=15)
