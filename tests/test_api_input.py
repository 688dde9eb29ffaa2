"""The API's input handling, the registry's schema migration, and PATCH without lost updates."""

import json
import sqlite3
import threading

import pytest

from provisioner.registry.db import Registry
from tests.conftest import db_dump, new_node

# `nodes` as the first release created it, before `version` and any later column
OLD_NODES_TABLE = """
CREATE TABLE nodes (
    id            INTEGER PRIMARY KEY,
    mac           TEXT NOT NULL UNIQUE,
    hostname      TEXT NOT NULL UNIQUE,
    ip            TEXT NOT NULL UNIQUE,
    interface     TEXT NOT NULL,
    aliases       TEXT NOT NULL,
    roles         TEXT NOT NULL,
    nics          TEXT NOT NULL,
    disk_bytes    INTEGER,
    state         TEXT NOT NULL,
    netboot       INTEGER NOT NULL,
    install_token TEXT NOT NULL,
    source        TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL
);
CREATE TABLE macs (mac TEXT PRIMARY KEY, node_id INTEGER NOT NULL REFERENCES nodes(id) ON DELETE CASCADE);
CREATE TABLE names (name TEXT PRIMARY KEY, node_id INTEGER NOT NULL REFERENCES nodes(id) ON DELETE CASCADE);
INSERT INTO nodes VALUES (1, '52:54:00:aa:00:10', 'compute10', '192.168.0.10', 'eth1', '[]', '["compute"]',
    '[]', NULL, 'installed', 0, 'tok', 'api', '2024-01-01T00:00:00Z', '2024-01-01T00:00:00Z');
INSERT INTO macs VALUES ('52:54:00:aa:00:10', 1);
INSERT INTO names VALUES ('compute10', 1);
"""


def _columns(path) -> dict[str, str]:
    with sqlite3.connect(path) as db:
        return {r[1]: r[2] for r in db.execute("PRAGMA table_info(nodes)")}


def test_a_registry_made_by_an_older_version_opens_and_gains_the_version_column(tmp_path):
    path = tmp_path / "registry.sqlite3"
    with sqlite3.connect(path) as db:
        db.executescript(OLD_NODES_TABLE)
    assert "version" not in _columns(path) and "firstboot_hash" not in _columns(path)

    reg = Registry(path)
    assert {"version", "firstboot_hash"} <= set(_columns(path))
    assert _columns(path)["version"] == "INTEGER"
    node = reg.get("52:54:00:aa:00:10")
    assert (node.hostname, node.state, node.version) == ("compute10", "installed", 1)
    spec = node.spec.__class__(**{**node.spec.__dict__, "interface": "eth0"})
    assert reg.update(node.mac, spec).version == 2
    reg.close()

    again = Registry(path)          # a second start migrates nothing and loses nothing
    assert again.get(node.mac).version == 2 and again.get(node.mac).spec.interface == "nic0"   # ethN is read as nicN
    again.close()


def test_every_update_of_a_nodes_row_bumps_its_version_whoever_writes_it(registry):
    mac = "52:54:00:0c:00:02"
    v = registry.get(mac).version
    names = registry.names_version()
    db = registry._conn()
    db.execute("UPDATE nodes SET state = 'failed' WHERE mac = ?", (mac,))      # any code path
    assert registry.get(mac).version == v + 1
    db.execute("UPDATE nodes SET version = 40 WHERE mac = ?", (mac,))          # set on purpose: kept
    assert registry.get(mac).version == 40
    assert registry.names_version() == names        # the bump is not a name change
    registry.rebuild(mac)
    assert registry.get(mac).version == 41


# -- bad input: a 400 or 413 that names the field, never a 500, and nothing written -------------

NODE = "/api/v1/nodes/52:54:00:aa:00:10"
HUGE = "a" * 500_000            # well under the body cap, absurd for any field

BAD_FIELDS = [
    ({"disk_bytes": 2**64}, "disk_bytes"),          # OverflowError in SQLite before
    ({"disk_bytes": 2**63}, "disk_bytes"),
    ({"disk_bytes": -1}, "disk_bytes"),
    ({"disk_bytes": 0}, "disk_bytes"),
    ({"disk_bytes": True}, "disk_bytes"),
    ({"disk_bytes": 1.5e12}, "disk_bytes"),
    ({"disk_bytes": "300000000000"}, "disk_bytes"),
    ({"hostname": HUGE}, "hostname"),
    ({"hostname": 10}, "hostname"),
    ({"mac": HUGE}, "mac"),
    ({"ip": HUGE}, "ip"),
    ({"interface": HUGE}, "interface"),
    ({"aliases": [HUGE]}, "aliases"),
    ({"aliases": [f"a{i}" for i in range(1000)]}, "aliases"),
    ({"aliases": "c10"}, "aliases"),
    ({"roles": [HUGE]}, "roles"),
    ({"roles": [["compute"]]}, "roles"),            # unhashable: TypeError in the site's check before
    ({"roles": [{"compute": 1}]}, "roles"),
    ({"nics": [{"mac": HUGE, "name": "eth0"}]}, "nics"),
    ({"nics": [{"mac": "52:54:00:aa:01:10", "name": HUGE}]}, "nics"),
    ({"nics": [{"mac": "52:54:00:aa:01:10", "name": "eth0", "mode": ["dhcp"]}]}, "nics"),
    ({"nics": [{"mac": "52:54:00:aa:01:10", "name": "eth0", HUGE: 1}]}, "nics"),
    ({"nics": ["eth0"]}, "nics"),
    ({HUGE: 1}, None),
]


