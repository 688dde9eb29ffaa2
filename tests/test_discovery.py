"""Discovery: what an unknown MAC is told (off: local boot; on: the inspection ramdisk, for
pxelinux, GRUB and iPXE), the anonymous inventory report and its refusals, enrolling a
discovered machine from its inventory, and the site's rules that enroll on their own.
The real thing (QEMU booting the ramdisk through the service) is tests/test_discovery_e2e.py."""

import copy
import json
import logging
import sqlite3
from dataclasses import replace
from importlib import resources

import pytest
import yaml

from provisioner.boot.dhcp import dnsmasq_config
from provisioner.config import ConfigError, load_site, parse_site
from provisioner.registry.db import Registry
from tests.conftest import REPORT_COMPUTE_DISK, db_dump, discovery_on, inventory

MAC = "52:54:00:dd:00:01"
ENROLL = {"hostname": "compute10", "ip": "192.168.0.10", "roles": ["compute"]}


@pytest.fixture
def ramdisk(state_dir, app):
    d = state_dir / "inspect"
    d.mkdir(parents=True)
    (d / "vmlinuz").write_bytes(b"KERNEL")
    (d / "initrd.img").write_bytes(b"INITRD")
    return d


def _discover(client, mac=MAC, body=None, **kw):
    return client.post(f"/discover/{mac}", json=inventory(mac) if body is None else body, **kw)


# -- the boot decision ------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/pxelinux.cfg/01-52-54-00-dd-00-01", "/grub/grub.cfg-01-52:54:00:dd:00:01",
                                  "/ipxe/52-54-00-dd-00-01"])
def test_discovery_off_an_unknown_mac_boots_from_its_disk(client, path, caplog):
    caplog.set_level(logging.INFO, "provisioner.boot.pxe")
    text = client.get(path).get_data(as_text=True)
    assert "local: not registered, discovery off" in text
    assert "inspect" not in text.replace("# local", "") and "discover" not in text.split("\n", 2)[2]
    assert f"boot http {MAC}: asked {path}, answered local: not registered, discovery off" in caplog.text


def test_discovery_on_an_unknown_mac_gets_the_inspection_ramdisk(client, app, ramdisk, caplog):
    caplog.set_level(logging.INFO, "provisioner.boot.pxe")
    site = discovery_on(app)
    report = f"provisioner.report={site.boot_url}/discover/{MAC} provisioner.mac={MAC}"
    pxelinux = client.get("/pxelinux.cfg/01-52-54-00-dd-00-01").get_data(as_text=True)
    assert "DEFAULT inspect" in pxelinux
    assert f"KERNEL {site.boot_url}/boot/inspect/vmlinuz" in pxelinux
    assert f"APPEND initrd={site.boot_url}/boot/inspect/initrd.img {report} " in pxelinux
    assert "console=ttyS0,115200n8" in pxelinux and "inst.ks" not in pxelinux
    ipxe = client.get("/ipxe/52-54-00-dd-00-01").get_data(as_text=True)
    assert f"kernel {site.boot_url}/boot/inspect/vmlinuz initrd=initrd.img {report}" in ipxe
    assert f"initrd --name initrd.img {site.boot_url}/boot/inspect/initrd.img" in ipxe
    grub = client.get("/grub/grub.cfg-01-52-54-00-dd-00-01").get_data(as_text=True)
    # the boot port is not 80: GRUB fetches over TFTP, where the same path is served
    assert f"linux /boot/inspect/vmlinuz {report}" in grub and "initrd /boot/inspect/initrd.img" in grub
    assert f"boot http {MAC}: asked /pxelinux.cfg/01-52-54-00-dd-00-01, answered inspect: not registered, " \
           "discovery on" in caplog.text
    # the files, over HTTP and TFTP
    with client.get("/boot/inspect/vmlinuz") as resp:
        assert resp.data == b"KERNEL"
    boot = app.extensions["provisioner"].boot
    assert boot.tftp_resolve("boot/inspect/initrd.img", ("192.168.0.9", 1000)).path == ramdisk / "initrd.img"
    # a registered node is not inspected: compute2 installs (armed), as before
    assert "DEFAULT install" in client.get("/pxelinux.cfg/01-52-54-00-0c-00-02").get_data(as_text=True)
    # discovered already: inspected again, and the log says so
    assert _discover(client).status_code == 200
    assert "answered inspect: discovered, not enrolled: inspecting again" in \
        (client.get("/ipxe/52-54-00-dd-00-01") and caplog.text)


