"""site.yaml: the embedded default is the report's testbed; bad input names the bad key."""

import copy
from importlib import resources

import pytest
import yaml

from provisioner.config import ConfigError, load_site, parse_site
from tests.conftest import REPORT_COMPUTE_DISK, REPORT_CONTROLLER_DISK


@pytest.fixture
def raw():
    return yaml.safe_load(resources.files("provisioner").joinpath("site.yaml").read_text())


def test_default_site_is_the_reports_testbed(site):
    assert str(site.network) == "192.168.0.0/24"
    assert site.gateway == "192.168.0.1"
    by_name = {n.hostname: n for n in site.nodes}
    assert list(by_name) == ["compute1", "compute2", "compute3", "compute4", "controller"]
    for i in range(1, 5):
        n = by_name[f"compute{i}"]
        assert (n.ip, n.interface, n.mac, n.disk_bytes) == (
            f"192.168.0.{i}", "nic1", f"52:54:00:0c:00:0{i}", REPORT_COMPUTE_DISK)
        assert "compute" in n.roles
    c1 = by_name["compute1"]
    assert c1.aliases == ("gateway",) and c1.roles == ("compute", "gateway")
    assert [(x.mac, x.name, x.mode) for x in c1.nics] == [("52:54:00:0c:01:01", "nic0", "dhcp")]
    ctl = by_name["controller"]
    assert (ctl.ip, ctl.interface, ctl.mac, ctl.roles, ctl.disk_bytes) == (
        "192.168.0.5", "nic0", "52:54:00:0c:00:05", ("controller",), REPORT_CONTROLLER_DISK)
    assert site.ntp_servers and site.domain
    assert site.os_name == "CentOS Stream" and site.os_version == "9"
    assert site.install_tree.endswith("/9-stream/BaseOS/x86_64/os/")
    assert site.openstack_release
    assert site.layout_for(("compute", "gateway")).name == "compute"
    assert site.layout_for(("controller",)).name == "controller"


def test_default_site_warns_about_table2(site):
    assert any("lv_images" in w and "4 MiB smaller" in w for w in site.warnings)


def test_a_site_file_on_disk_loads(tmp_path, raw):
    raw["ntp_servers"] = ["ntp.example.org"]
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(raw))
    site = load_site(path)
    assert site.ntp_servers == ("ntp.example.org",) and site.source == str(path)


@pytest.mark.parametrize("mutate, where", [
    (lambda d: d.update(colour="blue"), r"^colour: unknown key"),
    (lambda d: d["network"].update(cidr="192.168.0.1/24"), r"^network\.cidr: .*host bits set"),
    (lambda d: d["network"].update(gateway="10.0.0.1"), r"^network\.gateway: 10\.0\.0\.1 is not inside"),
    (lambda d: d["service"].update(url="ftp://x"), r"^service\.url: 'ftp://x' is not an http"),
    (lambda d: d.update(ntp_servers="pool.ntp.org"), r"^ntp_servers: must be a list"),
    (lambda d: d["ntp_servers"].append("bad host!"), r"^ntp_servers\[3\]: 'bad host!'"),
    (lambda d: d["os"]["repos"][0].update(baseurl="{nope}/x"), r"^os\.repos\[0\]\.baseurl: unknown placeholder"),
    (lambda d: d["roles"]["gateway"].update(requires=["router"]), r"^roles\.gateway\.requires\[0\]: no role named 'router'"),
    (lambda d: d["roles"]["compute"].update(layout="tiny"), r"^roles\.compute\.layout: no layout named 'tiny'"),
    (lambda d: d["layouts"]["compute"]["partitions"][0].update(size=-1), r"^layouts\.compute\.partitions\[0\]\.size"),
    (lambda d: d["nodes"][1].update(mac="52:54:00:0c:00"), r"^nodes\[1\]\.mac: .* is not a MAC"),
    (lambda d: d["nodes"][1].update(ip="192.168.1.2"), r"^nodes\[1\]\.ip: 192\.168\.1\.2 is not inside"),
    (lambda d: d["nodes"][1].update(ip="192.168.0.255"), r"^nodes\[1\]\.ip: .* broadcast address"),
    (lambda d: d["nodes"][1].update(ip="192.168.0.1"), r"^nodes\[1\]\.ip: 192\.168\.0\.1 is the network's gateway"),
    (lambda d: d["nodes"][1].update(hostname="compute_2"), r"^nodes\[1\]\.hostname: 'compute_2' is not a host name"),
    (lambda d: d["nodes"][1].update(roles=["storage"]), r"^nodes\[1\]\.roles\[0\]: unknown role 'storage'"),
    (lambda d: d["nodes"][1].update(roles=["gateway"]), r"^nodes\[1\]\.roles: role 'gateway' requires role 'compute'"),
    (lambda d: d["nodes"][1].update(roles=["compute", "controller"]), r"ask for different storage layouts"),
    (lambda d: d["nodes"][1].update(disk_bytes=10**9), r"^nodes\[1\]\.disk_bytes: layout compute needs 238475 MiB"),
    (lambda d: d["nodes"][2].update(hostname="compute2"), r"^nodes\[2\]: hostname compute2 is already used by compute2"),
    (lambda d: d["nodes"][2].update(hostname="gateway"), r"^nodes\[2\]: hostname gateway is already used by compute1"),
    (lambda d: d["nodes"][2].update(ip="192.168.0.2"), r"^nodes\[2\]: IP 192\.168\.0\.2 is already used by compute2"),
    (lambda d: d["nodes"][2].update(mac="52-54-00-0C-00-02"), r"^nodes\[2\]: MAC 52:54:00:0c:00:02 is already used"),
    (lambda d: d["nodes"][0]["nics"][0].update(mode="static"), r"^nodes\[0\]\.nics\[0\]\.mode: 'static' is not one of"),
    (lambda d: d["nodes"][0]["nics"][0].update(name="eth1"), r"^nodes\[0\]\.nics: interface name nic1 is given twice"),
])
def test_bad_site_names_the_bad_key(raw, mutate, where):
    data = copy.deepcopy(raw)
    mutate(data)
    with pytest.raises(ConfigError, match=where):
        parse_site(data)


def test_unreadable_or_broken_files_say_so(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_site(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("network: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_site(bad)