def _registered(client, admin):
    assert client.post("/api/v1/nodes", json=new_node(), headers=admin).status_code == 201


def _is_400(resp, field):
    assert resp.status_code == 400, resp.get_data()[:300]
    body = resp.get_json()
    assert body["error"] == "invalid" and body["detail"]
    assert len(resp.get_data()) < 1000          # the bad value is not quoted back at length
    if field:
        assert body["field"] == field


@pytest.mark.parametrize("over, field", BAD_FIELDS)
def test_bad_fields_in_a_new_node_are_400_and_change_nothing(client, admin, registry, over, field):
    before = db_dump(registry)
    _is_400(client.post("/api/v1/nodes", json=new_node(**over), headers=admin), field)
    assert db_dump(registry) == before


@pytest.mark.parametrize("over, field", BAD_FIELDS)
def test_bad_fields_in_a_patch_are_400_and_change_nothing(client, admin, registry, over, field):
    _registered(client, admin)
    before = db_dump(registry)
    _is_400(client.patch(NODE, json=over, headers=admin), field)
    assert db_dump(registry) == before


def test_the_largest_disk_sqlite_holds_is_taken(client, admin):
    resp = client.post("/api/v1/nodes", json=new_node(disk_bytes=2**63 - 1), headers=admin)
    assert resp.status_code == 201 and resp.get_json()["disk_bytes"] == 2**63 - 1
    resp = client.patch(NODE, json={"disk_bytes": 300 * 10**9}, headers=admin)
    assert resp.status_code == 200 and resp.get_json()["disk_bytes"] == 300 * 10**9


