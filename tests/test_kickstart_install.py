"""What makes a rendered kickstart install a real CentOS Stream 9 machine unattended: NIC names
bound by MAC on the kernel command line, failures that always reach the service, root's SSH keys
and the packages %post itself needs.

Read in Anaconda (rhel-9) and dracut for this:
- pyanaconda/modules/network/nm_client.py (get_device_name_from_network_data): --interfacename
  is read only together with --vlanid, so it cannot name a NIC; dracut's ifname=<name>:<mac> does,
  and pyanaconda/modules/network/installation.py (_write_interface_rename_config) writes each
  ifname= to the installed system as a systemd .link file. dracut.cmdline(7) warns against
  kernel-style ethN names in ifname=.
- pyanaconda/exception.py (_run_kickstart_scripts): %onerror runs from the exception handler,
  which cmdline mode reaches for a missing setting; text mode waits at its menu instead
  (pykickstart commands/displaymode.py documents `cmdline`). A failing `%post --erroronfail`
  stops at the script error without %onerror, hence the trap in %post.
"""

import base64
import http.server
import json
import re
import shutil
import subprocess
import threading

import pytest
from pykickstart.constants import DISPLAY_MODE_CMDLINE

from provisioner.config import ConfigError, load_site, parse_node, parse_site
from provisioner.credentials import load_or_create
from provisioner.render.kscheck import check_kickstart
from provisioner.plan import config_env, load_plan

COMPUTE1, COMPUTE1_PUBLIC = "52:54:00:0c:00:01", "52:54:00:0c:01:01"
COMPUTE2 = "52:54:00:0c:00:02"
ALL = [COMPUTE1, COMPUTE2, "52:54:00:0c:00:03", "52:54:00:0c:00:04", "52:54:00:0c:00:05"]
ETH = re.compile(r"\beth[0-9]+\b")


def _ed25519(comment="op@example"):
    blob = len(b"ssh-ed25519").to_bytes(4, "big") + b"ssh-ed25519" + (32).to_bytes(4, "big") + bytes(range(32))
    return f"ssh-ed25519 {base64.b64encode(blob).decode()} {comment}"


# -- NIC names -----------------------------------------------------------------------------------

def test_compute1_names_both_nics_by_mac_on_every_loader_and_in_the_kickstart(app, client):
    boot = app.extensions["provisioner"].boot
    for kind in ("pxelinux", "grub", "ipxe"):
        text = boot.render(kind, COMPUTE1, "test", "test").text
        assert f"ifname=nic1:{COMPUTE1}" in text and f"ifname=nic0:{COMPUTE1_PUBLIC}" in text, kind
        assert ":compute1.cluster.local:nic1:none" in text, kind      # ip= names the renamed NIC
        assert not ETH.search(text), (kind, ETH.search(text))
        args = re.search(r"(?:APPEND|linux|kernel) (.*)", text).group(1).split()
        assert args[-1] == "inst.cmdline" and "inst.text" in args, kind   # the site's, overridden

    ks = client.get(f"/ks/{COMPUTE1}").get_data(as_text=True)
    assert not ETH.search(ks), ETH.search(ks)
    assert "--interfacename" not in ks                   # no --vlanid anywhere, so never
    nets = check_kickstart(ks).handler.network.network
    assert [(n.device, n.bootProto, n.activate, n.onboot, n.nodefroute) for n in nets] == [
        (COMPUTE1, "static", True, True, True),
        # the installer's only default route is this DHCP lease: up during the install too
        (COMPUTE1_PUBLIC, "dhcp", True, True, False)]


def test_a_nic_left_off_is_named_too_so_no_kernel_name_remains(app, client, admin):
    body = {"mac": "52:54:00:aa:00:21", "hostname": "compute21", "ip": "192.168.0.21", "roles": ["compute"],
            "interface": "eth1", "nics": [{"mac": "52:54:00:aa:01:21", "name": "eth0", "mode": "off"}]}
    resp = client.post("/api/v1/nodes", json=body, headers=admin)
    assert resp.status_code == 201
    assert resp.get_json()["interface"] == "nic1" and resp.get_json()["nics"][0]["name"] == "nic0"
    text = app.extensions["provisioner"].boot.render("pxelinux", "52:54:00:aa:00:21", "t", "t").text
    assert "ifname=nic1:52:54:00:aa:00:21" in text and "ifname=nic0:52:54:00:aa:01:21" in text


def test_the_role_steps_are_told_the_machines_names(app, registry, state_dir):
    site = app.extensions["provisioner"].site
    nodes = registry.list()
    env = config_env(site, load_or_create(state_dir), registry.get(COMPUTE1), nodes, load_plan())
    assert "NODE_INTERFACE='nic1'" in env or "NODE_INTERFACE=nic1" in env, env
    assert "PUBLIC_INTERFACE='nic0'" in env or "PUBLIC_INTERFACE=nic0" in env, env


