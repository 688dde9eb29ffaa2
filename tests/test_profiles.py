"""The OS profiles (provisioner/hooks/profiles/*.env) and the first-boot defects they were made
with: the centos-stream-9 profile against the reviewed transcript (tests/golden, which
test_hooks_steps proves the steps still issue), and the debian-13 profile rendering Debian's
names for every step."""

import re
import shlex
import shutil

import pytest
from cryptography import x509

from provisioner.plan import HOOKS_DIR, PROFILES_DIR, PlanError, config_env, load_plan, os_profile
from test_hooks_steps import GOLDEN, Box, changes

STEPS = {s.id: (HOOKS_DIR / f"{s.id}.sh").read_text() for s in load_plan().steps}
LIB = (HOOKS_DIR / "lib" / "common.sh").read_text()
needs_crudini = pytest.mark.skipif(shutil.which("crudini") is None, reason="needs crudini")


def profile(name: str) -> dict[str, str]:
    out = {}
    for line in (PROFILES_DIR / f"{name}.env").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            k, v = line.split("=", 1)
            out[k] = " ".join(shlex.split(v))
    return out


def transcript() -> dict[str, list[tuple[str, str]]]:
    """host -> [(step, command)] from the reviewed transcript."""
    out: dict[str, list[tuple[str, str]]] = {}
    step = host = ""
    for line in GOLDEN.read_text().splitlines():
        if line.startswith("== "):
            _, host, step = line.split(" ", 2)
            out.setdefault(host, [])
        else:
            out[host].append((step, line))
    return out


def first(cmds, pattern):
    return next(i for i, (_, c) in enumerate(cmds) if re.search(pattern, c))


# -- the profiles themselves ----------------------------------------------------------------------

def test_both_profiles_define_the_same_names_and_every_name_a_step_uses(app):
    centos, debian = profile("centos-stream-9"), profile("debian-13")
    assert set(centos) == set(debian)
    ctx = app.extensions["provisioner"]
    node = ctx.registry.list()[0]
    rendered = {line.split("=", 1)[0] for line in
                config_env(ctx.site, ctx.credentials, node, ctx.registry.list(), load_plan()).splitlines()[1:]}
    # every configuration key any node may get, secrets included
    rendered |= {k.upper() for s in load_plan().steps for k in s.secrets}
    shell = {"ROOT", "CHANGED", "SECONDS", "STEP_ID", "PROFILE", "CHECK_VM_TIMEOUT", "OS_PASSWORD", "BASH_SOURCE",
             "S"}     # ${Status}: dpkg-query's format, not a variable
    for sid, text in {**STEPS, "lib/common.sh": LIB}.items():
        used = set(re.findall(r"\$\{?([A-Z][A-Z0-9_]*)", text)) - rendered - shell
        assert used <= set(centos), (sid, sorted(used - set(centos)))


def test_skipped_steps_exist_and_only_selinux_and_rdo_are_skipped_on_debian():
    assert profile("centos-stream-9")["SKIP_STEPS"] == ""
    skipped = profile("debian-13")["SKIP_STEPS"].split()
    assert set(skipped) == {"02-glusterfs-all/02-selinux", "06-openstack-all/01-rdo-repo"}
    assert all(s in STEPS for s in skipped)


def test_the_debian_profile_names_debian_packages_units_and_paths():
    d = profile("debian-13")
    pkgs = " ".join(v for k, v in d.items() if k.startswith("PKGS_")).split()
    assert not [p for p in pkgs if p.startswith("openstack-") and not p.startswith("openstack-dashboard")]
    assert not [p for p in pkgs if p in ("httpd", "python3-mod_wsgi", "qemu-kvm", "glusterfs-fuse", "openstack-selinux")]
    assert {"keystone", "nova-compute", "openvswitch-switch", "crudini"} <= set(pkgs)
    assert d["UNIT_HTTPD"] == "apache2" and d["UNIT_OVS"] == "openvswitch-switch" and d["UNIT_CHRONY"] == "chrony"
    units = " ".join(v for k, v in d.items() if k.startswith("UNIT")).split()
    assert not [u for u in units if u.startswith("openstack-") or u in ("httpd", "chronyd", "openvswitch", "target")]
    # Debian 13 runs Keystone as its own uwsgi unit (the real package, tests/test_lab_roles_steps_controller.py)
    assert d["KEYSTONE_WSGI_LINK"] == "" and d["UNIT_KEYSTONE"] == "keystone"
    assert d["HTTPD_SERVERNAME_CONF"].startswith("/etc/apache2/")
    assert not [v for k, v in d.items() if "/etc/httpd" in v or "/etc/sysconfig" in v]
    assert d["PKG_FORMAT"] == "deb" and d["SELINUX"] == "0" and d["LVM_DEVICES_FILE"] == "0"