def test_discovery_on_without_a_ramdisk_boots_from_the_disk_and_says_why(client, app, caplog):
    caplog.set_level(logging.INFO, "provisioner.boot.pxe")
    discovery_on(app)
    text = client.get("/pxelinux.cfg/01-52-54-00-dd-00-01").get_data(as_text=True)
    assert "DEFAULT local" in text and "LOCALBOOT 0" in text
    assert "answered local: not registered, discovery on, but there is no inspection ramdisk " \
           "(provisioner bootfiles inspect)" in caplog.text


# -- the report -------------------------------------------------------------------------------

def test_a_report_makes_a_discovered_node_with_its_inventory(client, app, registry):
    assert _discover(client).status_code == 404       # discovery off: nothing recorded
    assert registry.discovered() == []
    discovery_on(app)
    resp = _discover(client)
    assert resp.status_code == 200 and resp.get_json() == {"mac": MAC, "state": "discovered"}
    listed = client.get("/api/v1/nodes?state=discovered").get_json()["nodes"]
    assert [n["mac"] for n in listed] == [MAC]
    node = listed[0]
    assert node["state"] == "discovered" and node["hostname"] is None and node["netboot"] is False
    assert node["interface"] == "eth0" and node["inventory"]["disks"][0] == \
        {"name": "sda", "bytes": REPORT_COMPUTE_DISK, "model": "WDC WD2500AAKS"}
    assert node["inventory"]["system"] == {"vendor": "Dell Inc.", "model": "OptiPlex 755", "serial": "ABC1234"}
    # in the unfiltered listing too, after the registered nodes; not in a role's
    assert client.get("/api/v1/nodes").get_json()["nodes"][-1]["mac"] == MAC
    assert MAC not in str(client.get("/api/v1/nodes?role=compute").get_json())
    assert client.get(f"/api/v1/nodes/{MAC}").get_json()["state"] == "discovered"
    # found by its other NIC too
    assert client.get("/api/v1/nodes/52:54:01:dd:00:01").get_json()["mac"] == MAC
    events = client.get(f"/api/v1/nodes/{MAC}/events").get_json()["events"]
    assert [e["type"] for e in events] == ["discovered"]


def test_repeated_reports_replace_the_inventory_without_new_events(client, app, registry):
    discovery_on(app)
    for cpus in (2, 4, 8, 16):
        assert _discover(client, body=inventory(MAC, cpus=cpus)).status_code == 200
    found = registry.get_discovered(MAC)
    assert found.inventory["cpus"] == 16 and found.reports == 4
    assert [e.type for e in registry.events(MAC)] == ["discovered"]
    # the same machine booted from its other NIC: one record, under the MAC it booted from now
    other = "52:54:01:dd:00:01"
    body = inventory(MAC)
    body["boot_mac"] = other
    assert _discover(client, mac=other, body=body).status_code == 200
    assert [d.mac for d in registry.discovered()] == [other]