def test_kernel_style_names_map_and_a_clash_after_mapping_is_refused():
    site = load_site()
    base = {"mac": "52:54:00:aa:00:30", "hostname": "c30", "ip": "192.168.0.30", "roles": ["compute"]}
    spec = parse_node({**base, "interface": "eth3", "nics": [{"mac": "52:54:00:aa:01:30", "name": "wan0"}]}, site)
    assert (spec.interface, spec.nics[0].name) == ("nic3", "wan0")
    assert parse_node(base, site).interface == "nic0"       # the default install NIC
    with pytest.raises(ConfigError, match=r"interface name nic1 is given twice"):
        parse_node({**base, "interface": "eth1", "nics": [{"mac": "52:54:00:aa:01:30", "name": "nic1"}]}, site)


# -- failures always reported --------------------------------------------------------------------

def test_cmdline_mode_so_a_missing_setting_runs_onerror(client):
    for mac in ALL:
        h = check_kickstart(client.get(f"/ks/{mac}").get_data(as_text=True)).handler
        assert h.displaymode.displayMode == DISPLAY_MODE_CMDLINE, mac


class _Service(http.server.BaseHTTPRequestHandler):
    """The boot server as %post sees it: /hosts, a broken /hooks.tar.gz, and the events."""
    events: list = []

    def do_GET(self):
        body = {"/hosts": b"192.168.0.2 compute2\n", "/hooks.tar.gz": b"this is not a tarball\n"}.get(self.path)
        self.send_response(200 if body else 404)
        self.send_header("Content-Length", str(len(body or b"")))
        self.end_headers()
        self.wfile.write(body or b"")

    def do_POST(self):
        self.events.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(201)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def service():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Service)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Service.events = []
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def _post_here(client, mac, url, root):
    """The node's %post, talking to `url` instead of the boot server and writing under `root`
    instead of /."""
    ks = client.get(f"/ks/{mac}").get_data(as_text=True)
    post = next(s.script for s in check_kickstart(ks).handler.scripts if "report installed" in s.script)
    post = re.sub(r"http://192\.168\.0\.254:8081", url, post)
    post = re.sub(r"(?<![\w.-])(/etc/|/usr/libexec/|/var/lib/|/tmp/provisioner)", lambda m: f"{root}{m.group(1)}", post)
    post = post.replace("/root/provisioner-post.log", f"{root}/post.log")
    for d in ("etc/dnf", "usr/libexec", "var/lib", "tmp"):
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "etc/dnf/dnf.conf").write_text("[main]\n")      # the mirror's repo setup edits it
    assert " /etc/" not in post and " /usr/libexec" not in post
    path = root / "post.sh"
    path.write_text(post)
    return path


@pytest.mark.skipif(shutil.which("curl") is None or shutil.which("tar") is None, reason="needs curl and tar")
def test_a_failing_post_reports_failed_with_the_command_and_its_output(client, service, tmp_path):
    run = subprocess.run(["sh", str(_post_here(client, COMPUTE2, service, tmp_path))],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode != 0
    assert (tmp_path / "etc" / "hosts").read_text() == "192.168.0.2 compute2\n"    # the steps before it ran
    assert [e["type"] for e in _Service.events] == ["failed"], _Service.events
    detail = _Service.events[0]["detail"]
    assert detail.startswith("%post on compute2 failed (exit 2) running: tar -xzf "), detail
    assert "not in gzip format" in detail, detail
    assert not (tmp_path / "etc" / "provisioner" / "node.env").exists()


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
def test_a_download_that_fails_is_reported_with_curls_error(client, service, tmp_path):
    # a curl that cannot reach the boot server, first on PATH; the report itself goes through
    real = shutil.which("curl")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "curl").write_text(
        "#!/bin/sh\ncase \"$*\" in *hosts.provisioner*)\n"
        "  echo 'curl: (7) Failed to connect to 192.168.0.254 port 8081: No route to host' >&2; exit 7 ;;\n"
        f"esac\nexec {real} \"$@\"\n")
    (bin_dir / "curl").chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin"}
    run = subprocess.run(["sh", str(_post_here(client, COMPUTE2, service, tmp_path))],
                         capture_output=True, text=True, timeout=60, env=env)
    assert run.returncode == 7
    assert len(_Service.events) == 1 and _Service.events[0]["type"] == "failed"
    detail = _Service.events[0]["detail"]
    assert re.match(r"%post on compute2 failed \(exit 7\) running: curl -fsS .*-o \S*/etc/hosts\.provisioner "
                    + re.escape(service) + "/hosts\n", detail), detail
    assert detail.endswith("No route to host"), detail


# -- keys and basics -----------------------------------------------------------------------------

