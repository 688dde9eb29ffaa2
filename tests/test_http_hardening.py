"""The hardened HTTP loop under attack, in this process, with real sockets on loopback: strict
framing, the connection cap, deadlines a trickle cannot extend, a reader too slow to keep, the
body read only after its head is admitted. Each attack is bounded in count and time; after each,
a legitimate request is still answered."""

import socket
import threading
import time

import pytest
import requests

from provisioner.boot.bootsrv import BootServer
from provisioner.http.loop import Limits
from provisioner.http.wsgi import ApiServer

MAC = "52:54:00:0c:00:02"       # compute2 in the embedded site
FAST = Limits(max_conns=16, head_timeout=1.0, body_timeout=1.0, min_rate=4 << 20, send_grace=1.0)


@pytest.fixture
def boot(app, state_dir):
    (state_dir / "bootfiles").mkdir(exist_ok=True)
    (state_dir / "bootfiles" / "ipxe.efi").write_bytes(b"MZ" + bytes(range(256)) * 10)
    node_http = app.extensions["provisioner"].node_http
    server = BootServer(node_http.answer, "127.0.0.1", 0, after_round=node_http.after_round,
                        admit=node_http.admit, limits=FAST).start()
    yield server
    server.stop()


def exchange(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except ConnectionResetError:
            pass
        return out


def status(reply: bytes) -> int:
    return int(reply.split()[1]) if reply.startswith(b"HTTP/1.1 ") else 0


def still_answers(server) -> None:
    r = requests.get(f"http://127.0.0.1:{server.port}/bootfiles/ipxe.efi", timeout=5)
    assert r.status_code == 200 and r.content.startswith(b"MZ")


GOOD = b"GET /hosts HTTP/1.1\r\nHost: x\r\n"


FRAMING = [
    (b"POST /hosts HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx", {400}),
    (b"POST /hosts HTTP/1.1\r\nHost: x\r\nContent-Length: 1, 1\r\n\r\nx", {400}),
    (b"POST /hosts HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-length: 2\r\n\r\nxx", {400}),
    (GOOD + b"X-Folded: a\r\n b\r\n\r\n", {400}),                       # obs-fold
    (GOOD + b"X-Bare: a\rb\r\n\r\n", {400}),                            # bare CR
    (b"GET /hosts HTTP/1.1\nHost: x\n\n", {400}),                       # bare LF
    (b"POST /hosts HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", {411}),
    (b"POST /hosts HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", {411, 501}),
    (b"POST /hosts HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", {400, 411}),
    (b"POST /hosts HTTP/1.1\r\nHost: x\r\nContent-Length: " + b"9" * 5000 + b"\r\n\r\n", {400, 413}),
    (b"POST /hosts HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", {400}),
    (b"POST /hosts HTTP/1.1\r\nHost: x\r\nContent-Length: 2000000\r\n\r\n", {413}),
    (GOOD + b"X: " + b"a" * 17000 + b"\r\n\r\n", {431}),                # one absurd header
    (GOOD + b"".join(b"X-%d: a\r\n" % i for i in range(3000)) + b"\r\n", {431}),    # absurdly many
    (GOOD + b"X\x00: a\r\n\r\n", {400}),
    (b"GET /hosts HTTP/1.1\r\n\r\n", {400}),                            # no Host
    (b"GET /hosts HTTP/9.9\r\nHost: x\r\n\r\n", {400, 505}),
    (b"BREW /hosts HTTP/1.1\r\nHost: x\r\n\r\n", {405}),
]


@pytest.mark.parametrize("head, want", FRAMING, ids=[f"{i}" for i in range(len(FRAMING))])
def test_strict_framing_refuses_what_two_parsers_could_read_two_ways(boot, head, want):
    reply = exchange(boot.port, head)
    assert status(reply) in want, reply[:200]
    still_answers(boot)
    assert _settles(boot)


def _settles(server, timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while server.open_connections:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_a_callback_with_a_wrong_token_is_refused_before_its_body(boot):
    """admit() runs on the head: the 403 comes at once, though the megabyte never does."""
    with socket.create_connection(("127.0.0.1", boot.port), timeout=5) as s:
        started = time.monotonic()
        s.sendall(f"POST /api/v1/nodes/{MAC}/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer wrong\r\n"
                  f"Content-Type: application/json\r\nContent-Length: 1000000\r\n\r\n".encode())
        reply = s.recv(4096)
        assert status(reply) == 403 and b'"forbidden"' in reply
        assert time.monotonic() - started < FAST.body_timeout / 2
    still_answers(boot)


def test_a_right_token_waits_for_the_body_and_100_continue_is_sent(boot, registry):
    token = registry.get(MAC).install_token
    body = b'{"type": "installing", "detail": "' + b"x" * 2000 + b'"}'
    with socket.create_connection(("127.0.0.1", boot.port), timeout=5) as s:
        s.sendall(f"POST /api/v1/nodes/{MAC}/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
                  f"Expect: 100-continue\r\nContent-Length: {len(body)}\r\n\r\n".encode())
        assert s.recv(4096) == b"HTTP/1.1 100 Continue\r\n\r\n"
        s.sendall(body)
        assert status(s.recv(4096)) == 200


def test_the_connection_cap_holds_and_the_deadline_frees_places(boot):
    """40 idle connections against a cap of 16: the process never holds more than 16, and a
    legitimate request is answered once the head deadline (1 s here) has dropped the idle ones."""
    idle = [socket.create_connection(("127.0.0.1", boot.port), timeout=5) for _ in range(40)]
    try:
        seen = 0
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline:
            seen = max(seen, boot.open_connections)
            time.sleep(0.01)
        assert seen == boot.cap == 16
        started = time.monotonic()
        still_answers(boot)
        assert time.monotonic() - started < 3 * FAST.head_timeout + 2
        assert boot.open_connections <= 16
    finally:
        for s in idle:
            s.close()
    assert _settles(boot)


def test_a_trickled_head_cannot_extend_its_deadline(boot):
    """A byte every 0.1 s of a head that never ends: dropped at the head deadline from the accept."""
    with socket.create_connection(("127.0.0.1", boot.port), timeout=5) as s:
        started = time.monotonic()
        s.sendall(b"GET /hosts HTTP/1.1\r\nHost: x\r\n")
        reply = b""
        try:
            while time.monotonic() - started < 5:
                s.sendall(b"X")
                time.sleep(0.1)
        except OSError:
            pass
        try:
            reply = s.recv(4096)
        except OSError:
            pass
        assert time.monotonic() - started < FAST.head_timeout + 1.5
        assert reply == b"" or status(reply) == 408
    still_answers(boot)


def test_a_trickled_body_cannot_extend_its_deadline(boot, registry):
    token = registry.get(MAC).install_token
    with socket.create_connection(("127.0.0.1", boot.port), timeout=5) as s:
        s.sendall(f"POST /api/v1/nodes/{MAC}/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
                  f"Content-Length: 1000\r\n\r\n".encode())
        started = time.monotonic()
        try:
            while time.monotonic() - started < 5:
                s.sendall(b" ")
                time.sleep(0.1)
        except OSError:
            pass
        assert time.monotonic() - started < FAST.body_timeout + 1.5
    assert registry.get(MAC).state == "registered"
    still_answers(boot)


def test_a_reader_that_takes_a_byte_a_second_is_dropped(boot, state_dir):
    """A 256 MiB file to a client that reads a byte a second: dropped once its average rate is
    below the minimum (4 MiB/s here, after a 1 s grace), not kept for the 8 years it would take."""
    big = state_dir / "bootfiles" / "big.efi"
    with open(big, "wb") as f:
        f.truncate(256 << 20)
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", boot.port))
    s.settimeout(5)
    try:
        s.sendall(b"GET /bootfiles/big.efi HTTP/1.1\r\nHost: x\r\n\r\n")
        started = time.monotonic()
        while boot.open_connections and time.monotonic() - started < 10:
            s.recv(1)
            time.sleep(0.5)
        assert boot.open_connections == 0 and time.monotonic() - started < 10
    finally:
        s.close()
    still_answers(boot)


def test_bad_ranges_close_their_file(boot):
    """A Range with a 5,000-digit number, an inverted one, a non-numeric one: each is a 416 and
    the file opened for it is closed (the fd count of this process comes back)."""
    import os
    before = len(os.listdir("/proc/self/fd"))
    for header in ("bytes=" + "9" * 5000 + "-", "bytes=-" + "9" * 5000, "bytes=9-3", "bytes=a-b"):
        for _ in range(50):
            reply = exchange(boot.port, f"GET /bootfiles/ipxe.efi HTTP/1.1\r\nHost: x\r\nRange: {header}\r\n\r\n".encode())
            assert status(reply) == 416
    assert _settles(boot)
    assert len(os.listdir("/proc/self/fd")) <= before
    still_answers(boot)


# -- the API's front ------------------------------------------------------------------------------

@pytest.fixture
def api(app):
    server = ApiServer(app, "127.0.0.1", 0, threads=2, limits=FAST).start()
    yield server
    server.stop()


def test_the_api_answers_while_its_threads_would_all_be_held(api, admin):
    """More half-sent requests than threads (2 here): none of them holds a thread."""
    url = f"http://127.0.0.1:{api.port}"
    halves = []
    try:
        for i in range(12):
            s = socket.create_connection(("127.0.0.1", api.port), timeout=5)
            s.sendall(b"POST /api/v1/nodes HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{" if i % 2
                      else b"GET /api/v1/openapi.json HTTP/1.1\r\nHost:")
            halves.append(s)
        for _ in range(5):
            started = time.monotonic()
            r = requests.get(f"{url}/api/v1/openapi.json", timeout=5)
            assert r.status_code == 200 and r.json()["openapi"].startswith("3.")
            assert time.monotonic() - started < 1
    finally:
        for s in halves:
            s.close()
    r = requests.head(f"{url}/api/v1/openapi.json", timeout=5)
    assert r.status_code == 200 and int(r.headers["Content-Length"]) > 1000 and r.content == b""
    r = requests.post(f"{url}/api/v1/nodes", data=b"{", headers={**admin, "Content-Type": "application/json"},
                      timeout=5)
    assert r.status_code == 400


def test_a_failing_app_is_a_500_and_the_loop_goes_on(app):
    calls = []

    def broken(environ, start_response):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("boom")
        return app(environ, start_response)
    server = ApiServer(broken, "127.0.0.1", 0, threads=1, limits=FAST).start()
    try:
        assert requests.get(f"http://127.0.0.1:{server.port}/api/v1/openapi.json", timeout=5).status_code == 500
        assert requests.get(f"http://127.0.0.1:{server.port}/api/v1/openapi.json", timeout=5).status_code == 200
    finally:
        server.stop()


def test_files_from_the_app_go_from_their_descriptor(app, imported, api):
    initrd = (imported / "images/pxeboot/initrd.img").read_bytes()
    url = f"http://127.0.0.1:{api.port}/boot/centos-stream-9-x86_64/initrd.img"
    r = requests.get(url, timeout=10)
    assert r.status_code == 200 and r.content == initrd
    r = requests.get(url, headers={"Range": "bytes=1000-1999"}, timeout=10)
    assert r.status_code == 206 and r.content == initrd[1000:2000]
    threads = [threading.Thread(target=lambda: requests.get(url, timeout=10)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert _settles(api)