def _hostile_bodies():
    good = inventory(MAC)

    def change(**kw):
        b = copy.deepcopy(good)
        b.update(kw)
        return b

    def nic(**kw):
        b = copy.deepcopy(good)
        b["nics"][1].update(kw)
        return b
    deep = b"[" * 30_000 + b"]" * 30_000
    return [
        (413, b"{" + b" " * (64 * 1024) + b"}"),
        (400, b"{not json"),
        (400, b""),
        (400, deep),
        (400, json.dumps([good]).encode()),
        (400, json.dumps(change(colour="blue")).encode()),
        (400, json.dumps({k: v for k, v in good.items() if k != "disks"}).encode()),
        (400, json.dumps(change(cpus=0)).encode()),
        (400, json.dumps(change(cpus=True)).encode()),
        (400, json.dumps(change(memory_bytes=2**63)).encode()),
        (400, json.dumps(change(virt="yes")).encode()),
        (400, json.dumps(change(boot_mac="52:54:00:dd:00:09")).encode()),
        (400, json.dumps(change(nics=good["nics"][1:])).encode()),       # the NIC it booted from is missing
        (400, json.dumps(change(nics=good["nics"] * 40)).encode()),
        (400, json.dumps(nic(mac="ff:ff:ff:ff:ff:ff")).encode()),
        (400, json.dumps(nic(name="../../etc")).encode()),
        (400, json.dumps(nic(name="eth0")).encode()),                    # two NICs named alike
        (400, json.dumps(nic(link="up")).encode()),
        (400, json.dumps(nic(extra=1)).encode()),
        (400, json.dumps(change(disks=[{"name": "sda", "bytes": -1, "model": "x"}])).encode()),
        (400, json.dumps(change(disks=[{"name": "sda; rm", "bytes": 1, "model": "x"}])).encode()),
        (400, json.dumps(change(system={"vendor": "x" * 129, "model": "m", "serial": "s"})).encode()),
        (400, json.dumps(change(system={"vendor": "bell\x07", "model": "m", "serial": "s"})).encode()),
        (400, json.dumps(change(firmware="coreboot")).encode()),
        (409, json.dumps(nic(mac="52:54:00:0c:00:01")).encode()),       # a registered node's NIC
    ]


@pytest.mark.parametrize("status, body", _hostile_bodies())
def test_hostile_reports_are_refused_and_change_nothing(client, app, registry, status, body):
    discovery_on(app)
    before = db_dump(registry)
    resp = client.post(f"/discover/{MAC}", data=body, headers={"Content-Type": "application/json"})
    assert resp.status_code == status, resp.data
    assert resp.get_json()["detail"]
    assert db_dump(registry) == before


def test_a_report_cannot_touch_a_registered_node_or_pass_the_cap(client, app, registry):
    discovery_on(app, max_nodes=2)
    before = db_dump(registry)
    for mac in ("52:54:00:0c:00:02", "52-54-00-0C-00-02", "zz", "01-52-54-00-0c-00-02"):
        resp = _discover(client, mac=mac, body=inventory("52:54:00:0c:00:02"))
        assert resp.status_code in (400, 409), mac
    assert db_dump(registry) == before
    assert _discover(client, mac="52:54:00:dd:00:01").status_code == 200
    assert _discover(client, mac="52:54:00:dd:00:02").status_code == 200
    full = db_dump(registry)
    resp = _discover(client, mac="52:54:00:dd:00:03")
    assert resp.status_code == 507 and "discovery.max_nodes" in resp.get_json()["detail"]
    assert db_dump(registry) == full
    # a machine held already may still report again; one removed makes room
    assert _discover(client, mac="52:54:00:dd:00:02", body=inventory("52:54:00:dd:00:02", cpus=8)).status_code == 200
    admin = {"Authorization": f"Bearer {app.config['CREDENTIALS'].admin_token}"}
    assert client.delete("/api/v1/nodes/52:54:00:dd:00:01", headers=admin).status_code == 204
    assert _discover(client, mac="52:54:00:dd:00:03").status_code == 200


# -- enroll ------------------------------------------------------------------------------------

