"""The OpenAPI document matches the real routes and the real responses."""

import re
from dataclasses import replace

import jsonschema
import pytest

from tests.conftest import discovery_on, inventory, new_node


@pytest.fixture
def doc(client):
    resp = client.get("/api/v1/openapi.json")
    assert resp.status_code == 200
    return resp.get_json()


def _flask_routes(app):
    routes = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            routes.add((path, method.lower()))
    return routes


def test_every_route_is_documented_and_every_documented_path_exists(app, doc):
    documented = {(path, m) for path, ops in doc["paths"].items() for m in ops if m != "parameters"}
    assert documented == _flask_routes(app)


def test_the_document_is_valid_json_schema_where_it_declares_schemas(doc):
    jsonschema.Draft202012Validator.check_schema({"$defs": doc["components"]["schemas"]})


def _validator(doc, schema):
    # resolve "#/components/..." references against the document itself
    full = dict(doc)
    full.update(schema)
    return jsonschema.Draft202012Validator(full)


def _check(doc, path, method, resp):
    op = doc["paths"][path][method]
    status = str(resp.status_code)
    assert status in op["responses"], f"{method.upper()} {path} answered undocumented {status}"
    spec = op["responses"][status]
    if "$ref" in spec:
        spec = doc["components"]["responses"][spec["$ref"].split("/")[-1]]
    if "content" not in spec:
        assert not resp.data
        return
    ctype = resp.mimetype
    assert ctype in spec["content"], f"{method.upper()} {path} {status} is {ctype}"
    if ctype == "application/json":
        _validator(doc, spec["content"][ctype]["schema"]).validate(resp.get_json())