def test_no_step_asks_which_os_it_is_on():
    """The profile says; no step branches on an OS name (RDO's repo step names RDO's package)."""
    for sid, text in {**STEPS, "lib/common.sh": LIB}.items():
        code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
        hits = re.findall(r"\b(centos|debian|rhel|ubuntu|fedora)\b|os-release|ID_LIKE", code)
        assert hits == [] or (sid == "06-openstack-all/01-rdo-repo" and set(hits) == {"centos"}), (sid, hits)


def test_the_node_configuration_names_its_profile(app, site):
    from dataclasses import replace
    ctx = app.extensions["provisioner"]
    node = ctx.registry.list()[0]
    env = config_env(ctx.site, ctx.credentials, node, ctx.registry.list(), load_plan())
    assert "PROFILE=centos-stream-9\n" in env
    assert os_profile(replace(site, os_name="Debian", os_version="13")) == "debian-13"
    assert "PROFILE=debian-13\n" in config_env(ctx.site, ctx.credentials, node, ctx.registry.list(), load_plan(),
                                               profile="debian-13")
    with pytest.raises(PlanError, match="no OS profile"):
        os_profile(replace(site, os_name="Fedora", os_version="41"))


# -- the centos-stream-9 defects, in the reviewed transcript -------------------------------------

# What the upstream sources say, read there (nothing CentOS can run here) and kept as data:
#
# gluster/glusterfs extras/firewalld/glusterfs.xml (commit 0299e58): the firewalld service
# `glusterfs` opens 24007 (glusterd), 24008 (glusterd's RDMA port management), 38465-38469
# (Gluster-NFS) and 49152-49664 (bricks). glusterfs.spec.in installs it as
# /usr/lib/firewalld/services/glusterfs.xml in %files server: it exists only once
# glusterfs-server is installed.
GLUSTERFS_XML_PORTS = {"24007/tcp", "24008/tcp", "38465/tcp", "38466/tcp", "38467/tcp", "38468/tcp",
                       "38469/tcp", "49152-49664/tcp"}
GLUSTER_NFS = {"38465/tcp", "38466/tcp", "38467/tcp", "38468/tcp", "38469/tcp"}     # not used here
# The bricks' ports are glusterd.vol's instead (GlusterFS >= 10 draws each brick's port at random
# from base-port 49152 to max-port 60999: Debian's 11.1 /etc/glusterfs/glusterd.vol, and the
# roles lab's bricks listened on 52960 and 60884, outside the service file's 49152-49664).
BRICKS_XML, BRICKS_GLUSTERD_VOL = "49152-49664/tcp", "49152-60999/tcp"
# firewalld/firewalld config/services/ (v2.x, commit 2745d6f): services firewalld ships itself
# (defined before any package is installed). glusterfs.xml is not among them.
FIREWALLD_OWN_SERVICES = {"http", "https", "mysql", "ntp", "ssh", "libvirt", "libvirt-tls", "memcache"}
# firewalld config/zones/internal.xml: the internal zone opens ssh, mdns, samba-client and
# dhcpv6-client and nothing of the cluster's, so a port the steps open elsewhere is closed there.
# openstack/openstack-manuals doc/install-guide/source/environment-packages-rdo.rst (the RDO
# guide): "RHEL and CentOS enable SELinux by default. Install the openstack-selinux package",
# and the extra repository CentOS needs beside the release package (PowerTools on 8, CRB on 9).
# fedora-selinux/selinux-policy branch c9s, policy/modules/kernel/corenetwork.te.in: tcp 5000 is
# commplex_main_port_t, http_port_t is 80, 81, 443, 488, 8008, 8009, 8443, 9000 (not 8778);
# policy/modules/contrib/apache.te lets httpd_t bind commplex_main only under the boolean
# httpd_use_openstack, off by default. redhat-openstack/openstack-selinux: os-keystone.te
# `corenet_tcp_bind_commplex_main_port(httpd_t)` (Keystone's 5000), os-httpd.te's os_httpd_wsgi
# `corenet_tcp_bind_all_ports(httpd_t)` (Placement's 8778), both booleans turned on by its
# local_settings.sh.in: without openstack-selinux, enforcing SELinux refuses httpd both ports.