def test_enroll_registers_and_arms_a_discovered_machine_from_its_inventory(client, app, registry, admin, ramdisk):
    discovery_on(app)
    _discover(client)
    resp = client.post(f"/api/v1/nodes/{MAC}/enroll", json=ENROLL, headers=admin)
    assert resp.status_code == 200, resp.data
    node = resp.get_json()
    assert node["state"] == "registered" and node["netboot"] is True and node["hostname"] == "compute10"
    assert node["disk_bytes"] == REPORT_COMPUTE_DISK            # sda, the disk layout compute installs to
    assert node["interface"] == "nic0"                          # the NIC it booted from (eth0 in the ramdisk)
    assert node["nics"] == [{"mac": "52:54:01:dd:00:01", "name": "nic1", "mode": "off"}]
    assert node["firmware"] == "bios" and node["inventory"]["cpus"] == 4
    assert registry.discovered() == []
    assert [e.type for e in registry.events(MAC)] == ["discovered", "enrolled"]
    # it installs now, and its kickstart names its NICs
    assert "DEFAULT install" in client.get("/pxelinux.cfg/01-52-54-00-dd-00-01").get_data(as_text=True)
    assert "ifname=nic1:52:54:01:dd:00:01" in client.get("/ipxe/52-54-00-dd-00-01").get_data(as_text=True)
    # and a report under its MAC cannot touch it
    assert _discover(client).status_code == 409


def test_enroll_takes_the_interface_and_nics_given(client, app, admin):
    discovery_on(app)
    _discover(client)
    body = {**ENROLL, "interface": "eth1", "nics": [{"mac": "52:54:01:dd:00:01", "name": "eth0", "mode": "dhcp"}]}
    node = client.post(f"/api/v1/nodes/{MAC}/enroll", json=body, headers=admin).get_json()
    assert node["interface"] == "nic1" and node["nics"] == [{"mac": "52:54:01:dd:00:01", "name": "nic0", "mode": "dhcp"}]


@pytest.mark.parametrize("inv, body, status, words", [
    (None, ENROLL, 404, "no discovered machine has MAC"),
    (inventory(MAC), {**ENROLL, "ip": "192.168.0.2"}, 409, "192.168.0.2 already belongs to compute2"),
    (inventory(MAC), {**ENROLL, "hostname": "compute1"}, 409, "already belongs to compute1"),
    (inventory(MAC), {**ENROLL, "disk_bytes": 10**12}, 400, "disk_bytes: unknown key"),
    (inventory(MAC), {**ENROLL, "mac": MAC}, 400, "mac: unknown key"),
    (inventory(MAC), {"hostname": "compute10", "roles": ["compute"]}, 400, "ip: required"),
    (inventory(MAC), {**ENROLL, "roles": ["storage"]}, 400, "unknown role 'storage'"),
    (inventory(MAC), [ENROLL], 400, "must be a JSON object"),
    # the fit check uses the size inspection measured of sda, the disk the layout installs to
    (inventory(MAC, disk_bytes=10**9), ENROLL, 400, "layout compute needs 238475 MiB"),
    (inventory(MAC, disks=[{"name": "vda", "bytes": REPORT_COMPUTE_DISK, "model": "virtio"}]), ENROLL, 409,
     "installs to sda, which inspection did not find"),
    (inventory(MAC, firmware="uefi"), ENROLL, 400, "disk_bytes"),           # Table 1 + an ESP do not fit 250 GB
])
def test_enroll_errors_say_why_and_change_nothing(client, app, registry, admin, inv, body, status, words):
    discovery_on(app)
    if inv is not None:
        assert _discover(client, body=inv).status_code == 200
    before = db_dump(registry)
    resp = client.post(f"/api/v1/nodes/{MAC}/enroll", json=body, headers=admin)
    assert resp.status_code == status, resp.data
    assert words in resp.get_json()["detail"], resp.get_json()
    assert db_dump(registry) == before


def test_enrolling_a_registered_node_is_a_conflict(client, admin):
    resp = client.post("/api/v1/nodes/52:54:00:0c:00:02/enroll", json=ENROLL, headers=admin)
    assert resp.status_code == 409 and "registered already (compute2" in resp.get_json()["detail"]