def _site_data():
    import yaml
    from importlib import resources
    return yaml.safe_load(resources.files("provisioner").joinpath("site.yaml").read_text())


def test_ssh_keys_become_sshkey_lines_for_root(tmp_path):
    """RHEL 9's sshd refuses root password logins: a key is the way in."""
    from dataclasses import replace

    from provisioner.app import create_app
    data = _site_data()
    data["ssh_authorized_keys"] = [_ed25519(), "  " + _ed25519("second key") + "\n"]
    site = replace(parse_site(data, "test"), kickstart_node_address_only=False)
    assert site.ssh_authorized_keys == (_ed25519(), _ed25519("second key"))
    app = create_app(tmp_path / "state", site)
    try:
        c = app.test_client()
        c.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {load_or_create(tmp_path / 'state').reader_token}"
        ks = c.get(f"/ks/{COMPUTE2}").get_data(as_text=True)
    finally:
        app.extensions["provisioner"].registry.close()
    result = check_kickstart(ks)
    assert result.errors == [] and result.warnings == []
    assert [(k.username, k.key) for k in result.handler.sshkey.sshUserList] == [("root", _ed25519())]
    # the second goes to root's authorized_keys in %post: a second sshkey line for root would be
    # a pykickstart warning
    post = next(s.script for s in result.handler.scripts if "report installed" in s.script)
    assert f"cat >> /root/.ssh/authorized_keys <<'KEYS'\n{_ed25519('second key')}\nKEYS\n" in post


def test_no_keys_no_sshkey_line(client):
    assert "sshkey" not in client.get(f"/ks/{COMPUTE2}").get_data(as_text=True)


@pytest.mark.parametrize("key, why", [
    ("ssh-dss AAAAB3NzaC1kc3MAAACBAP", "not an OpenSSH public key line"),
    ("ssh-ed25519 not*base64 me", "not an OpenSSH public key line"),
    ('ssh-ed25519 AAAAC3NzaC1lZDI1NTE5 "quoted"', "not an OpenSSH public key line"),
    ("ssh-ed25519 AAAAB3NzaC1yc2EAAAADAQABAAABAQ== me", "not a ssh-ed25519 key"),
    ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI= me", "does not decode"),
    ('from="10.0.0.1" ' + "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5", "not an OpenSSH public key line"),
    (42, "public key line"),
])
def test_bad_ssh_keys_are_refused_naming_the_key(key, why):
    data = _site_data()
    data["ssh_authorized_keys"] = [_ed25519(), key]
    with pytest.raises(ConfigError, match=r"^ssh_authorized_keys\[1\]: .*" + re.escape(why)):
        parse_site(data, "test")


def test_tar_gzip_and_curl_are_installed_on_every_node(client):
    for mac in ALL:
        h = check_kickstart(client.get(f"/ks/{mac}").get_data(as_text=True)).handler
        assert {"tar", "gzip", "curl"} <= set(h.packages.packageList), mac
        assert len(h.packages.packageList) == len(set(h.packages.packageList)), mac


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
def test_a_failure_outside_run_reports_the_step_and_the_logs_tail(client, service, tmp_path):
    """As Anaconda runs it: the script's output goes to its --log file."""
    post = _post_here(client, COMPUTE2, service, tmp_path)
    (tmp_path / "etc" / "NetworkManager").write_text("a file where a directory should be\n")
    with open(tmp_path / "post.log", "w") as log:
        run = subprocess.run(["sh", str(post)], stdout=log, stderr=subprocess.STDOUT, timeout=60)
    assert run.returncode != 0
    detail = _Service.events[-1]["detail"]
    assert re.match(r"%post on compute2 failed \(exit 1\) in or after: write \S*/etc/NetworkManager/conf\.d/"
                    r"50-provisioner\.conf\n", detail), detail
    assert "mkdir: cannot create directory" in detail and "NetworkManager" in detail.splitlines()[-1], detail


def test_a_registry_from_before_the_machine_names_reads_ethn_as_nicn(tmp_path):
    """Nodes registered as eth1 before this change: the steps' NODE_INTERFACE must still match
    the ifname= the kernel command line now gives."""
    import sqlite3

    from provisioner.registry.db import Registry
    site = load_site()
    reg = Registry(tmp_path / "r.sqlite3")
    reg.sync_site(site)
    reg.close()
    db = sqlite3.connect(tmp_path / "r.sqlite3")
    db.execute("UPDATE nodes SET interface = 'eth1', nics = ? WHERE mac = ?",
               (json.dumps([{"mac": COMPUTE1_PUBLIC, "name": "eth0", "mode": "dhcp"}]), COMPUTE1))
    db.commit()
    db.close()
    reg = Registry(tmp_path / "r.sqlite3")
    spec = reg.get(COMPUTE1).spec
    reg.close()
    assert (spec.interface, spec.nics[0].name) == ("nic1", "nic0")