def test_1_gluster_ports_are_glusterfs_xmls_opened_before_glusterfs_server_ships_it():
    text = GOLDEN.read_text()
    used = set(re.findall(r"--add-service=(\S+)", text))
    assert used and used <= FIREWALLD_OWN_SERVICES, used - FIREWALLD_OWN_SERVICES
    for host, cmds in transcript().items():
        step = [c for s, c in cmds if s == "02-glusterfs-all/01-firewall-glusterfs"]
        opened = set(re.findall(r"--add-port=(\S+)", "\n".join(step)))
        expanded = {p for p in opened if p != "24007-24008/tcp"} | ({"24007/tcp", "24008/tcp"} & GLUSTERFS_XML_PORTS
                                                                  if "24007-24008/tcp" in opened else set())
        assert expanded == GLUSTERFS_XML_PORTS - GLUSTER_NFS - {BRICKS_XML} | {BRICKS_GLUSTERD_VOL}, (host, opened)
        assert first(cmds, r"--add-port=24007-24008/tcp") < first(cmds, r"dnf install -y glusterfs-server")


def test_2_every_port_on_the_gateway_opens_in_the_install_nics_zone(site):
    nic = next(n for n in site.nodes if n.hostname == "compute1").interface
    cmds = transcript()["compute1"]
    moved = first(cmds, rf"--zone=internal --change-interface={nic}$")
    opens = [(s, c) for s, c in cmds[moved + 1:] if re.search(r"--add-(port|service)=", c)]
    assert len(opens) >= 7      # gluster (2), libvirt, migration, VNC, VXLAN, http
    assert all("--zone=internal " in c for _, c in opens), opens
    assert any("49152-49215/tcp" in c for _, c in opens) and any("4789/udp" in c for _, c in opens)
    # a node whose install NIC stays in the default zone opens there (what --get-zone-of-interface
    # falls back to), never in a zone named by hand
    assert all("--zone=public " in c for s, c in transcript()["compute2"] if re.search(r"--add-(port|service)=", c))


def test_3_crb_and_openstack_selinux_on_the_installed_system_before_any_openstack_package():
    centos = profile("centos-stream-9")
    assert centos["REQUIRED_REPOS"] == "crb" and centos["PKGS_SELINUX"] == "openstack-selinux"
    for host, cmds in transcript().items():
        crb = first(cmds, r"^CHANGE dnf config-manager --set-enabled crb$")
        sel = first(cmds, r"^CHANGE dnf install -y .*\bopenstack-selinux\b")
        rdo = first(cmds, r"dnf install -y centos-release-openstack-")
        assert crb < rdo < sel
        assert sel < first(cmds, r"dnf install -y (openstack-(?!selinux)|crudini)")


def test_4_openstack_selinux_is_in_before_httpd_binds_keystone_and_placement():
    cmds = transcript()["controller"]
    start = first(cmds, r"^CHANGE systemctl start httpd$")
    assert first(cmds, r"dnf install -y .*openstack-selinux") < start
    # both ports httpd serves are ones the base policy does not give it (see above)
    keystone = STEPS["07-openstack-controller/12-keystone-start"] + STEPS["07-openstack-controller/09-keystone-config"]
    assert "5000" in keystone and "8778" in STEPS["07-openstack-controller/21-placement"]


def test_5_the_provider_bridge_holds_no_nic_with_an_address(site):
    gw = next(n for n in site.nodes if n.hostname == "compute1")
    public = next(n.name for n in gw.nics if n.mode == "dhcp")
    text = GOLDEN.read_text()
    assert not re.search(r"ovs-vsctl add-port br-provider", text)
    assert public not in STEPS["09-openstack-gateway/03-neutron-agents-start"].replace("$PUBLIC_INTERFACE", "")
    assert "ip address replace $PROVIDER_GATEWAY/" in STEPS["09-openstack-gateway/03-neutron-agents-start"]


@needs_crudini
def test_5_a_bridged_uplink_is_taken_back_out_and_the_gateway_address_goes_on_the_bridge(tmp_path, app):
    b = Box(tmp_path, app, "compute1")      # centos-stream-9, the site's profile
    nic = next(n.name for n in b.node.spec.nics if n.mode == "dhcp")
    for step in ("08-openstack-compute/05-neutron-agent-config", "08-openstack-compute/06-neutron-agent-start"):
        b.run(step)
    (b.state / "port" / "br-provider").mkdir(parents=True, exist_ok=True)
    (b.state / "port" / "br-provider" / nic).write_text("")     # what the earlier steps left
    done = changes(b.run("09-openstack-gateway/03-neutron-agents-start"))
    assert f"ovs-vsctl del-port br-provider {nic}" in done
    assert not [c for c in done if "add-port" in c or re.search(rf"\bip .*\b{nic}\b", c)]
    unit = b.text("etc/systemd/system/provisioner-provider-gateway.service")
    assert re.search(r"^ExecStart=/usr/sbin/ip address replace \S+ dev br-provider$", unit, re.M), unit
    assert nic not in unit
    assert changes(b.run("09-openstack-gateway/03-neutron-agents-start")) == []


# -- defects 6 and 7: the plan --------------------------------------------------------------------

