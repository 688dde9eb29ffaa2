"""The boot server: files by sendfile (ranges, HEAD), kickstarts and callbacks from the same table
as the service port, and bad requests that stop nothing."""

import json
import socket
import threading
import time

import pytest
import requests

from provisioner.boot.bootsrv import BootServer
from tests.conftest import db_dump, new_node


@pytest.fixture
def files(app, imported, state_dir):
    (state_dir / "bootfiles").mkdir(exist_ok=True)
    (state_dir / "bootfiles" / "ipxe.efi").write_bytes(b"MZ" + bytes(range(256)) * 10)
    node_http = app.extensions["provisioner"].node_http
    server = BootServer(node_http.answer, "127.0.0.1", 0, after_round=node_http.after_round).start()
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
                                  "/boot/other/vmlinuz", "/api/v1/nodes", "/bootfiles/ipxe.efi%00.txt",
                                  "/bootfiles/%00"])
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


# -- what installers ask for: kickstarts and callbacks, on this loop -----------------------------

MAC = "52:54:00:0c:00:02"       # compute2 in the embedded site


def raw(url: str, data: bytes, pause: float = 0.0) -> bytes:
    """Send `data` (in two halves, `pause` apart, if asked) and read the whole answer."""
    s = socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])), timeout=10)
    if pause:
        s.sendall(data[:len(data) // 2])
        time.sleep(pause)
        s.sendall(data[len(data) // 2:])
    else:
        s.sendall(data)
    out = b""
    while chunk := s.recv(65536):
        out += chunk
    s.close()
    return out


def post(url: str, mac: str, body: bytes, token: str | None, pause: float = 0.0, extra: str = "") -> tuple[int, bytes]:
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    out = raw(url, (f"POST /api/v1/nodes/{mac}/events HTTP/1.1\r\nHost: x\r\n{auth}{extra}"
                    f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body, pause)
    head, _, payload = out.partition(b"\r\n\r\n")
    return int(head.split()[1]), payload


def test_the_kickstart_is_the_service_ports_and_marks_the_node_installing(files, client):
    url, _ = files
    r = requests.get(f"{url}/ks/{MAC}", timeout=10)
    assert r.status_code == 200 and "Table 1" in r.text
    # the same bytes as the Flask side renders; the fetch reaches the registry with the round
    deadline = time.monotonic() + 2
    while client.get(f"/api/v1/nodes/{MAC}").get_json()["state"] != "installing":
        assert time.monotonic() < deadline, "the fetch was never written"
        time.sleep(0.01)
    assert client.get(f"/ks/{MAC}").get_data(as_text=True) == r.text
    client.application.extensions["provisioner"].node_http.after_round()
    events = [e["type"] for e in client.get(f"/api/v1/nodes/{MAC}/events").get_json()["events"]]
    assert events[-2:] == ["registered", "kickstart"]      # fetched twice, written once


def test_callbacks_take_the_install_token_and_change_the_state(files, client, registry):
    url, _ = files
    token = registry.get(MAC).install_token
    requests.get(f"{url}/ks/{MAC}", timeout=10)
    status, body = post(url, MAC, b'{"type": "installed", "detail": "done"}', token, pause=0.2)
    assert status == 200 and json.loads(body)["state"] == "installed" and json.loads(body)["netboot"] is False
    assert "install_token" not in json.loads(body)
    # disarmed: the kickstart is refused from now on, on both ports
    assert requests.get(f"{url}/ks/{MAC}", timeout=10).status_code == 409
    assert client.get(f"/ks/{MAC}").status_code == 409


@pytest.mark.parametrize("mac, body, token, status, error", [
    (MAC, b'{"type": "installed"}', "wrong", 403, "forbidden"),
    (MAC, b'{"type": "installed"}', None, 403, "forbidden"),
    (MAC, b'{"type": "installed"', "TOKEN", 400, "invalid"),
    (MAC, b'{"type": "finished"}', "TOKEN", 400, "invalid"),
    (MAC, b'{"type": "installed", "x": 1}', "TOKEN", 400, "invalid"),
    ("52:54:00:99:99:99", b'{"type": "installed"}', "TOKEN", 404, "not found"),
    ("not-a-mac", b'{"type": "installed"}', "TOKEN", 400, "invalid"),
])
def test_bad_callbacks_are_refused_and_change_nothing(files, registry, mac, body, token, status, error):
    url, _ = files
    if token == "TOKEN":
        token = registry.get(MAC).install_token
    before = db_dump(registry)
    got, payload = post(url, mac, body, token)
    assert got == status and json.loads(payload)["error"] == error
    assert db_dump(registry) == before


@pytest.mark.parametrize("extra, length, status", [
    ("Transfer-Encoding: chunked\r\n", None, 411),
    ("", 2 * 1024 * 1024, 413),
])
def test_bodies_without_a_sane_length_are_refused(files, registry, extra, length, status):
    url, _ = files
    before = db_dump(registry)
    head = f"POST /api/v1/nodes/{MAC}/events HTTP/1.1\r\nHost: x\r\n{extra}"
    if length is not None:
        head += f"Content-Length: {length}\r\n"
    out = raw(url, head.encode() + b"\r\n")
    assert out.split()[1] == str(status).encode()
    assert db_dump(registry) == before


def test_every_machine_path_answers_as_on_the_service_port(files, client):
    url, _ = files
    for path in ["/hosts", "/boot.ipxe", f"/ipxe/{MAC}", f"/pxelinux.cfg/01-{MAC.replace(':', '-')}",
                 f"/grub/grub.cfg-01-{MAC.replace(':', '-')}", "/ks/zz:zz", "/ks/52:54:00:99:99:99",
                 "/ipxe/nonsense", "/hooks.tar.gz"]:
        ours = requests.get(f"{url}{path}", timeout=10)
        flask = client.get(path)
        assert (ours.status_code, ours.content) == (flask.status_code, flask.data), path
        assert ours.headers["Content-Type"] == flask.headers["Content-Type"], path


def test_a_failing_answer_is_a_500_and_the_loop_goes_on(files, app, monkeypatch):
    url, _ = files
    node_http = app.extensions["provisioner"].node_http

    def broken(*_):
        raise RuntimeError("boom")
    monkeypatch.setattr(node_http, "hosts", broken)
    node_http.routes = [(m, p, broken if h.__name__ == "hosts" else h) for m, p, h in node_http.routes]
    assert requests.get(f"{url}/hosts", timeout=10).status_code == 500
    assert requests.get(f"{url}/ks/{MAC}", timeout=10).status_code == 200


def test_hosts_is_built_again_only_when_a_name_or_address_changes(files, client, admin, registry, app, monkeypatch):
    url, _ = files
    renderer = app.extensions["provisioner"].renderer
    builds = []
    real = renderer.hosts_file
    monkeypatch.setattr(renderer, "hosts_file", lambda entries: builds.append(1) or real(entries))
    first = requests.get(f"{url}/hosts", timeout=10).text
    token = registry.get(MAC).install_token
    post(url, MAC, b'{"type": "installing"}', token)             # a state change: same names
    assert requests.get(f"{url}/hosts", timeout=10).text == first and len(builds) == 1
    assert client.post("/api/v1/nodes", json=new_node(), headers=admin).status_code == 201
    second = requests.get(f"{url}/hosts", timeout=10).text
    assert "192.168.0.10" in second and "compute10.cluster.local compute10" in second
    assert client.patch(f"/api/v1/nodes/{new_node()['mac']}", json={"hostname": "compute11"},
                        headers=admin).status_code == 200
    third = requests.get(f"{url}/hosts", timeout=10).text
    assert "compute11" in third and "compute10" not in third and len(builds) == 3
