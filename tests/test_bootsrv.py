"""The kernel/initrd file server: sendfile, ranges, HEAD, and bad requests that stop nothing."""

import socket
import threading

import pytest
import requests

from provisioner.bootsrv import BootServer


@pytest.fixture
def files(app, imported, state_dir):
    (state_dir / "bootfiles").mkdir(exist_ok=True)
    (state_dir / "bootfiles" / "ipxe.efi").write_bytes(b"MZ" + bytes(range(256)) * 10)
    server = BootServer(app.extensions["provisioner"].node_http.answer, "127.0.0.1", 0).start()
    yield f"http://127.0.0.1:{server.port}", imported
    server.stop()


def test_whole_files_with_length(files):
    url, tree = files
    initrd = (tree / "images/pxeboot/initrd.img").read_bytes()
    r = requests.get(f"{url}/boot/centos-stream-9-x86_64/initrd.img", timeout=10)
    assert r.status_code == 200 and r.content == initrd
    assert int(r.headers["Content-Length"]) == len(initrd) and r.headers["Accept-Ranges"] == "bytes"
    assert requests.get(f"{url}/bootfiles/ipxe.efi", timeout=10).content.startswith(b"MZ")


@pytest.mark.parametrize("header, start, end", [("bytes=0-99", 0, 99), ("bytes=1000-", 1000, None),
                                                ("bytes=-500", -500, None), ("bytes=299990-999999", 299990, None)])
def test_ranges(files, header, start, end):
    url, tree = files
    initrd = (tree / "images/pxeboot/initrd.img").read_bytes()
    r = requests.get(f"{url}/boot/centos-stream-9-x86_64/initrd.img", headers={"Range": header}, timeout=10)
    want = initrd[start:] if end is None else initrd[start:end + 1]
    assert r.status_code == 206 and r.content == want
    first = start if start >= 0 else len(initrd) + start
    assert r.headers["Content-Range"] == f"bytes {first}-{first + len(want) - 1}/{len(initrd)}"


@pytest.mark.parametrize("header", ["bytes=500000-", "bytes=9-3", "lines=1-2", "bytes=-"])
def test_unsatisfiable_ranges_are_416(files, header):
    url, _ = files
    r = requests.get(f"{url}/boot/centos-stream-9-x86_64/initrd.img", headers={"Range": header}, timeout=10)
    assert r.status_code == 416 and r.headers["Content-Range"] == "bytes */300000"


def test_head_sends_headers_only(files):
    url, _ = files
    r = requests.head(f"{url}/boot/centos-stream-9-x86_64/vmlinuz", timeout=10)
    assert r.status_code == 200 and r.headers["Content-Length"] == "5000" and r.content == b""


@pytest.mark.parametrize("path", ["/boot/centos-stream-9-x86_64/treeinfo", "/boot/../secrets.yaml",
                                  "/bootfiles/../secrets.yaml", "/bootfiles/%2e%2e/secrets.yaml", "/secrets.yaml",
                                  "/boot/other/vmlinuz", "/api/v1/nodes"])
def test_nothing_else_is_served(files, path):
    url, _ = files
    s = socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])), timeout=5)
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    reply = s.recv(4096)
    s.close()
    assert reply.startswith(b"HTTP/1.1 404") and b"admin_token" not in reply


@pytest.mark.parametrize("junk", [b"POST /boot/x HTTP/1.1\r\n\r\n", b"\x00\xff\r\n\r\n", b"GET\r\n\r\n",
                                  b"GET / HTTP/1.1\r\n" + b"X: " + b"a" * 20000, b""])
def test_bad_requests_stop_nothing(files, junk):
    url, tree = files
    port = int(url.rsplit(":", 1)[1])
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(junk)
    s.shutdown(socket.SHUT_WR)
    reply = s.recv(4096)
    s.close()
    assert reply == b"" or reply.split()[1] in (b"400", b"405", b"431", b"404")
    assert requests.get(f"{url}/boot/centos-stream-9-x86_64/vmlinuz", timeout=10).content == b"K" * 5000


def test_clients_that_vanish_mid_transfer_and_many_at_once(files):
    url, tree = files
    port = int(url.rsplit(":", 1)[1])
    for _ in range(20):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.sendall(b"GET /boot/centos-stream-9-x86_64/initrd.img HTTP/1.1\r\n\r\n")
        s.recv(100)
        s.close()
    initrd = (tree / "images/pxeboot/initrd.img").read_bytes()
    got = []
    threads = [threading.Thread(target=lambda: got.append(
        requests.get(f"{url}/boot/centos-stream-9-x86_64/initrd.img", timeout=30).content == initrd))
        for _ in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert got == [True] * 50
