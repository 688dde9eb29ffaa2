"""The real server (`provisioner serve`: the API and boot server processes) on loopback, driven with requests."""

import socket

import requests

from provisioner.credentials import load_or_create
from tests.conftest import new_node


def test_register_fetch_change_remove_over_real_http(live_server, state_dir):
    auth = {"Authorization": f"Bearer {load_or_create(state_dir).admin_token}"}
    s = requests.Session()
    r = s.post(f"{live_server}/api/v1/nodes", json=new_node(), headers=auth, timeout=10)
    assert r.status_code == 201 and r.json()["hostname"] == "compute10"
    r = s.post(f"{live_server}/api/v1/nodes", json=new_node(), headers=auth, timeout=10)
    assert r.status_code == 409
    r = s.get(f"{live_server}/ks/01-52-54-00-aa-00-10", timeout=10)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/plain")
    assert "--ip=192.168.0.10" in r.text
    r = s.patch(f"{live_server}/api/v1/nodes/5254.00aa.0010", json={"ip": "192.168.0.40"}, headers=auth, timeout=10)
    assert r.status_code == 200 and r.json()["ip"] == "192.168.0.40"
    assert s.delete(f"{live_server}/api/v1/nodes/52:54:00:aa:00:10", timeout=10).status_code == 401
    assert s.delete(f"{live_server}/api/v1/nodes/52:54:00:aa:00:10", headers=auth, timeout=10).status_code == 204
    assert s.get(f"{live_server}/ks/52:54:00:aa:00:10", timeout=10).status_code == 404
    hosts = s.get(f"{live_server}/hosts", timeout=10).text
    assert "192.168.0.5 controller.cluster.local controller" in hosts and "compute10" not in hosts


def test_garbage_on_the_socket_does_not_stop_the_server(live_server):
    host, port = live_server.removeprefix("http://").split(":")
    for junk in (b"\x00\xff" * 100 + b"\r\n\r\n", b"GET /" + b"A" * 70000 + b" HTTP/1.1\r\n\r\n",
                 b"POST /api/v1/nodes HTTP/1.1\r\nContent-Length: 99999999\r\n\r\nxx", b""):
        with socket.create_connection((host, int(port)), timeout=5) as sock:
            sock.sendall(junk)
            sock.shutdown(socket.SHUT_WR)
            try:
                sock.recv(4096)
            except OSError:
                pass
    assert requests.get(f"{live_server}/api/v1/nodes", headers=live_server.reader, timeout=10).status_code == 200


def test_no_secret_reaches_the_log_or_a_listing(live_server, state_dir):
    secrets = {k: v for k, v in load_or_create(state_dir).values.items()}
    auth = {"Authorization": f"Bearer {secrets['admin_token']}"}
    requests.post(f"{live_server}/api/v1/nodes", json=new_node(), headers=auth, timeout=10)
    requests.post(f"{live_server}/api/v1/nodes", json=new_node(), headers=auth, timeout=10)
    requests.get(f"{live_server}/ks/52:54:00:aa:00:10", timeout=10)
    requests.delete(f"{live_server}/api/v1/nodes/52:54:00:aa:00:10", headers={"Authorization": "Bearer guess"}, timeout=10)
    listing = requests.get(f"{live_server}/api/v1/nodes", headers=live_server.reader, timeout=10).text
    one = requests.get(f"{live_server}/api/v1/nodes/52:54:00:aa:00:10", headers=live_server.reader, timeout=10).text
    events = requests.get(f"{live_server}/api/v1/nodes/52:54:00:aa:00:10/events", headers=live_server.reader, timeout=10).text
    from provisioner.registry.db import Registry
    tokens = [n.install_token for n in Registry.in_state_dir(state_dir).list()]
    assert len(tokens) == 6
    log = live_server.log.read_text()
    for text in (log, listing, one, events):
        for value in list(secrets.values()) + tokens:
            assert value not in text
    assert "boot http 52:54:00:aa:00:10 (compute10): asked /ks/52:54:00:aa:00:10, answered kickstart" in log


def test_a_small_storm_on_the_boot_server_loses_no_write(live_server, state_dir):
    """120 installers at once, through both boot server processes: every fetch and callback is
    in the registry, and no late fetch drags an installed node back."""
    from concurrent.futures import ThreadPoolExecutor
    auth = {"Authorization": f"Bearer {load_or_create(state_dir).admin_token}"}
    macs = [f"52:54:00:bb:00:{i:02x}" for i in range(120)]
    for i, mac in enumerate(macs):
        body = new_node(mac=mac, hostname=f"storm{i}", ip=f"192.168.0.{100 + i}")
        assert requests.post(f"{live_server}/api/v1/nodes", json=body, headers=auth, timeout=10).status_code == 201

    def install(mac):
        ks = requests.get(f"{live_server.boot}/ks/{mac}", timeout=30)
        assert ks.status_code == 200
        token = ks.text.split("PROVISIONER_TOKEN='", 1)[1].split("'", 1)[0]
        for kind in ("installing", "installed"):
            r = requests.post(f"{live_server.boot}/api/v1/nodes/{mac}/events", json={"type": kind},
                              headers={"Authorization": f"Bearer {token}"}, timeout=30)
            assert r.status_code == 200, r.text
        return requests.get(f"{live_server.boot}/ks/{mac}", timeout=30).status_code

    with ThreadPoolExecutor(32) as pool:
        assert set(pool.map(install, macs)) == {409}      # installed: never handed a kickstart again
    for mac in macs:
        node = requests.get(f"{live_server}/api/v1/nodes/{mac}", headers=live_server.reader, timeout=10).json()
        assert (node["state"], node["netboot"]) == ("installed", False)
        events = requests.get(f"{live_server}/api/v1/nodes/{mac}/events", headers=live_server.reader, timeout=10).json()["events"]
        # the start of the install is written once: by the fetch, or by %pre's report if that
        # was written before the fetch's round was
        types = sorted(e["type"] for e in events)
        assert types in (["installed", "kickstart", "registered"], ["installed", "installing", "registered"]), types