def test_registering_a_discovered_machine_by_hand_drops_its_record(client, app, registry, admin):
    discovery_on(app)
    _discover(client)
    body = {**ENROLL, "mac": "52:54:01:dd:00:01", "disk_bytes": REPORT_COMPUTE_DISK}   # by its other NIC
    assert client.post("/api/v1/nodes", json=body, headers=admin).status_code == 201
    assert registry.discovered() == []


# -- site rules --------------------------------------------------------------------------------

def _site_with(discovery: dict):
    raw = yaml.safe_load(resources.files("provisioner").joinpath("site.yaml").read_text())
    raw["discovery"] = discovery
    return parse_site(raw)


RULES = {"enabled": True, "rules": [
    {"match": {"disk_bytes_min": 240_000_000_000, "virt": True},
     "roles": ["compute"],
     "nodes": [{"hostname": f"compute{i}", "ip": f"192.168.0.{10 + i}"} for i in range(5, 9)]},
]}


def test_site_rules_enroll_the_first_matching_machines(tmp_path, client, app, registry):
    ctx = app.extensions["provisioner"]
    ctx.site = replace(_site_with(RULES), kickstart_node_address_only=False)
    macs = [f"52:54:00:dd:00:{i:02x}" for i in range(1, 7)]
    answers = [_discover(client, mac=m).get_json() for m in macs[:2]]
    # too small a disk, or no virtualization: stays discovered
    assert _discover(client, mac=macs[2], body=inventory(macs[2], disk_bytes=80_026_361_856)).get_json()["state"] \
        == "discovered"
    assert _discover(client, mac=macs[3], body=inventory(macs[3], virt="")).get_json()["state"] == "discovered"
    answers += [_discover(client, mac=m).get_json() for m in macs[4:]]
    assert [(a["state"], a.get("hostname")) for a in answers] == [
        ("registered", "compute5"), ("registered", "compute6"), ("registered", "compute7"), ("registered", "compute8")]
    node = registry.get(macs[0])
    assert node.netboot and node.spec.ip == "192.168.0.15" and node.spec.disk_bytes == REPORT_COMPUTE_DISK
    assert registry.events(macs[0])[-1].detail == {"hostname": "compute5", "ip": "192.168.0.15",
                                                   "roles": ["compute"], "rule": 0}
    # every slot taken: the next match stays discovered
    extra = "52:54:00:dd:00:99"
    assert _discover(client, mac=extra).get_json()["state"] == "discovered"
    assert sorted(d.mac for d in registry.discovered()) == sorted([macs[2], macs[3], extra])


