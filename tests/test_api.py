"""Every API path, every MAC form, every error code, the token check, and nothing half-written."""

import threading

import pytest

from tests.conftest import db_dump, new_node

MAC_FORMS = ["52:54:00:aa:00:10", "52-54-00-AA-00-10", "5254.00aa.0010", "01-52-54-00-aa-00-10",
             "52:54:00:AA:00:10"]


def test_list_holds_the_site_nodes(client):
    resp = client.get("/api/v1/nodes")
    assert resp.status_code == 200
    nodes = resp.get_json()["nodes"]
    assert [n["hostname"] for n in nodes] == ["compute1", "compute2", "compute3", "compute4", "controller"]
    assert all(n["state"] == "registered" and n["netboot"] and n["source"] == "site" for n in nodes)
    assert all("install_token" not in n and "token" not in str(n) for n in nodes)


def test_list_filters_by_role_and_state(client, admin):
    assert [n["hostname"] for n in client.get("/api/v1/nodes?role=gateway").get_json()["nodes"]] == ["compute1"]
    assert len(client.get("/api/v1/nodes?role=compute").get_json()["nodes"]) == 4
    assert len(client.get("/api/v1/nodes?state=registered").get_json()["nodes"]) == 5
    assert client.get("/api/v1/nodes?state=installed").get_json()["nodes"] == []
    assert len(client.get("/api/v1/nodes?role=compute&state=registered").get_json()["nodes"]) == 4


@pytest.mark.parametrize("query, field", [("role=storage", "role"), ("state=happy", "state")])
def test_list_refuses_unknown_filters(client, query, field):
    resp = client.get(f"/api/v1/nodes?{query}")
    assert resp.status_code == 400 and resp.get_json()["field"] == field


def test_register_returns_201_and_the_node(client, admin):
    body = new_node(aliases=["c10"], nics=[{"mac": "5254.00aa.0110", "name": "eth0", "mode": "off"}],
                    disk_bytes=300 * 10**9)
    resp = client.post("/api/v1/nodes", json=body, headers=admin)
    assert resp.status_code == 201
    assert resp.headers["Location"] == "/api/v1/nodes/52:54:00:aa:00:10"
    node = resp.get_json()
    assert node["mac"] == "52:54:00:aa:00:10" and node["hostname"] == "compute10"
    assert node["nics"] == [{"mac": "52:54:00:aa:01:10", "name": "nic0", "mode": "off"}]   # the machine's name for eth0
    assert (node["state"], node["netboot"], node["source"]) == ("registered", True, "api")
    assert node["last_event"]["type"] == "registered"
    assert client.get("/api/v1/nodes/52:54:00:aa:00:10").get_json() == node


@pytest.mark.parametrize("form", MAC_FORMS)
def test_every_mac_form_works_in_body_and_path(client, admin, form):
    assert client.post("/api/v1/nodes", json=new_node(mac=form), headers=admin).status_code == 201
    for other in MAC_FORMS:
        resp = client.get(f"/api/v1/nodes/{other}")
        assert resp.status_code == 200 and resp.get_json()["mac"] == "52:54:00:aa:00:10"
        assert client.get(f"/ks/{other}").status_code == 200


def test_a_node_is_found_by_any_of_its_nics(client):
    assert client.get("/api/v1/nodes/52:54:00:0c:01:01").get_json()["hostname"] == "compute1"


@pytest.mark.parametrize("headers", [
    {}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic dXNlcjpwYXNz"},
    {"Authorization": "Bearer"}, {"Authorization": "token"},
])
def test_writes_without_the_admin_token_are_401_and_change_nothing(client, registry, headers):
    before = db_dump(registry)
    for method, path, body in [
        ("post", "/api/v1/nodes", new_node()),
        ("patch", "/api/v1/nodes/52:54:00:0c:00:02", {"ip": "192.168.0.50"}),
        ("delete", "/api/v1/nodes/52:54:00:0c:00:02", None),
    ]:
        resp = getattr(client, method)(path, json=body, headers=headers)
        assert resp.status_code == 401
        assert resp.get_json()["error"] == "unauthorized"
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    assert db_dump(registry) == before


