"""The lab's networks, pool, disks and domains, defined against libvirt's test driver."""

import xml.etree.ElementTree as ET

import pytest

libvirt = pytest.importorskip("libvirt")

from provisioner.lab.vms import INSTALL_NET, POOL, PUBLIC_NET, Lab, LabError, LabSettings  # noqa: E402
from tests.conftest import REPORT_COMPUTE_DISK, REPORT_CONTROLLER_DISK  # noqa: E402


@pytest.fixture
def lab(site, registry, tmp_path):
    conn = libvirt.open("test:///default")
    lab = Lab(conn, site, LabSettings(tmp_path / "lab"))
    yield lab, registry.list()
    lab.down()
    conn.close()


def test_up_defines_the_report_testbed(lab):
    lab, nodes = lab
    lines = []
    lab.up(nodes, progress=lines.append)
    conn = lab.conn
    assert lab.status() == {n.hostname: "running" for n in nodes}

    net = ET.fromstring(conn.networkLookupByName(INSTALL_NET).XMLDesc())
    assert net.find("forward") is None                      # isolated
    ip = net.find("ip")
    assert (ip.get("address"), ip.get("netmask")) == ("192.168.0.254", "255.255.255.0")
    hosts = {(h.get("mac"), h.get("name"), h.get("ip")) for h in ip.find("dhcp").findall("host")}
    assert hosts == {(n.mac, n.hostname, n.spec.ip) for n in nodes}
    bootp = ip.find("dhcp/bootp")
    assert (bootp.get("file"), bootp.get("server")) == ("lpxelinux.0", "192.168.0.254")
    assert conn.networkLookupByName(PUBLIC_NET).isActive()

    pool = conn.storagePoolLookupByName(POOL)
    sizes = {v.name(): v.info()[1] for v in pool.listAllVolumes()}
    assert sizes == {f"pv-compute{i}.qcow2": REPORT_COMPUTE_DISK for i in range(1, 5)} | {
        "pv-controller.qcow2": REPORT_CONTROLLER_DISK}

    for node in nodes:
        dom = ET.fromstring(conn.lookupByName(f"pv-{node.hostname}").XMLDesc())
        ifaces = dom.findall("devices/interface")
        assert ifaces[0].find("mac").get("address") == node.mac
        assert ifaces[0].find("source").get("network") == INSTALL_NET
        assert ifaces[0].find("boot").get("order") == "1"
        disk = dom.find("devices/disk")
        assert disk.find("target").get("dev") == "sda" and disk.find("target").get("bus") == "sata"
        assert disk.find("boot").get("order") == "2"
        assert dom.find("devices/serial").get("type") == "file"
        public = [i for i in ifaces if i.find("source").get("network") == PUBLIC_NET]
        if node.hostname == "compute1":
            assert [i.find("mac").get("address") for i in public] == ["52:54:00:0c:01:01"]
        else:
            assert public == []
    assert "defined pv-controller" in lines


def test_up_twice_changes_nothing_and_down_leaves_nothing(lab):
    lab, nodes = lab
    lab.up(nodes)
    again = []
    lab.up(nodes, progress=again.append)
    assert again == []
    lab.down()
    conn = lab.conn
    assert [d.name() for d in conn.listAllDomains() if d.name().startswith("pv-")] == []
    assert INSTALL_NET not in conn.listNetworks() + conn.listDefinedNetworks()
    assert PUBLIC_NET not in conn.listNetworks() + conn.listDefinedNetworks()
    assert POOL not in conn.listStoragePools() + conn.listDefinedStoragePools()


def test_a_service_off_the_install_network_is_refused(lab, site):
    lab, nodes = lab
    import dataclasses
    lab.site = dataclasses.replace(site, service_url="http://10.9.9.9:8080")
    with pytest.raises(LabError, match="not on the install network"):
        lab.up(nodes)


def test_lab_cli_against_the_test_driver(tmp_path):
    import os
    import subprocess
    import sys
    env = {**os.environ, "PROVISIONER_STATE_DIR": str(tmp_path / "state")}

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "provisioner", "lab", *args], env=env, capture_output=True,
                              text=True, timeout=60)
    # test:///default lives in one process: up, status and down each open their own, so each
    # sees the driver's starting state; what this proves is that the commands run end to end
    # --no-bmc: the emulators would open test:///default afresh, and listen on the host's loopback
    up = cli("up", "--uri", "test:///default", "--no-watch", "--installer", "anaconda", "--no-bmc",
             "--work-dir", str(tmp_path / "lab"))
    assert up.returncode == 0, up.stderr
    assert "defined network pv-install" in up.stdout and "started pv-controller" in up.stdout
    status = cli("status", "--uri", "test:///default", "--work-dir", str(tmp_path / "lab"))
    assert status.returncode == 0 and "controller" in status.stdout
    bad = cli("up", "--uri", "nosuchdriver:///x", "--no-watch", "--installer", "anaconda")
    assert bad.returncode == 1 and "cannot connect to nosuchdriver:///x" in bad.stderr