@pytest.mark.parametrize("discovery, where", [
    ({"enabled": "yes"}, r"^discovery\.enabled: must be true or false"),
    ({"colour": 1}, r"^discovery\.colour: unknown key"),
    ({"max_nodes": 0}, r"^discovery\.max_nodes: 0 is not"),
    ({"dhcp_pool": {"start": "192.168.0.200", "end": "192.168.0.100"}}, r"^discovery\.dhcp_pool: start"),
    ({"dhcp_pool": {"start": "192.168.0.200", "end": "192.168.1.10"}}, r"^discovery\.dhcp_pool\.end: .* not inside"),
    ({"dhcp_pool": {"start": "192.168.0.240", "end": "192.168.0.254"}}, r"holds the service's address 192\.168\.0\.254"),
    ({"dhcp_pool": {"start": "192.168.0.1", "end": "192.168.0.9"}}, r"network\.gateway 192\.168\.0\.1"),
    ({"dhcp_pool": {"start": "192.168.0.2", "end": "192.168.0.9"}}, r"^nodes\[\d\]\.ip: 192\.168\.0\.\d is inside discovery"),
    ({"rules": [{"roles": ["compute"], "nodes": [], "match": {}}]}, r"^discovery\.rules\[0\]\.nodes: a rule needs"),
    ({"rules": [{"roles": ["compute"], "nodes": [{"hostname": "x", "ip": "192.168.0.50"}], "match": {"disk": 1}}]},
     r"^discovery\.rules\[0\]\.match\.disk: unknown key"),
    ({"rules": [{"roles": ["compute"], "nodes": [{"hostname": "x", "ip": "192.168.0.50"}],
                 "match": {"cpus_min": "2"}}]}, r"^discovery\.rules\[0\]\.match\.cpus_min: '2' is not"),
    ({"rules": [{"roles": ["storage"], "nodes": [{"hostname": "x", "ip": "192.168.0.50"}]}]},
     r"^discovery\.rules\[0\]\.roles\[0\]: unknown role"),
    ({"rules": [{"roles": ["compute"], "nodes": [{"hostname": "compute2", "ip": "192.168.0.50"}]}]},
     r"^discovery\.rules\[0\]\.nodes\[0\]\.hostname: compute2 is already used by compute2"),
    ({"rules": [{"roles": ["compute"], "nodes": [{"hostname": "x", "ip": "192.168.0.2"}]}]},
     r"^discovery\.rules\[0\]\.nodes\[0\]\.ip: 192\.168\.0\.2 is already used"),
    ({"enabled": True, "rules": [{"roles": ["compute"], "nodes": [{"hostname": "x", "ip": "192.168.0.230"}]}]},
     r"^discovery\.rules\[0\]\.nodes\[0\]\.ip: 192\.168\.0\.230 is inside discovery\.dhcp_pool"),
])
def test_bad_discovery_settings_name_the_key(discovery, where):
    with pytest.raises(ConfigError, match=where):
        _site_with(discovery)


def test_discovery_is_off_by_default_and_its_pool_goes_to_dnsmasq():
    assert load_site().discovery.enabled is False
    assert "192.168.0.222" not in dnsmasq_config(load_site(), [])
    site = _site_with({"enabled": True})
    assert site.discovery.dhcp_pool == ("192.168.0.222", "192.168.0.253") and site.discovery.max_nodes == 256
    conf = dnsmasq_config(site, [])
    assert "dhcp-range=192.168.0.222,192.168.0.253,255.255.255.0,10m" in conf
    assert "dhcp-range=192.168.0.0,static,255.255.255.0,12h" in conf
    assert "192.168.0.222" not in dnsmasq_config(site, [], proxy=True)


# -- an older registry ---------------------------------------------------------------------------

def test_an_older_registry_is_migrated(tmp_path, site):
    path = tmp_path / "registry.sqlite3"
    reg = Registry(path)
    reg.sync_site(site)
    reg.close()
    db = sqlite3.connect(path)
    db.executescript("DROP TABLE discovered_macs; DROP TABLE discovered; ALTER TABLE nodes DROP COLUMN inventory;")
    db.close()
    reg = Registry(path)
    assert reg.get("52:54:00:0c:00:02").inventory is None
    found, new = reg.discover(MAC, {**inventory(MAC)}, 10)
    assert new and found.inventory["cpus"] == 4


# -- through the real boot server -----------------------------------------------------------------

def test_the_boot_server_answers_reports_and_refusals_from_the_same_table(app, registry):
    import requests

    from provisioner.boot.bootsrv import BootServer
    discovery_on(app, max_nodes=1)
    node_http = app.extensions["provisioner"].node_http
    server = BootServer(node_http.answer, "127.0.0.1", 0, after_round=node_http.after_round,
                        admit=node_http.admit).start()
    url = f"http://127.0.0.1:{server.port}/discover"
    try:
        before = db_dump(registry)
        assert requests.post(f"{url}/{MAC}", data=b"{" + b" " * 70_000 + b"}", timeout=10).status_code == 413
        assert requests.post(f"{url}/{MAC}", data=b"[", timeout=10).status_code == 400
        assert requests.post(f"{url}/52:54:00:0c:00:02", json=inventory("52:54:00:0c:00:02"),
                             timeout=10).status_code == 409
        assert requests.get(f"{url}/{MAC}", timeout=10).status_code == 405
        assert db_dump(registry) == before
        r = requests.post(f"{url}/{MAC}", json=inventory(), timeout=10)
        assert r.status_code == 200 and r.json() == {"mac": MAC, "state": "discovered"}
        assert requests.post(f"{url}/52:54:00:dd:00:02", json=inventory("52:54:00:dd:00:02"),
                             timeout=10).status_code == 507
    finally:
        server.stop()
    assert [d.mac for d in registry.discovered()] == [MAC]