def test_6_network_ready_waits_for_the_networks_not_the_dashboard():
    plan = load_plan()
    assert plan.barriers["network-ready"].after == "09-openstack-gateway/05-secgroup-add"


def test_7_the_key_pair_exists_before_the_vm_boots_and_the_console_is_waited_for():
    ids = [s.id for s in load_plan().steps]
    assert ids.index("10-openstack-controller/03-keypair-add") < ids.index("10-openstack-controller/02-boot-cirros")
    cmds = transcript()["controller"]
    assert first(cmds, r"openstack keypair create") < first(cmds, r"openstack server create .*--key-name test-key")
    check = STEPS["10-openstack-controller/04-check-vm"]
    assert re.search(r"until openstack console log show", check) and "CHECK_VM_TIMEOUT" in check


# -- defects 8 and 9: run on a scratch root -------------------------------------------------------

@needs_crudini
def test_8_migration_over_tls_with_plain_libvirt_keys_freebind_and_open_ports(tmp_path, app):
    b = Box(tmp_path, app, "compute2")
    b.run("05-kvm-compute/04-libvirt-config")
    conf = b.text("etc/libvirt/virtproxyd.conf")
    assert conf == 'auth_tls = "sasl"\n' and "[" not in conf
    dropin = b.text("etc/systemd/system/virtproxyd-tls.socket.d/listen.conf")
    assert "ListenStream=192.168.0.2:16514\n" in dropin and "FreeBind=yes\n" in dropin
    ca = x509.load_pem_x509_certificate((b.root / "etc/pki/CA/cacert.pem").read_bytes())
    cert = x509.load_pem_x509_certificate((b.root / "etc/pki/libvirt/servercert.pem").read_bytes())
    cert.verify_directly_issued_by(ca)
    assert (b.root / "etc/pki/libvirt/private/serverkey.pem").stat().st_mode & 0o777 == 0o600
    # another compute host derives the same CA key from the same secret: its certificate verifies here
    other = Box(tmp_path, app, "compute1")
    other.run("05-kvm-compute/04-libvirt-config")
    x509.load_pem_x509_certificate((other.root / "etc/pki/libvirt/clientcert.pem").read_bytes()) \
        .verify_directly_issued_by(ca)
    assert changes(b.run("05-kvm-compute/04-libvirt-config")) == []
    assert "49152-49215/tcp" in STEPS["05-kvm-compute/05-libvirt-start"]


@needs_crudini
def test_9_service_user_bridge_mappings_lvm_devices_and_mount_order(tmp_path, app):
    ctl, cmp_ = Box(tmp_path, app, "controller"), Box(tmp_path, app, "compute2")
    ctl.run("07-openstack-controller/25-nova-config")
    cmp_.run("08-openstack-compute/03-nova-config")
    for b in (ctl, cmp_):
        text = b.text("etc/nova/nova.conf")
        assert "[service_user]\nsend_service_user_token = true\n" in text and "username = nova" in text
    assert "live_migration_scheme = tls" in cmp_.text("etc/nova/nova.conf")
    cmp_.run("08-openstack-compute/05-neutron-agent-config")
    assert "bridge_mappings = provider:br-provider" in cmp_.text("etc/neutron/plugins/ml2/openvswitch_agent.ini")
    assert "lvmdevices -y --adddev /dev/sda3" in changes(ctl.run("07-openstack-controller/30-cinder-config"))
    cmp_.run("04-glusterfs-all/01-glusterfs-mount")
    assert "x-systemd.requires=glusterd.service" in cmp_.text("etc/fstab")


# -- the debian-13 profile, run ------------------------------------------------------------------

@needs_crudini
def test_debian_steps_use_apt_apache2_and_skip_selinux_and_rdo(tmp_path, app):
    b = Box(tmp_path, app, "controller", profile="debian-13")
    assert b.run("02-glusterfs-all/02-selinux") == [] and b.run("06-openstack-all/01-rdo-repo") == []
    assert changes(b.run("02-glusterfs-all/03-glusterfs-install")) == [
        "apt-get install -y --no-install-recommends glusterfs-server glusterfs-client"]
    # Debian's keystone is a uwsgi unit of its own, no Apache site (the real package, run in
    # tests/test_lab_roles_steps_controller.py)
    assert "systemctl start keystone" in changes(b.run("07-openstack-controller/12-keystone-start"))
    assert not (b.root / "etc/apache2").exists()
    assert not [c for c in b.run("07-openstack-controller/21-placement") if "semanage" in c]
    b.run("07-openstack-controller/30-cinder-config")
    assert '"a|^/dev/sda3$|"' in b.text("etc/lvm/lvmlocal.conf")
    b.run("07-openstack-controller/05-memcached")
    assert "-l 127.0.0.1,::1,192.168.0.5\n" in b.text("etc/memcached.conf")