BAD_BODIES = [
    b"[" * 100_000,                                  # RecursionError in json before
    b'{"hostname": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    b'{"aliases": ' + b"[" * 20 + b"]" * 20 + b"}",  # parses, but deeper than any body is
    b"[" * 900 + b"]" * 900,                         # parses, and would recurse in repr later
    b"[]", b'"x"', b"1", b"null", b"true",
    b"", b"   ", b"{", b"\xff\xfe\x00",
    b'{"disk_bytes": 1' + b"0" * 5000 + b"}",      # past Python's int-from-text limit
]


@pytest.mark.parametrize("method", ["post", "patch"])
@pytest.mark.parametrize("raw", BAD_BODIES, ids=lambda r: f"{r[:16]!r}..{len(r)}")
def test_bodies_that_are_not_a_node_are_400_and_change_nothing(client, admin, registry, method, raw):
    _registered(client, admin)
    before = db_dump(registry)
    path = "/api/v1/nodes" if method == "post" else NODE
    resp = getattr(client, method)(path, data=raw, headers={**admin, "Content-Type": "application/json"})
    _is_400(resp, None)
    assert db_dump(registry) == before


def _raw_request(app, method, path, body: bytes, headers, *, content_length: bool):
    """Call the WSGI app directly: the test client always sends a Content-Length. Without it,
    the environ is what a server hands on for a chunked body (wsgi.input_terminated)."""
    from werkzeug.test import EnvironBuilder, run_wsgi_app
    env = EnvironBuilder(path=path, method=method, data=body,
                         headers={**headers, "Content-Type": "application/json"}).get_environ()
    if not content_length:
        del env["CONTENT_LENGTH"]
        env["wsgi.input_terminated"] = True
    out, status, _ = run_wsgi_app(app, env)
    return int(status.split()[0]), json.loads(b"".join(out))


@pytest.mark.parametrize("content_length", [True, False], ids=["Content-Length", "chunked"])
@pytest.mark.parametrize("method", ["POST", "PATCH"])
def test_a_body_over_the_cap_is_413_with_or_without_content_length(app, admin, registry, client,
                                                                      method, content_length):
    _registered(client, admin)
    before = db_dump(registry)
    cap = app.config["MAX_CONTENT_LENGTH"]
    # a valid body padded past the cap: cut at the cap, it would still parse (and did, chunked)
    valid = json.dumps(new_node(mac="52:54:00:aa:00:11", hostname="compute11", ip="192.168.0.11")
                       if method == "POST" else {"interface": "eth0"}).encode()
    path = "/api/v1/nodes" if method == "POST" else NODE
    status, body = _raw_request(app, method, path, valid + b" " * cap, admin, content_length=content_length)
    assert status == 413 and body["error"] == "too large" and str(cap) in body["detail"]
    assert db_dump(registry) == before
    # and the same body within the cap goes through that path
    status, _ = _raw_request(app, method, path, valid, admin, content_length=content_length)
    assert status in (200, 201)


# -- PATCH: no lost updates; ETag and If-Match ------------------------------------------------

def test_get_and_patch_carry_the_nodes_version_as_etag(client, admin):
    created = client.post("/api/v1/nodes", json=new_node(), headers=admin)
    assert created.headers["ETag"] == '"1"'
    assert client.get(NODE, headers=admin).headers["ETag"] == '"1"'
    resp = client.patch(NODE, json={"interface": "eth0"}, headers=admin)
    assert resp.status_code == 200 and resp.headers["ETag"] == '"2"'
    assert client.get(NODE, headers=admin).headers["ETag"] == '"2"'


def test_patch_with_a_stale_if_match_is_412_and_changes_nothing(client, admin, registry):
    _registered(client, admin)
    etag = client.get(NODE, headers=admin).headers["ETag"]
    assert client.patch(NODE, json={"interface": "eth0"}, headers=admin).status_code == 200   # someone else
    before = db_dump(registry)
    for stale in (etag, '"99"', 'W/"2"', '"1", "3"'):
        resp = client.patch(NODE, json={"aliases": ["ten"]}, headers={**admin, "If-Match": stale})
        assert resp.status_code == 412, stale
        body = resp.get_json()
        assert body["error"] == "precondition failed" and body["field"] == "If-Match" and body["detail"]
    assert db_dump(registry) == before


def test_patch_with_a_current_if_match_or_star_goes_through(client, admin):
    _registered(client, admin)
    etag = client.get(NODE, headers=admin).headers["ETag"]
    resp = client.patch(NODE, json={"aliases": ["ten"]}, headers={**admin, "If-Match": etag})
    assert resp.status_code == 200 and resp.get_json()["aliases"] == ["ten"]
    resp = client.patch(NODE, json={"aliases": ["dix"]}, headers={**admin, "If-Match": f'"77", {resp.headers["ETag"]}'})
    assert resp.status_code == 200
    resp = client.patch(NODE, json={"aliases": []}, headers={**admin, "If-Match": "*"})
    assert resp.status_code == 200 and resp.get_json()["aliases"] == []


def test_if_match_on_an_unknown_node_is_still_404(client, admin):
    resp = client.patch("/api/v1/nodes/52:54:00:ff:ff:ff", json={"interface": "eth0"},
                        headers={**admin, "If-Match": '"1"'})
    assert resp.status_code == 404


def test_concurrent_patches_of_different_fields_all_survive(app, admin):
    """Threads, each with its own client (and so its own SQLite connection), PATCH one node's
    fields at once, round after round; every round's values must all be there afterwards."""
    client = app.test_client()
    _registered(client, admin)
    fields = {
        "interface": lambda r: f"nic{r % 2}",
        "aliases": lambda r: [f"ten-{r}"],
        "disk_bytes": lambda r: 300 * 10**9 + r,
        "ip": lambda r: f"192.168.0.{100 + r}",
    }
    rounds, errors = 15, []
    start = threading.Barrier(len(fields))

    def patcher(name, value_of):
        mine = app.test_client()
        try:
            for r in range(rounds):
                start.wait(timeout=30)
                resp = mine.patch(NODE, json={name: value_of(r)}, headers=admin)
                if resp.status_code != 200:
                    errors.append((name, r, resp.status_code, resp.get_data()[:200]))
                start.wait(timeout=30)      # every thread's PATCH of this round is done
                if name == "interface":
                    got = mine.get(NODE, headers=admin).get_json()
                    lost = [f for f, v in fields.items() if got.get(f) != v(r)]
                    if lost:
                        errors.append(("lost", r, lost))
        except Exception as e:          # a broken barrier must fail the test, not hang it
            errors.append(repr(e))
            start.abort()
        finally:
            app.extensions["provisioner"].registry.close()

    threads = [threading.Thread(target=patcher, args=item) for item in fields.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == []


def test_a_change_is_merged_into_the_node_as_it_is_inside_the_transaction(app, admin, site, registry):
    """Two connections to one registry (as two worker processes have): while one PATCH is inside
    its transaction, another PATCH of the same node waits, then builds on what the first wrote."""
    from provisioner.registry import nodes
    _registered(app.test_client(), admin)
    other = Registry(registry.path)
    inside, go_on, errors = threading.Event(), threading.Event(), []

    def slow_first():
        def allow(etag):
            inside.set()
            go_on.wait(timeout=30)
            return True
        try:
            nodes.change(site, registry, "52:54:00:aa:00:10", {"aliases": ["ten"]}, if_match=allow)
        except Exception as e:
            errors.append(e)
        finally:
            registry.close()

    first = threading.Thread(target=slow_first)
    first.start()
    assert inside.wait(timeout=30)
    second = threading.Thread(target=lambda: nodes.change(site, other, "52:54:00:aa:00:10",
                                                          {"interface": "eth0"}))
    second.start()
    second.join(timeout=0.5)
    assert second.is_alive()            # waiting for the first transaction, not racing it
    go_on.set()
    first.join(timeout=30)
    second.join(timeout=30)
    assert errors == []
    node = other.get("52:54:00:aa:00:10")
    assert (node.spec.aliases, node.spec.interface, node.version) == (("ten",), "nic0", 3)
    other.close()