@pytest.mark.parametrize("body, field", [
    (new_node(mac="52:54:00:aa:00"), "mac"),
    (new_node(mac="ff:ff:ff:ff:ff:ff"), "mac"),
    (new_node(mac=None), "mac"),
    (new_node(hostname="bad_name"), "hostname"),
    (new_node(hostname="-lead"), "hostname"),
    (new_node(hostname="a" * 64), "hostname"),
    (new_node(ip="10.0.0.7"), "ip"),
    (new_node(ip="192.168.0.0"), "ip"),
    (new_node(ip="192.168.0.1"), "ip"),
    (new_node(ip="not-an-ip"), "ip"),
    (new_node(roles=[]), "roles"),
    (new_node(roles=["storage"]), "roles"),
    (new_node(roles=["gateway"]), "roles"),
    (new_node(roles=["compute", "controller"]), "roles"),
    (new_node(roles="compute"), "roles"),
    (new_node(interface="has space"), "interface"),
    (new_node(disk_bytes=100 * 10**9), "disk_bytes"),
    (new_node(disk_bytes=-1), "disk_bytes"),
    (new_node(nics=[{"mac": "52:54:00:aa:01:10", "name": "eth0", "mode": "bridge"}]), "nics"),
    (new_node(nics=[{"mac": "52:54:00:aa:00:10", "name": "eth0"}]), "nics"),
    (new_node(colour="blue"), "colour"),
    ({k: v for k, v in new_node().items() if k != "ip"}, "ip"),
])
def test_invalid_fields_are_400_naming_the_field_and_change_nothing(client, admin, registry, body, field):
    before = db_dump(registry)
    resp = client.post("/api/v1/nodes", json=body, headers=admin)
    assert resp.status_code == 400, resp.get_json()
    err = resp.get_json()
    assert err["error"] == "invalid" and err["field"] == field and err["detail"]
    assert db_dump(registry) == before


def test_the_layout_shortfall_is_in_the_message(client, admin):
    err = client.post("/api/v1/nodes", json=new_node(disk_bytes=100 * 10**9), headers=admin).get_json()
    assert "sda3 (vg_gluster)" in err["detail"] and "short by 143108 MiB" in err["detail"]


@pytest.mark.parametrize("data, ctype", [("not json", "application/json"), ("[1, 2]", "application/json"),
                                         ("", "application/json"), ('"x"', "text/plain")])
def test_bodies_that_are_not_objects_are_400(client, admin, registry, data, ctype):
    before = db_dump(registry)
    resp = client.post("/api/v1/nodes", data=data, headers={**admin, "Content-Type": ctype})
    assert resp.status_code == 400 and resp.get_json()["error"] == "invalid"
    assert db_dump(registry) == before


def test_an_oversized_body_is_413_json(client, admin):
    resp = client.post("/api/v1/nodes", data="x" * (2 * 1024 * 1024), headers=admin)
    assert resp.status_code == 413 and resp.get_json()["error"]


@pytest.mark.parametrize("over, field", [
    ({"mac": "52-54-00-0C-00-03"}, "mac"),          # compute3's install NIC
    ({"nics": [{"mac": "52:54:00:0c:01:01", "name": "eth0"}]}, "nics"),   # compute1's public NIC
    ({"mac": "52:54:00:0c:01:01"}, "mac"),
    ({"hostname": "compute3"}, "hostname"),
    ({"hostname": "gateway"}, "hostname"),          # compute1's alias
    ({"aliases": ["controller"]}, "aliases"),
    ({"ip": "192.168.0.3"}, "ip"),
])
def test_duplicates_are_409_naming_the_field_and_change_nothing(client, admin, registry, over, field):
    before = db_dump(registry)
    resp = client.post("/api/v1/nodes", json=new_node(**over), headers=admin)
    assert resp.status_code == 409
    err = resp.get_json()
    assert err["error"] == "conflict" and err["field"] == field and "already belongs to" in err["detail"]
    assert db_dump(registry) == before


def test_hostnames_are_unique_whatever_their_case(client, admin):
    resp = client.post("/api/v1/nodes", json=new_node(hostname="COMPUTE3"), headers=admin)
    assert resp.status_code == 409


def test_get_unknown_is_404_and_malformed_is_400(client):
    resp = client.get("/api/v1/nodes/52:54:00:ff:ff:ff")
    assert resp.status_code == 404 and resp.get_json()["error"] == "not found"
    resp = client.get("/api/v1/nodes/nonsense")
    assert resp.status_code == 400 and resp.get_json()["field"] == "mac"
    assert client.get("/api/v1/nodes/52:54:00:ff:ff:ff/events").status_code == 404


def test_patch_changes_only_what_it_names(client, admin):
    client.post("/api/v1/nodes", json=new_node(), headers=admin)
    resp = client.patch("/api/v1/nodes/5254.00aa.0010", json={"ip": "192.168.0.50", "aliases": ["ten"]},
                        headers=admin)
    assert resp.status_code == 200
    node = resp.get_json()
    assert (node["ip"], node["aliases"], node["hostname"], node["roles"]) == (
        "192.168.0.50", ["ten"], "compute10", ["compute"])
    assert node["last_event"]["type"] == "updated"
    assert node["last_event"]["detail"] == {"changed": ["ip", "aliases"]}
    ks = client.get("/ks/52:54:00:aa:00:10").get_data(as_text=True)
    assert "--ip=192.168.0.50" in ks
    assert "192.168.0.50 compute10.cluster.local compute10 ten" in client.get("/hosts").get_data(as_text=True)


def test_patch_can_move_the_install_nic(client, admin):
    client.post("/api/v1/nodes", json=new_node(), headers=admin)
    resp = client.patch("/api/v1/nodes/52:54:00:aa:00:10", json={"mac": "52:54:00:aa:00:99"}, headers=admin)
    assert resp.status_code == 200 and resp.get_json()["mac"] == "52:54:00:aa:00:99"
    assert client.get("/api/v1/nodes/52:54:00:aa:00:10").status_code == 404
    assert client.get("/api/v1/nodes/52:54:00:aa:00:99").status_code == 200


@pytest.mark.parametrize("body, status, field", [
    ({"ip": "192.168.0.3"}, 409, "ip"),
    ({"hostname": "controller"}, 409, "hostname"),
    ({"roles": ["gateway"]}, 400, "roles"),
    ({"ip": "1.2.3.4"}, 400, "ip"),
    ({"state": "installed"}, 400, "state"),
    ({"install_token": "x"}, 400, "install_token"),
    ({}, 400, None),
    ([], 400, None),
])
def test_bad_patches_are_refused_and_change_nothing(client, admin, registry, body, status, field):
    client.post("/api/v1/nodes", json=new_node(), headers=admin)
    before = db_dump(registry)
    resp = client.patch("/api/v1/nodes/52:54:00:aa:00:10", json=body, headers=admin)
    assert resp.status_code == status
    assert resp.get_json().get("field") == field
    assert db_dump(registry) == before


def test_patch_and_delete_of_unknown_nodes_are_404(client, admin):
    assert client.patch("/api/v1/nodes/52:54:00:ff:ff:ff", json={"ip": "192.168.0.60"}, headers=admin).status_code == 404
    assert client.delete("/api/v1/nodes/52:54:00:ff:ff:ff", headers=admin).status_code == 404


def test_site_nodes_are_changed_in_the_site_file_not_the_api(client, admin, registry):
    before = db_dump(registry)
    for resp in (client.patch("/api/v1/nodes/52:54:00:0c:00:02", json={"ip": "192.168.0.60"}, headers=admin),
                 client.delete("/api/v1/nodes/52:54:00:0c:00:02", headers=admin)):
        assert resp.status_code == 409 and "site file" in resp.get_json()["detail"]
    assert db_dump(registry) == before


def test_delete_removes_the_node_and_keeps_its_history(client, admin):
    client.post("/api/v1/nodes", json=new_node(), headers=admin)
    resp = client.delete("/api/v1/nodes/52-54-00-aa-00-10", headers=admin)
    assert resp.status_code == 204 and resp.data == b""
    assert client.get("/api/v1/nodes/52:54:00:aa:00:10").status_code == 404
    assert client.get("/ks/52:54:00:aa:00:10").status_code == 404
    # the address and name are free again, and the old history is still there
    assert client.post("/api/v1/nodes", json=new_node(), headers=admin).status_code == 201
    types = [e["type"] for e in client.get("/api/v1/nodes/52:54:00:aa:00:10/events").get_json()["events"]]
    assert types == ["registered", "removed", "registered"]


def test_events_are_listed_oldest_first(client, admin):
    client.post("/api/v1/nodes", json=new_node(), headers=admin)
    client.patch("/api/v1/nodes/52:54:00:aa:00:10", json={"ip": "192.168.0.51"}, headers=admin)
    events = client.get("/api/v1/nodes/52:54:00:aa:00:10/events").get_json()["events"]
    assert [e["type"] for e in events] == ["registered", "updated"]
    assert events[0]["id"] < events[1]["id"] and events[0]["at"] <= events[1]["at"]


def test_kickstart_for_unknown_mac_is_404_and_garbage_is_400(client):
    assert client.get("/ks/52:54:00:ff:ff:ff").status_code == 404
    assert client.get("/ks/not-a-mac").status_code == 400
    assert client.get("/ks/..%2F..%2Fetc%2Fpasswd").status_code in (400, 404)


def test_unknown_api_paths_and_methods_answer_json(client):
    resp = client.get("/api/v1/nope")
    assert resp.status_code == 404 and resp.get_json()["error"] == "not found"
    resp = client.put("/api/v1/nodes")
    assert resp.status_code == 405 and resp.get_json()["error"]


def test_concurrent_registrations_of_one_ip_let_exactly_one_in(app, admin):
    results = []

    def register(i):
        c = app.test_client()
        body = new_node(mac=f"52:54:00:bb:00:{i:02x}", hostname=f"race{i}", ip="192.168.0.77")
        results.append(c.post("/api/v1/nodes", json=body, headers=admin).status_code)

    threads = [threading.Thread(target=register, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [201] + [409] * 11