def test_enroll_is_on_disk_before_it_is_answered(client, app, registry, admin):
    """Enroll arms netboot: its commit is fsynced (synchronous=FULL), as rebuild's is."""
    discovery_on(app)
    _discover(client)
    seen = []
    db = registry._conn()
    db.set_trace_callback(seen.append)
    try:
        assert client.post(f"/api/v1/nodes/{MAC}/enroll", json=ENROLL, headers=admin).status_code == 200
    finally:
        db.set_trace_callback(None)
    assert "PRAGMA synchronous=FULL" in seen and seen.index("PRAGMA synchronous=FULL") < seen.index("COMMIT")


# -- the CLI ---------------------------------------------------------------------------------------

def test_cli_lists_shows_enrolls_and_removes_discovered_machines(tmp_path):
    import subprocess
    import sys
    site = tmp_path / "site.yaml"
    site.write_text(resources.files("provisioner").joinpath("site.yaml").read_text()
                    + "\ndiscovery:\n  enabled: true\n")
    state = tmp_path / "state"
    reg = Registry.in_state_dir(state)
    for mac in (MAC, "52:54:00:dd:00:02"):
        reg.discover(mac, inventory(mac), 10)
    reg.close()

    def run(*args, ok=True):
        proc = subprocess.run([sys.executable, "-m", "provisioner", "--state-dir", str(state), "--site", str(site),
                               *args], capture_output=True, text=True, timeout=120)
        assert (proc.returncode == 0) == ok, proc.stderr
        return proc.stdout if ok else proc.stderr
    listing = run("nodes", "list", "--state", "discovered").splitlines()
    assert len(listing) == 3 and listing[1].split()[:2] == ["-", MAC] and "sda:250GB,sdb:80GB" in listing[1]
    assert json.loads(run("nodes", "show", "52:54:01:dd:00:01"))["inventory"]["system"]["serial"] == "ABC1234"
    out = run("nodes", "enroll", MAC, "--hostname", "compute10", "--ip", "192.168.0.10", "--role", "compute")
    assert out == f"enrolled {MAC} as compute10 (192.168.0.10, nic0, disk {REPORT_COMPUTE_DISK} bytes), " \
                  "armed for install\n"
    assert "registered already" in run("nodes", "enroll", MAC, "--hostname", "compute11", "--ip", "192.168.0.11",
                                       "--role", "compute", ok=False)
    assert "no discovered machine has MAC 52:54:00:dd:00:09" in run(
        "nodes", "enroll", "52:54:00:dd:00:09", "--hostname", "compute11", "--ip", "192.168.0.11", "--role",
        "compute", ok=False)
    assert run("nodes", "rm", "52:54:00:dd:00:02") == "removed discovered machine 52:54:00:dd:00:02\n"
    assert run("nodes", "list", "--state", "discovered").splitlines()[1:] == []
    assert "compute10" in run("nodes", "list", "--state", "registered")


@pytest.mark.skipif(__import__("shutil").which("shellcheck") is None, reason="needs shellcheck")
def test_the_ramdisk_scripts_pass_shellcheck():
    import subprocess

    from provisioner.boot.inspection import DATA
    proc = subprocess.run(["shellcheck", "-s", "sh", str(DATA / "init"), str(DATA / "udhcpc.script")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout
