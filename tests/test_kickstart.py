"""Every kickstart of the default site, read as the installer reads it (pykickstart, RHEL 9)."""

import http.server
import json
import re
import shutil
import subprocess
import threading

import pytest

from provisioner.credentials import _crypt, load_or_create
from provisioner.render.kscheck import check_kickstart

# Table 1 and Table 2 of the report, number by number (MiB), as the kickstart must declare them.
TABLE1 = {
    "parts": [("/boot", "sda1", "ext4"), ("pv.sda2", "sda2", ""), ("pv.sda3", "sda3", "")],
    "vgs": [("vg_base", ["pv.sda2"]), ("vg_gluster", ["pv.sda3"])],
    "lvs": [("vg_base", "lv_root", "/", 10000, "ext4"), ("vg_base", "lv_swap", "swap", 6000, ""),
            ("vg_base", "lv_home", "/home", 4996, "ext4"),
            ("vg_gluster", "lv_gluster", "/export/gluster", 216972, "xfs")],
    "sfdisk": ["size=500MiB, type=83, bootable", "size=21000MiB, type=8e", "size=216974MiB, type=8e"],
}
TABLE2 = {
    "parts": [("/boot", "sda1", "ext4"), ("pv.sda2", "sda2", ""), ("pv.sda3", "sda3", ""),
              ("pv.sda5", "sda5", "")],
    "vgs": [("nova-volumes", ["pv.sda3"]), ("vg_base", ["pv.sda2"]), ("vg_images", ["pv.sda5"])],
    # lv_images: Table 2 says 28788, which its 28788 MiB sda5 cannot hold (see the NOTE lines)
    "lvs": [("vg_base", "lv_root", "/", 10000, "ext4"), ("vg_base", "lv_swap", "swap", 2000, ""),
            ("vg_base", "lv_home", "/home", 4996, "ext4"),
            ("vg_images", "lv_images", "/var/lib/glance/images", 28784, "ext4")],
    "sfdisk": ["size=500MiB, type=83, bootable", "size=17000MiB, type=8e", "size=30000MiB, type=8e",
               "size=28792MiB, type=5", "size=28788MiB, type=8e"],
}
NODES = {"52:54:00:0c:00:01": TABLE1, "52:54:00:0c:00:02": TABLE1, "52:54:00:0c:00:03": TABLE1,
         "52:54:00:0c:00:04": TABLE1, "52:54:00:0c:00:05": TABLE2}


@pytest.fixture
def kickstarts(client):
    out = {}
    for mac in NODES:
        resp = client.get(f"/ks/{mac}")
        assert resp.status_code == 200 and resp.mimetype == "text/plain"
        out[mac] = resp.get_data(as_text=True)
    return out


def test_every_kickstart_parses_under_rhel9_with_no_error_and_no_warning(kickstarts):
    for mac, text in kickstarts.items():
        result = check_kickstart(text)
        assert result.errors == [] and result.warnings == [], mac


def test_the_checker_does_report_errors_and_warnings(kickstarts):
    text = kickstarts["52:54:00:0c:00:02"]
    assert check_kickstart(text + "\nnosuchcommand\n").errors
    assert check_kickstart(text + "\ntimezone Etc/UTC --ntpservers=a\n").warnings


@pytest.mark.parametrize("mac", list(NODES))
def test_storage_matches_the_reports_table(kickstarts, mac):
    table = NODES[mac]
    h = check_kickstart(kickstarts[mac]).handler
    assert [(p.mountpoint, p.onPart, p.fstype) for p in h.partition.partitions] == table["parts"]
    assert [(v.vgname, v.physvols) for v in h.volgroup.vgList] == table["vgs"]
    assert all(v.pesize == 4096 for v in h.volgroup.vgList)
    assert [(lv.vgname, lv.name, lv.mountpoint, lv.size, lv.fstype) for lv in h.logvol.lvList] == table["lvs"]
    assert h.ignoredisk.onlyuse == ["sda"]
    assert h.bootloader.bootDrive == "sda"
    assert not h.clearpart.type, "the disk is laid out by %pre, never by clearpart"
    pre = h.scripts[0]
    assert pre.type == 0  # %pre
    sfdisk = re.search(r"<<'SFDISK'.*?\n(.*?)SFDISK\n", pre.script, re.S).group(1).splitlines()
    assert sfdisk == ["label: dos"] + table["sfdisk"]


def test_table2s_inconsistency_is_visible_in_the_controller_kickstart(kickstarts):
    text = kickstarts["52:54:00:0c:00:05"]
    assert "# NOTE: layout controller: lv_images is 28788 MiB in Table 2" in text
    assert "# NOTE:" not in kickstarts["52:54:00:0c:00:02"]


def test_pre_refuses_a_disk_smaller_than_the_layout(kickstarts):
    for mac, mib in (("52:54:00:0c:00:02", 1 + 500 + 21000 + 216974),
                     ("52:54:00:0c:00:05", 1 + 500 + 17000 + 30000 + 28792)):
        assert f'[ "$size" -ge {mib * 1024 * 1024} ]' in kickstarts[mac]


def _network(text):
    h = check_kickstart(text).handler
    return [(n.device, n.interfacename, n.bootProto, n.ip, n.netmask, n.gateway, n.nodefroute,
             n.hostname, n.onboot, n.activate) for n in h.network.network]


def test_network_follows_section_5_4_1(kickstarts):
    # NICs are matched by MAC with no --interfacename (Anaconda reads it only with --vlanid);
    # their names come from ifname= on the kernel command line (tests/test_kickstart_install.py)
    # the gateway: static nic1 (the report's eth1) without a default route, DHCP nic0 to the public network
    assert _network(kickstarts["52:54:00:0c:00:01"]) == [
        ("52:54:00:0c:00:01", "", "static", "192.168.0.1", "255.255.255.0", "", True,
         "compute1.cluster.local", True, True),
        ("52:54:00:0c:01:01", "", "dhcp", "", "", "", False, "", True, True),
    ]
    # other compute hosts: static nic1, default gateway 192.168.0.1
    assert _network(kickstarts["52:54:00:0c:00:03"]) == [
        ("52:54:00:0c:00:03", "", "static", "192.168.0.3", "255.255.255.0", "192.168.0.1", False,
         "compute3.cluster.local", True, True)]
    # the controller: static nic0
    assert _network(kickstarts["52:54:00:0c:00:05"]) == [
        ("52:54:00:0c:00:05", "", "static", "192.168.0.5", "255.255.255.0", "192.168.0.1", False,
         "controller.cluster.local", True, True)]


def test_unused_nics_are_off(client, admin, registry):
    body = {"mac": "52:54:00:aa:00:20", "hostname": "compute20", "ip": "192.168.0.20", "roles": ["compute"],
            "interface": "eth1", "nics": [{"mac": "52:54:00:aa:01:20", "name": "eth0", "mode": "off"}]}
    assert client.post("/api/v1/nodes", json=body, headers=admin).status_code == 201
    net = _network(client.get("/ks/52:54:00:aa:00:20").get_data(as_text=True))
    assert net[1][:2] == ("52:54:00:aa:01:20", "")
    assert net[1][8] is False and net[1][9] is False


def test_system_settings(kickstarts, site, state_dir):
    h = check_kickstart(kickstarts["52:54:00:0c:00:05"]).handler
    creds = load_or_create(state_dir)
    assert h.rootpw.isCrypted and h.rootpw.password.startswith("$6$")
    assert _crypt.crypt(creds.values["root_password"], h.rootpw.password) == h.rootpw.password
    assert h.timezone.timezone == site.timezone
    assert [t.ntp_server for t in h.timesource.dataList()] == list(site.ntp_servers)
    # the embedded site's mirror is on: the install tree is the service's copy (tests/test_mirror.py)
    assert h.url.url == "http://192.168.0.254:8081/mirror/9-stream/BaseOS/x86_64/os/"
    assert [r.name for r in h.repo.dataList()] == [r.name for r in site.repos]
    assert h.selinux.selinux == 1  # enforcing