def test_real_responses_match_the_documented_ones(client, admin, doc, imported, state_dir, registry, monkeypatch):
    node = "/api/v1/nodes/{mac}"
    power = "/api/v1/nodes/{mac}/power"
    # libvirt's test driver, in this process: its domain "test" is the BMC of a libvirt:// node
    monkeypatch.setenv("PROVISIONER_LIBVIRT_URI", "test:///default")
    lab_bmc = {"url": "libvirt://test", "username": "u", "password": "p"}
    events = "/api/v1/nodes/{mac}/events"
    rebuild = "/api/v1/nodes/{mac}/rebuild"
    enroll = "/api/v1/nodes/{mac}/enroll"
    discover = "/discover/{mac}"
    (state_dir / "bootfiles").mkdir()
    (state_dir / "bootfiles" / "ipxe.efi").write_bytes(b"MZ" + b"\0" * 100)

    def install(mac):
        return {"Authorization": f"Bearer {registry.get(mac).install_token}"}
    firstboot = {}

    def only_to_its_address():
        ctx = client.application.extensions["provisioner"]
        ctx.site = replace(ctx.site, kickstart_node_address_only=True)
    calls = [
        ("/api/v1/nodes", "get", lambda: client.get("/api/v1/nodes")),
        ("/api/v1/nodes", "get", lambda: client.get("/api/v1/nodes?state=bogus")),
        ("/api/v1/nodes", "get", lambda: client.get("/api/v1/nodes", headers={"Authorization": ""})),
        ("/api/v1/barriers/{name}", "get", lambda: client.get("/api/v1/barriers/gluster-bricks",
                                                              headers={"Authorization": ""})),
        ("/api/v1/nodes", "post", lambda: client.post("/api/v1/nodes", json=new_node(), headers=admin)),
        ("/api/v1/nodes", "post", lambda: client.post("/api/v1/nodes", json=new_node(), headers=admin)),
        ("/api/v1/nodes", "post", lambda: client.post("/api/v1/nodes", json=new_node(ip="x"), headers=admin)),
        ("/api/v1/nodes", "post", lambda: client.post("/api/v1/nodes", json=new_node())),
        (node, "get", lambda: client.get("/api/v1/nodes/52:54:00:aa:00:10")),
        (node, "get", lambda: client.get("/api/v1/nodes/52:54:00:aa:00:99")),
        (node, "get", lambda: client.get("/api/v1/nodes/zzz")),
        (node, "patch", lambda: client.patch("/api/v1/nodes/52:54:00:aa:00:10", json={"ip": "192.168.0.11"}, headers=admin)),
        (node, "patch", lambda: client.patch("/api/v1/nodes/52:54:00:aa:00:10", json={"ip": "192.168.0.2"}, headers=admin)),
        (node, "patch", lambda: client.patch("/api/v1/nodes/52:54:00:aa:00:10", json={"ip": "nope"}, headers=admin)),
        (node, "patch", lambda: client.patch("/api/v1/nodes/52:54:00:aa:00:99", json={"ip": "192.168.0.12"}, headers=admin)),
        (node, "patch", lambda: client.patch("/api/v1/nodes/52:54:00:aa:00:10", json={"ip": "192.168.0.12"})),
        (node, "patch", lambda: client.patch("/api/v1/nodes/52:54:00:aa:00:10", json={"ip": "192.168.0.13"},
                                             headers={**admin, "If-Match": '"999"'})),
        (node, "patch", lambda: client.patch("/api/v1/nodes/52:54:00:aa:00:10", data=b"{" + b" " * (1 << 20) + b"}",
                                             headers={**admin, "Content-Type": "application/json"})),
        (events, "get", lambda: client.get("/api/v1/nodes/52:54:00:aa:00:10/events")),
        (events, "get", lambda: client.get("/api/v1/nodes/52:54:00:aa:00:99/events")),
        (events, "get", lambda: client.get("/api/v1/nodes/zzz/events")),
        (node, "delete", lambda: client.delete("/api/v1/nodes/zzz", headers=admin)),
        (node, "delete", lambda: client.delete("/api/v1/nodes/52:54:00:0c:00:01", headers=admin)),
        (node, "delete", lambda: client.delete("/api/v1/nodes/52:54:00:aa:00:10")),
        (node, "delete", lambda: client.delete("/api/v1/nodes/52:54:00:aa:00:10", headers=admin)),
        (node, "delete", lambda: client.delete("/api/v1/nodes/52:54:00:aa:00:10", headers=admin)),
        ("/ks/{mac}", "get", lambda: client.get("/ks/52:54:00:0c:00:01")),
        ("/ks/{mac}", "get", lambda: client.get("/ks/52:54:00:0c:00:99")),
        ("/ks/{mac}", "get", lambda: client.get("/ks/xx")),
        ("/hosts", "get", lambda: client.get("/hosts")),
        ("/api/v1/openapi.json", "get", lambda: client.get("/api/v1/openapi.json")),
        ("/boot.ipxe", "get", lambda: client.get("/boot.ipxe")),
        ("/ipxe/{mac}", "get", lambda: client.get("/ipxe/52-54-00-0c-00-02")),
        ("/ipxe/{mac}", "get", lambda: client.get("/ipxe/nope")),
        ("/pxelinux.cfg/01-{mac}", "get", lambda: client.get("/pxelinux.cfg/01-52-54-00-0c-00-02")),
        ("/pxelinux.cfg/01-{mac}", "get", lambda: client.get("/pxelinux.cfg/01-zz")),
        ("/grub/grub.cfg-01-{mac}", "get", lambda: client.get("/grub/grub.cfg-01-52-54-00-0c-00-02")),
        ("/grub/grub.cfg-01-{mac}", "get", lambda: client.get("/grub/grub.cfg-01-zz")),
        ("/boot/{distro}/{name}", "get", lambda: client.get("/boot/centos-stream-9-x86_64/vmlinuz")),
        ("/boot/{distro}/{name}", "get", lambda: client.get("/boot/centos-stream-9-x86_64/initrd.img",
                                                             headers={"Range": "bytes=0-99"})),
        ("/boot/{distro}/{name}", "get", lambda: client.get("/boot/centos-stream-9-x86_64/other")),
        ("/bootfiles/{name}", "get", lambda: client.get("/bootfiles/ipxe.efi")),
        ("/bootfiles/{name}", "get", lambda: client.get("/bootfiles/../secrets.yaml")),
        (events, "post", lambda: client.post("/api/v1/nodes/52:54:00:0c:00:02/events", json={"type": "installing"},
                                             headers=install("52:54:00:0c:00:02"))),
        (events, "post", lambda: client.post("/api/v1/nodes/52:54:00:0c:00:02/events", json={"type": "bogus"},
                                             headers=install("52:54:00:0c:00:02"))),
        (events, "post", lambda: client.post("/api/v1/nodes/52:54:00:0c:00:02/events", json={"type": "installed"})),
        (events, "post", lambda: client.post("/api/v1/nodes/52:54:00:0c:00:99/events", json={"type": "installed"})),
        (events, "post", lambda: client.post("/api/v1/nodes/zz/events", json={"type": "installed"})),
        (events, "post", lambda: client.post("/api/v1/nodes/52:54:00:0c:00:02/events", json={"type": "installed"},
                                             headers=install("52:54:00:0c:00:02"))),
        ("/ks/{mac}", "get", lambda: client.get("/ks/52:54:00:0c:00:02")),
        (events, "post", lambda: client.post("/api/v1/nodes/52:54:00:0c:00:02/events", json={"type": "failed"},
                                             headers=install("52:54:00:0c:00:02"))),
        (rebuild, "post", lambda: client.post("/api/v1/nodes/52:54:00:0c:00:02/rebuild", headers=admin)),
        (rebuild, "post", lambda: client.post("/api/v1/nodes/52:54:00:0c:00:02/rebuild")),
        (rebuild, "post", lambda: client.post("/api/v1/nodes/52:54:00:0c:00:99/rebuild", headers=admin)),
        (rebuild, "post", lambda: client.post("/api/v1/nodes/zz/rebuild", headers=admin)),
        ("/api/v1/nodes/{mac}/plan", "get", lambda: client.get("/api/v1/nodes/52:54:00:0c:00:03/plan")),
        ("/api/v1/nodes/{mac}/plan", "get", lambda: client.get("/api/v1/nodes/52:54:00:0c:00:03/plan?format=text")),
        ("/api/v1/nodes/{mac}/plan", "get", lambda: client.get("/api/v1/nodes/52:54:00:0c:00:99/plan")),
        ("/api/v1/nodes/{mac}/plan", "get", lambda: client.get("/api/v1/nodes/zz/plan")),
        ("/api/v1/nodes/{mac}/plan", "get", lambda: client.get("/api/v1/nodes/52:54:00:0c:00:03/plan",
                                                               headers={"Authorization": ""})),
        ("/api/v1/nodes/{mac}/config", "get", lambda: client.get("/api/v1/nodes/52:54:00:0c:00:03/config",
                                                                 headers=install("52:54:00:0c:00:03"))),
        ("/api/v1/nodes/{mac}/config", "get", lambda: client.get("/api/v1/nodes/52:54:00:0c:00:03/config")),
        ("/api/v1/nodes/{mac}/config", "get", lambda: client.get("/api/v1/nodes/52:54:00:0c:00:99/config")),
        ("/api/v1/nodes/{mac}/config", "get", lambda: client.get("/api/v1/nodes/zz/config")),
        ("/api/v1/barriers/{name}", "get", lambda: client.get("/api/v1/barriers/gluster-bricks")),
        ("/api/v1/barriers/{name}", "get", lambda: client.get("/api/v1/barriers/nope")),
        ("/hooks.tar.gz", "get", lambda: client.get("/hooks.tar.gz")),
        (events, "post", lambda: client.post("/api/v1/nodes/52:54:00:0c:00:03/events", json={"type": "failed"},
                                             headers=install("52:54:00:0c:00:03"))),
        (events, "post", lambda: client.post("/api/v1/nodes/52:54:00:0c:00:03/events", json={"type": "installed"},
                                             headers=install("52:54:00:0c:00:03"))),     # failed -> installed: 409
        (events, "post", lambda: firstboot.update(
            token=client.post("/api/v1/nodes/52:54:00:0c:00:04/events", json={"type": "installed"},
                              headers=install("52:54:00:0c:00:04")).get_json()["firstboot_token"])
            or client.post("/api/v1/nodes/52:54:00:0c:00:04/events",
                           json={"type": "step", "detail": {"step": "01-network-gateway/03-hosts", "status": "ok"}},
                           headers={"Authorization": f"Bearer {firstboot['token']}"})),
        ("/api/v1/nodes/{mac}/config", "get", lambda: client.get(
            "/api/v1/nodes/52:54:00:0c:00:04/config", headers={"Authorization": f"Bearer {firstboot['token']}"})),
        ("/api/v1/nodes", "post", lambda: client.post("/api/v1/nodes", headers=admin, json=new_node(
            mac="52:54:00:aa:00:20", hostname="compute20", ip="192.168.0.20", bmc=lab_bmc))),
        (power, "post", lambda: client.post("/api/v1/nodes/52:54:00:aa:00:20/power", json={"action": "status"},
                                            headers=admin)),
        (power, "post", lambda: client.post("/api/v1/nodes/52:54:00:aa:00:20/power", json={"action": "dance"},
                                            headers=admin)),
        (power, "post", lambda: client.post("/api/v1/nodes/52:54:00:aa:00:20/power", json={"action": "off"})),
        (power, "post", lambda: client.post("/api/v1/nodes/52:54:00:aa:00:99/power", json={"action": "off"},
                                            headers=admin)),
        (power, "post", lambda: client.post("/api/v1/nodes/52:54:00:0c:00:01/power", json={"action": "off"},
                                            headers=admin)),
        (rebuild, "post", lambda: client.post("/api/v1/nodes/52:54:00:aa:00:20/rebuild", json={"power_cycle": True},
                                              headers=admin)),
        (rebuild, "post", lambda: client.post("/api/v1/nodes/52:54:00:0c:00:01/rebuild", json={"power_cycle": True},
                                              headers=admin)),
        (node, "patch", lambda: client.patch("/api/v1/nodes/52:54:00:aa:00:20", json={"bmc": {"url": "libvirt://gone"}},
                                             headers=admin)),
        (power, "post", lambda: client.post("/api/v1/nodes/52:54:00:aa:00:20/power", json={"action": "status"},
                                            headers=admin)),
        (rebuild, "post", lambda: client.post("/api/v1/nodes/52:54:00:aa:00:20/rebuild", json={"power_cycle": True},
                                              headers=admin)),
        ("/ks/{mac}", "get", lambda: only_to_its_address() or client.get("/ks/52:54:00:0c:00:01")),
        # discovery: off, then on with room for two machines
        (discover, "post", lambda: client.post("/discover/52:54:00:dd:00:01", json=inventory())),
        (discover, "post", lambda: discovery_on(client.application, max_nodes=2) and client.post(
            "/discover/52:54:00:dd:00:01", json=inventory())),
        (discover, "post", lambda: client.post("/discover/52:54:00:dd:00:02", json=inventory("52:54:00:dd:00:02"))),
        (discover, "post", lambda: client.post("/discover/52:54:00:dd:00:03", json=inventory("52:54:00:dd:00:03"))),
        (discover, "post", lambda: client.post("/discover/52:54:00:dd:00:01", json=inventory(cpus="4"))),
        (discover, "post", lambda: client.post("/discover/52:54:00:0c:00:01", json=inventory("52:54:00:0c:00:01"))),
        (discover, "post", lambda: client.post("/discover/52:54:00:dd:00:01", data=b"{" + b" " * 65536 + b"}",
                                               headers={"Content-Type": "application/json"})),
        ("/api/v1/nodes", "get", lambda: client.get("/api/v1/nodes?state=discovered")),
        (node, "get", lambda: client.get("/api/v1/nodes/52:54:00:dd:00:02")),
        (enroll, "post", lambda: client.post("/api/v1/nodes/52:54:00:dd:00:01/enroll", headers=admin, json={
            "hostname": "compute30", "ip": "192.168.0.30", "roles": ["compute"]})),
        (enroll, "post", lambda: client.post("/api/v1/nodes/52:54:00:dd:00:01/enroll", headers=admin, json={
            "hostname": "compute31", "ip": "192.168.0.31", "roles": ["compute"]})),
        (enroll, "post", lambda: client.post("/api/v1/nodes/52:54:00:dd:00:09/enroll", headers=admin, json={
            "hostname": "compute31", "ip": "192.168.0.31", "roles": ["compute"]})),
        (enroll, "post", lambda: client.post("/api/v1/nodes/52:54:00:dd:00:02/enroll", headers=admin, json={
            "hostname": "compute31", "ip": "192.168.0.31", "roles": ["nope"]})),
        (enroll, "post", lambda: client.post("/api/v1/nodes/52:54:00:dd:00:02/enroll", json={
            "hostname": "compute31", "ip": "192.168.0.31", "roles": ["compute"]})),
        (enroll, "post", lambda: client.post("/api/v1/nodes/52:54:00:dd:00:02/enroll", data=b"{" + b" " * (1 << 20) + b"}",
                                             headers={**admin, "Content-Type": "application/json"})),
        (node, "delete", lambda: client.delete("/api/v1/nodes/52:54:00:dd:00:02", headers=admin)),
    ]
    seen = set()
    for path, method, call in calls:
        resp = call()
        _check(doc, path, method, resp)
        seen.add((path, method, resp.status_code))
        resp.close()
    # every documented (path, method, status) was produced by a real request
    documented = {(p, m, int(s)) for p, ops in doc["paths"].items() for m, op in ops.items()
                  if m != "parameters" for s in op["responses"]}
    assert documented == seen


def test_the_documented_request_schemas_accept_what_the_api_accepts(doc):
    schema = {"$ref": "#/components/schemas/NodeInput"}
    _validator(doc, schema).validate(new_node(aliases=["x"], nics=[{"mac": "52:54:00:aa:01:10", "name": "eth0"}],
                                              disk_bytes=10**12))
    with pytest.raises(jsonschema.ValidationError):
        _validator(doc, schema).validate(new_node(colour="blue"))