def test_packages_follow_the_roles(kickstarts):
    def pkgs(mac):
        return set(check_kickstart(kickstarts[mac]).handler.packages.packageList)
    compute, gateway, controller = pkgs("52:54:00:0c:00:02"), pkgs("52:54:00:0c:00:01"), pkgs("52:54:00:0c:00:05")
    assert {"glusterfs-server", "qemu-kvm", "libvirt", "openstack-nova-compute", "chrony"} <= compute
    assert "openstack-neutron" not in compute and "openstack-neutron" in gateway
    assert compute <= gateway
    assert {"mariadb-server", "rabbitmq-server", "openstack-keystone", "openstack-glance",
            "openstack-nova-api", "openstack-cinder", "glusterfs-fuse"} <= controller
    assert "qemu-kvm" not in controller and "glusterfs-server" not in controller


def test_secrets_appear_only_as_the_hash_and_the_nodes_own_token(kickstarts, state_dir, registry):
    creds = load_or_create(state_dir).values
    tokens = {n.mac: n.install_token for n in registry.list()}
    for mac, text in kickstarts.items():
        for key, value in creds.items():
            if key != "root_password_hash":
                assert value not in text, key
        assert tokens[mac] in text
        assert all(t not in text for m, t in tokens.items() if m != mac)


def test_rendering_is_deterministic(client):
    a = client.get("/ks/52:54:00:0c:00:02").get_data()
    assert a == client.get("/ks/52-54-00-0C-00-02").get_data()


def _scripts(text):
    return check_kickstart(text).handler.scripts


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="needs shellcheck")
def test_every_script_section_passes_shellcheck(kickstarts, tmp_path):
    for mac, text in kickstarts.items():
        for i, script in enumerate(_scripts(text)):
            path = tmp_path / f"{mac.replace(':', '')}-{i}.sh"
            path.write_text("#!/bin/sh\n" + script.script)
            result = subprocess.run(["shellcheck", "-s", "sh", str(path)], capture_output=True, text=True)
            assert result.returncode == 0, result.stdout
            assert subprocess.run(["sh", "-n", str(path)]).returncode == 0


class _Capture(http.server.BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((self.path, self.headers.get("Authorization"), self.headers.get("Content-Type"), body))
        self.send_response(201)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
def test_the_callback_sends_valid_json_whatever_the_log_holds(kickstarts, registry, tmp_path):
    """Run the kickstart's own report() in sh with curl, against a capturing server on loopback."""
    server = http.server.HTTPServer(("127.0.0.1", 0), _Capture)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        mac = "52:54:00:0c:00:05"
        script = _scripts(kickstarts[mac])[2].script  # %onerror: the callback block, then its report
        callback = script.split("report failed")[0]
        url = f"http://127.0.0.1:{server.server_port}/api/v1/nodes/{mac}/events"
        callback = re.sub(r"PROVISIONER_EVENTS='[^']*'", f"PROVISIONER_EVENTS='{url}'", callback)
        nasty = 'line "one"\\n\ttab\x01\x1b[31m back\\slash\n€ utf8 \'quote\''
        (tmp_path / "log").write_bytes(nasty.encode())
        (tmp_path / "run.sh").write_text(callback + 'report failed "$(cat "$1")"\n')
        subprocess.run(["sh", str(tmp_path / "run.sh"), str(tmp_path / "log")], check=True, cwd=tmp_path)
        path, auth, ctype, body = _Capture.received[-1]
        assert path == f"/api/v1/nodes/{mac}/events"
        assert auth == f"Bearer {registry.get(mac).install_token}"
        assert ctype == "application/json"
        event = json.loads(body)
        assert event == {"type": "failed",
                         "detail": 'line "one"\\n\ttab[31m back\\slash\n utf8 \'quote\''}
    finally:
        server.shutdown()
        server.server_close()
