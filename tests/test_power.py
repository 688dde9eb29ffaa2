"""Power control through nodes' BMCs, against the real emulators on libvirt's test driver:
sushy-tools' Redfish emulator and VirtualBMC's vbmcd (IPMI), each its own process listening on
127.0.0.1 only, plus libvirt's test driver in this process for libvirt:// lab URLs."""

import json
import logging
import os
import signal
import socket
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from provisioner.config import NodeSpec
from provisioner.power import control
from provisioner.power.base import OFF, ON, Unreachable
from provisioner.power.bmc import Bmc, InvalidBmc, check_url
from provisioner.registry.db import Node
from tests.conftest import new_node

SYSTEM = "6695eb01-f6a4-8304-79aa-97f2502e193f"      # the test driver's one domain, "test"
PASSWORD = "Never-Shown-7f3a"
FAST = control.Settings(timeout=3, deadline=10, attempts=2, backoff=0.05, poll=0.1)

# libvirt's test:///default lives as long as some connection to it in the process is open: the
# emulators open and close one per request, so every request would see a fresh "test" domain.
# Each emulator process holds one open from its start (VirtualBMC's children are forked from
# vbmcd, and inherit it).
HOLD_TEST_DRIVER = "import libvirt\n_held = libvirt.open('test:///default')\n"
# the Redfish emulator accepts a reset and answers 204, but the power never changes
STUCK_POWER = (HOLD_TEST_DRIVER + "from sushy_tools.emulator.resources.systems import libvirtdriver\n"
               "libvirtdriver.LibvirtDriver.set_power_state = lambda self, identity, state: None\n")


def free_port(kind=socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _site_dir(tmp_path: Path, name: str, code: str) -> Path:
    d = tmp_path / name
    d.mkdir()
    (d / "sitecustomize.py").write_text(code)
    return d


def _stop(proc: subprocess.Popen) -> None:
    # its own session: the group is this emulator and the children it forked, nothing else
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


class Emulator:
    def __init__(self, url: str, user: str, password: str, log: Path):
        self.url, self.user, self.password, self.log = url, user, password, log

    def system(self) -> dict:
        base = self.url.replace("redfish://", "http://")
        return requests.get(base, auth=(self.user, self.password), timeout=5).json()


def _sushy(tmp_path: Path, name: str, code: str):
    import bcrypt
    d = tmp_path / name
    d.mkdir()
    (d / "htpasswd").write_text(f"admin:{bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()}\n")
    (d / "emulator.conf").write_text(f"SUSHY_EMULATOR_AUTH_FILE = {str(d / 'htpasswd')!r}\n")
    port = free_port()
    log = d / "log"
    env = {**os.environ, "PYTHONPATH": str(_site_dir(d, "site", code))}
    with open(log, "w") as out:
        proc = subprocess.Popen(["sushy-emulator", "-i", "127.0.0.1", "-p", str(port), "--libvirt-uri",
                                 "test:///default", "--config", str(d / "emulator.conf")],
                                stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    deadline = time.monotonic() + 30
    while True:
        try:
            requests.get(f"http://127.0.0.1:{port}/redfish/v1/", timeout=2)
            break
        except requests.ConnectionError:
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
    return proc, Emulator(f"redfish://127.0.0.1:{port}/redfish/v1/Systems/{SYSTEM}", "admin", PASSWORD, log)


@pytest.fixture
def redfish(tmp_path):
    proc, emulator = _sushy(tmp_path, "redfish", HOLD_TEST_DRIVER)
    yield emulator
    _stop(proc)


@pytest.fixture
def stuck_redfish(tmp_path):
    proc, emulator = _sushy(tmp_path, "stuck", STUCK_POWER)
    yield emulator
    _stop(proc)


@pytest.fixture
def ipmi(tmp_path):
    """vbmcd with its own configuration and state in tmp_path; one BMC for the test domain."""
    d = tmp_path / "vbmc"
    (d / "conf").mkdir(parents=True)
    control_port, ipmi_port = free_port(), free_port(socket.SOCK_DGRAM)
    (d / "virtualbmc.conf").write_text(
        f"[default]\nconfig_dir = {d / 'conf'}\npid_file = {d / 'vbmcd.pid'}\nserver_port = {control_port}\n"
        f"[log]\nlogfile = {d / 'vbmc.log'}\n")
    env = {**os.environ, "VIRTUALBMC_CONFIG": str(d / "virtualbmc.conf"),
           "PYTHONPATH": str(_site_dir(d, "site", HOLD_TEST_DRIVER))}
    with open(d / "out", "w") as out:
        proc = subprocess.Popen(["vbmcd", "--foreground"], stdout=out, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while subprocess.run(["vbmc", "list"], env=env, capture_output=True, timeout=30).returncode:
            assert proc.poll() is None and time.monotonic() < deadline, (d / "out").read_text()
            time.sleep(0.3)
        subprocess.run(["vbmc", "add", "test", "--address", "127.0.0.1", "--port", str(ipmi_port),
                        "--username", "admin", "--password", PASSWORD, "--libvirt-uri", "test:///default"],
                       env=env, check=True, capture_output=True, timeout=30)
        subprocess.run(["vbmc", "start", "test"], env=env, check=True, capture_output=True, timeout=30)
        yield Emulator(f"ipmi://127.0.0.1:{ipmi_port}", "admin", PASSWORD, d / "vbmc.log")
    finally:
        _stop(proc)


def node_with(bmc: Bmc | None, mac="52:54:00:aa:00:10", hostname="compute10") -> Node:
    spec = NodeSpec(mac=mac, hostname=hostname, ip="192.168.0.10", roles=("compute",), bmc=bmc)
    return Node(1, spec, "installed", False, "", None, "api", "t", "t")


def add(client, admin, bmc: dict, **over):
    resp = client.post("/api/v1/nodes", json=new_node(bmc=bmc, **over), headers=admin)
    assert resp.status_code == 201, resp.get_json()
    return resp.get_json()


def bmc_of(emulator: Emulator, **over) -> dict:
    return {"url": emulator.url, "username": emulator.user, "password": emulator.password, **over}


def power(client, admin, action, mac="52:54:00:aa:00:10"):
    return client.post(f"/api/v1/nodes/{mac}/power", json={"action": action}, headers=admin)


def no_secret_anywhere(state_dir: Path, registry, client, text=PASSWORD):
    """The password is in no answer, no event, and not in the registry's file in clear text."""
    listing = client.get("/api/v1/nodes").get_data(as_text=True)
    assert text not in listing
    for n in registry.list():
        assert text not in json.dumps([e.as_dict() for e in registry.events(n.mac)])
        assert text not in repr(n)
    registry.close()
    for f in state_dir.iterdir():
        if f.name.startswith("registry.sqlite3"):
            assert text.encode() not in f.read_bytes(), f


# -- validation and storage ---------------------------------------------------------------------

@pytest.mark.parametrize("url", [
    "redfish://10.0.0.5/redfish/v1/Systems/1", "redfish://bmc-r1.example:8000/redfish/v1/Systems/abc-1",
    "redfish+https://[fd00::5]:443/redfish/v1/Systems/System.Embedded.1", "ipmi://10.0.0.5",
    "ipmi://bmc7:6230", "libvirt://compute1", "libvirt://lab-compute_2"])
def test_bmc_urls_accepted(url):
    assert check_url(url) == url


@pytest.mark.parametrize("url, why", [
    ("http://10.0.0.5/redfish/v1/Systems/1", "is not one of"),
    ("redfish://10.0.0.5/redfish/v1/Systems/", "/redfish/v1/Systems/<id>"),
    ("redfish://10.0.0.5/redfish/v1/Managers/1", "/redfish/v1/Systems/<id>"),
    ("redfish://admin:pw@10.0.0.5/redfish/v1/Systems/1", "no user name or password in the URL"),
    ("ipmi://10.0.0.5:99999", "port"),
    ("ipmi://10.0.0.5/x", "no path"),
    ("ipmi://bad_host!", "host name"),
    ("libvirt://a/b", "libvirt://<domain>"),
    ("redfish://10.0.0.5/redfish/v1/Systems/1?x=1", "no query"),
])
def test_bmc_urls_refused(url, why):
    with pytest.raises(InvalidBmc, match="url") as e:
        check_url(url)
    assert why in str(e.value)


def test_the_password_is_sealed_never_shown_and_never_logged(client, admin, registry, state_dir, caplog):
    caplog.set_level(logging.DEBUG)
    body = add(client, admin, {"url": "ipmi://10.0.0.5", "username": "root", "password": PASSWORD})
    assert body["bmc"] == {"url": "ipmi://10.0.0.5", "username": "root", "password_set": True}
    key = state_dir / "bmc.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    raw = sqlite3.connect(state_dir / "registry.sqlite3").execute("SELECT bmc FROM nodes WHERE bmc IS NOT NULL")
    stored = json.loads(raw.fetchone()[0])
    assert stored["url"] == "ipmi://10.0.0.5" and PASSWORD not in stored["password"]
    # the registry gives it back to power control, and to nothing else
    assert registry.get("52:54:00:aa:00:10").spec.bmc.password == PASSWORD
    # a new URL keeps the password (it is never read back to be sent again)
    resp = client.patch("/api/v1/nodes/52:54:00:aa:00:10", json={"bmc": {"url": "ipmi://10.0.0.6:6230"}},
                        headers=admin)
    assert resp.status_code == 200 and resp.get_json()["bmc"]["password_set"] is True
    assert registry.get("52:54:00:aa:00:10").spec.bmc.password == PASSWORD
    events = client.get("/api/v1/nodes/52:54:00:aa:00:10/events").get_json()["events"]
    assert events[-1]["detail"] == {"changed": ["bmc"]}
    no_secret_anywhere(state_dir, registry, client)
    assert PASSWORD not in caplog.text
    # without the key the password cannot be read, and the node says so
    key.unlink()
    assert client.get("/api/v1/nodes/52:54:00:aa:00:10").get_json()["bmc"]["password_set"] is False
    resp = power(client, admin, "status")
    assert resp.status_code == 502 and "bmc.key" in resp.get_json()["detail"]
    resp = client.patch("/api/v1/nodes/52:54:00:aa:00:10", json={"bmc": None}, headers=admin)
    assert resp.get_json()["bmc"] is None


@pytest.mark.parametrize("bmc, message", [
    ("ipmi://x", "bmc: must be an object"),
    ({"url": "ipmi://x", "username": "u"}, "bmc.password: required"),
    ({"url": "ipmi://x", "username": "u", "password": PASSWORD, "port": "1"}, "bmc.port: unknown key"),
    ({"url": "ipmi://x", "username": "u", "password": 5}, "bmc.password: must be a string"),
    ({"url": "ipmi://x", "username": "u", "password": "x" * 300}, "bmc.password: must be 1 to 256"),
    ({"url": "http://x", "username": "u", "password": PASSWORD}, "bmc.url:"),
])
def test_invalid_bmc_is_a_400_naming_the_field_never_the_password(client, admin, bmc, message):
    resp = client.post("/api/v1/nodes", json=new_node(bmc=bmc), headers=admin)
    assert resp.status_code == 400
    body = resp.get_json()
    assert body["field"] == "bmc" and message in body["detail"], body
    assert PASSWORD not in body["detail"] and "x" * 300 not in body["detail"]


def test_site_file_bmc_with_a_password_file(tmp_path, state_dir):
    import yaml
    from importlib import resources

    from provisioner.app import open_context
    data = yaml.safe_load(resources.files("provisioner").joinpath("site.yaml").read_text())
    (tmp_path / "bmc-pw").write_text(PASSWORD + "\n")
    data["nodes"][0]["bmc"] = {"url": "ipmi://10.0.0.9", "username": "root", "password_file": "bmc-pw"}
    site = tmp_path / "site.yaml"
    site.write_text(yaml.safe_dump(data))
    ctx = open_context(state_dir, site)
    node = ctx.registry.get(data["nodes"][0]["mac"])
    assert node.spec.bmc == Bmc("ipmi://10.0.0.9", "root", PASSWORD)
    # read again unchanged: nothing to update (the sealed copy compares by its clear text)
    assert ctx.registry.sync_site(ctx.site) == []
    data["nodes"][0]["bmc"]["password"] = "also"
    site.write_text(yaml.safe_dump(data))
    from provisioner.config import ConfigError, load_site
    with pytest.raises(ConfigError, match="password or password_file, not both"):
        load_site(site)


# -- Redfish, against sushy-tools' emulator -----------------------------------------------------

def test_redfish_power_actions_are_events(client, admin, registry, state_dir, redfish, caplog):
    caplog.set_level(logging.DEBUG)
    add(client, admin, bmc_of(redfish))
    resp = power(client, admin, "status")
    assert resp.status_code == 200, resp.get_json()
    assert resp.get_json() == {"node": "compute10", "mac": "52:54:00:aa:00:10", "action": "status", "ok": True,
                               "power": "on", "error": None}
    assert power(client, admin, "off").get_json()["power"] == "off"
    assert redfish.system()["PowerState"] == "Off"
    assert power(client, admin, "off").get_json()["power"] == "off"        # already off: nothing sent
    assert power(client, admin, "on").get_json()["power"] == "on"
    assert redfish.system()["PowerState"] == "On"
    assert power(client, admin, "cycle").get_json()["power"] == "on"
    resets = [line for line in redfish.log.read_text().splitlines() if "ComputerSystem.Reset" in line]
    assert len(resets) == 4             # off, on, and the cycle's off and on: each sent once
    events = [e for e in registry.events("52:54:00:aa:00:10") if e.type == "power"]
    assert [(e.detail["action"], e.detail["result"], e.detail["power"]) for e in events] == [
        ("off", "ok", "off"), ("off", "ok", "off"), ("on", "ok", "on"), ("cycle", "ok", "on")]
    assert events[0].detail["url"] == redfish.url
    no_secret_anywhere(state_dir, registry, client)
    assert PASSWORD not in caplog.text


def test_rebuild_power_cycle_sets_a_one_time_network_boot_and_cycles(client, admin, registry, redfish):
    add(client, admin, bmc_of(redfish))
    registry.callback("52:54:00:aa:00:10", registry.get("52:54:00:aa:00:10").install_token, "installed", None)
    assert registry.get("52:54:00:aa:00:10").netboot is False
    calls = []
    real = requests.Session.request

    def spy(self, method, url, *args, **kwargs):
        if method != "GET":
            calls.append((method, url.rsplit("/", 1)[-1], kwargs.get("json")))
        return real(self, method, url, *args, **kwargs)
    requests.Session.request = spy
    try:
        resp = client.post("/api/v1/nodes/52:54:00:aa:00:10/rebuild", json={"power_cycle": True}, headers=admin)
    finally:
        requests.Session.request = real
    assert resp.status_code == 200, resp.get_json()
    body = resp.get_json()
    assert body["netboot"] is True and body["state"] == "registered" and body["power"] == "on"
    # the boot override first, once, then the power: off and on
    assert calls[0] == ("PATCH", SYSTEM, {"Boot": {"BootSourceOverrideTarget": "Pxe",
                                                   "BootSourceOverrideEnabled": "Once"}})
    assert [c[2] for c in calls[1:]] == [{"ResetType": "ForceOff"}, {"ResetType": "On"}]
    # the emulator's libvirt driver keeps the target, though it cannot keep "Once"
    assert redfish.system()["Boot"]["BootSourceOverrideTarget"] == "Pxe"
    last = registry.events("52:54:00:aa:00:10")[-1]
    assert last.type == "power" and last.detail["boot"] == "pxe once" and last.detail["result"] == "ok"


def test_redfish_wrong_credentials_is_a_clear_error_and_not_retried(client, admin, registry, state_dir, redfish,
                                                                       caplog):
    add(client, admin, bmc_of(redfish, password="Wrong-Pass-Never-Shown"))
    start = time.monotonic()
    resp = power(client, admin, "cycle")
    assert resp.status_code == 502
    detail = resp.get_json()["detail"]
    assert detail.startswith(f"compute10: BMC {redfish.url}: the BMC refused the credentials")
    assert "'admin'" in detail and "not retried" in detail
    assert time.monotonic() - start < 3
    assert redfish.log.read_text().count(" 401 ") == 1
    assert registry.events("52:54:00:aa:00:10")[-1].detail["result"] == "failed"
    no_secret_anywhere(state_dir, registry, client, "Wrong-Pass-Never-Shown")
    assert "Wrong-Pass-Never-Shown" not in caplog.text


def test_a_bmc_that_is_down_is_retried_with_backoff_then_named(registry):
    bmc = Bmc(f"redfish://127.0.0.1:{free_port()}/redfish/v1/Systems/x", "admin", PASSWORD)
    start = time.monotonic()
    with pytest.raises(control.BmcFailed) as e:
        control.act(node_with(bmc), "status", settings=control.Settings(attempts=3, backoff=0.2, timeout=2))
    assert time.monotonic() - start >= 0.2 + 0.4
    assert e.value.detail.startswith(f"compute10: BMC {bmc.url}: cannot reach the BMC")
    assert "(3 attempts)" in e.value.detail and PASSWORD not in e.value.detail


def test_a_power_state_that_never_changes_fails_at_the_deadline(client, admin, registry, stuck_redfish):
    node = node_with(Bmc(stuck_redfish.url, stuck_redfish.user, stuck_redfish.password))
    start = time.monotonic()
    with pytest.raises(control.BmcFailed) as e:
        control.act(node, "off", settings=control.Settings(deadline=2, poll=0.2))
    assert 2 <= time.monotonic() - start < 10
    assert e.value.detail == (f"compute10: BMC {stuck_redfish.url}: asked for power off, but it is still on "
                              "after 2s; before this: power off sent, so the node may be in between")
    # the reset was sent once, never again, however long it waited
    assert stuck_redfish.log.read_text().count("ComputerSystem.Reset") == 1


def test_rebuild_whose_power_cycle_fails_stays_armed_and_says_so(client, admin, registry, stuck_redfish):
    add(client, admin, bmc_of(stuck_redfish, password="Wrong-Pass-Never-Shown"))
    registry.callback("52:54:00:aa:00:10", registry.get("52:54:00:aa:00:10").install_token, "installed", None)
    resp = client.post("/api/v1/nodes/52:54:00:aa:00:10/rebuild", json={"power_cycle": True}, headers=admin)
    assert resp.status_code == 502
    body = resp.get_json()
    assert body["detail"].startswith("compute10 is rebuilt and armed for install, but the power cycle failed")
    assert stuck_redfish.url in body["detail"] and "refused the credentials" in body["detail"]
    assert body["node"]["netboot"] is True and body["node"]["state"] == "registered"
    node = registry.get("52:54:00:aa:00:10")
    assert node.netboot and node.state == "registered"
    types = [e.type for e in registry.events(node.mac)][-2:]
    assert types == ["rebuild", "power"]
    # a node without a BMC is not re-armed at all
    resp = client.post("/api/v1/nodes/52:54:00:0c:00:01/rebuild", json={"power_cycle": True}, headers=admin)
    assert resp.status_code == 409 and "not rebuilt" in resp.get_json()["detail"]
    assert registry.events("52:54:00:0c:00:01")[-1].type != "rebuild"


# -- IPMI, against VirtualBMC's vbmcd -----------------------------------------------------------

def test_ipmi_power_and_one_time_network_boot(ipmi, registry):
    from provisioner.power.ipmi import IpmiDriver
    node = node_with(Bmc(ipmi.url, ipmi.user, ipmi.password))
    assert control.act(node, "status", settings=FAST) == ON
    assert control.act(node, "off", settings=FAST) == OFF
    assert control.act(node, "status", settings=FAST) == OFF
    assert control.act(node, "cycle", settings=FAST, pxe_once=True) == ON     # off: cycle is on
    assert control.act(node, "cycle", settings=FAST) == ON
    # through the driver's own pyghmi Command: a second one for the same BMC and user hangs
    driver = IpmiDriver(Bmc(ipmi.url, ipmi.user, ipmi.password), 3)
    try:
        assert driver._cmd.get_bootdev()["bootdev"] == "network"
        assert driver._cmd.get_power()["powerstate"] == "on"
    finally:
        driver.close()


def test_ipmi_wrong_password_and_a_bmc_that_is_down(ipmi):
    node = node_with(Bmc(ipmi.url, ipmi.user, "Wrong-Pass-Never-Shown"))
    with pytest.raises(control.BmcFailed) as e:
        control.act(node, "on", settings=FAST)
    assert e.value.detail.startswith(f"compute10: BMC {ipmi.url}: the BMC refused the credentials")
    assert "Wrong-Pass-Never-Shown" not in e.value.detail
    down = f"ipmi://127.0.0.1:{free_port(socket.SOCK_DGRAM)}"
    with pytest.raises(control.BmcFailed) as e:
        control.act(node_with(Bmc(down, "admin", PASSWORD)), "status", settings=FAST)
    assert e.value.detail.startswith(f"compute10: BMC {down}: cannot reach the BMC") and "(2 attempts)" in e.value.detail


# -- libvirt:// lab URLs, against the test driver in this process ---------------------------------

def test_libvirt_lab_urls(monkeypatch):
    monkeypatch.setenv("PROVISIONER_LIBVIRT_URI", "test:///default")
    import libvirt
    held = libvirt.open("test:///default")      # keeps the test driver's state between actions
    try:
        node = node_with(Bmc("libvirt://test", "-", "-"))
        assert control.act(node, "off", settings=FAST) == OFF
        assert not held.lookupByName("test").isActive()
        assert control.act(node, "cycle", settings=FAST) == ON
        with pytest.raises(control.BmcFailed, match="compute10: BMC libvirt://gone: libvirt at test:///default has "
                                                    "no domain 'gone'"):
            control.act(node_with(Bmc("libvirt://gone", "-", "-")), "status", settings=FAST)
    finally:
        held.close()


# -- many nodes at once, and what is never retried -------------------------------------------------

class FakeRegistry:
    def __init__(self):
        self.events = []
        self.lock = threading.Lock()

    def add_event(self, mac, type_, detail):
        with self.lock:
            self.events.append((mac, type_, detail))


class CountingBmc:
    """Counts BMC sessions open at once."""

    def __init__(self):
        self.open = self.most = self.total = 0
        self.lock = threading.Lock()

    def __call__(self, bmc, timeout):
        with self.lock:
            self.open += 1
            self.total += 1
            self.most = max(self.most, self.open)
        return FakeDriver(self)


class FakeDriver:
    def __init__(self, counter):
        self.counter, self.state = counter, ON

    def power_state(self):
        time.sleep(0.01)
        return self.state

    def set_power(self, state):
        self.state = state

    def boot_pxe_once(self):
        pass

    def close(self):
        with self.counter.lock:
            self.counter.open -= 1


def _nodes(n):
    return [node_with(Bmc(f"ipmi://10.0.{i // 200}.{i % 200 + 1}", "u", PASSWORD), mac=f"52:54:00:ab:{i // 256:02x}:"
                      f"{i % 256:02x}", hostname=f"n{i}") for i in range(n)]


@pytest.mark.parametrize("limit", [20, 5])
def test_two_hundred_nodes_never_open_more_than_the_pool_allows(limit):
    counter, reg = CountingBmc(), FakeRegistry()
    outcomes = control.power_many(reg, _nodes(200), "cycle", limit=limit, settings=FAST, opener=counter)
    assert [o.power for o in outcomes] == [ON] * 200 and all(o.ok for o in outcomes)
    assert counter.total == 200 and counter.open == 0
    assert counter.most == limit        # bounded, and the bound is used
    assert len(reg.events) == 200 and all(t == "power" for _, t, _ in reg.events)


def test_the_default_pool_is_twenty():
    counter = CountingBmc()
    control.power_many(FakeRegistry(), _nodes(60), "status", settings=FAST, opener=counter)
    assert counter.most == 20


def test_a_lost_answer_to_a_power_change_is_not_sent_again():
    sent = []

    class LostAnswer(FakeDriver):
        def set_power(self, state):
            sent.append(state)
            raise Unreachable("cannot reach the BMC: read timed out")
    node = node_with(Bmc("ipmi://10.0.0.1", "u", PASSWORD))
    with pytest.raises(control.BmcFailed) as e:
        control.act(node, "cycle", settings=FAST, opener=lambda b, t: LostAnswer(CountingBmc()))
    assert sent == [OFF]
    assert e.value.detail == ("compute10: BMC ipmi://10.0.0.1: cannot reach the BMC: read timed out; before this: "
                              "power off sent, so the node may be in between")


def test_status_reads_are_retried_while_the_bmc_does_not_answer():
    reads = []

    class Flaky(FakeDriver):
        def power_state(self):
            reads.append(1)
            if len(reads) < 3:
                raise Unreachable("cannot reach the BMC: connection reset")
            return ON
    node = node_with(Bmc("ipmi://10.0.0.1", "u", PASSWORD))
    assert control.act(node, "status", settings=control.Settings(attempts=3, backoff=0.01),
                       opener=lambda b, t: Flaky(CountingBmc())) == ON
    assert len(reads) == 3


# -- the command line ------------------------------------------------------------------------------

def run(state_dir, *args, ok=True, env=None):
    proc = subprocess.run([sys.executable, "-m", "provisioner", "--state-dir", str(state_dir), *args],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PROVISIONER_LIBVIRT_URI": "test:///default", **(env or {})})
    if ok is not None:
        assert (proc.returncode == 0) == ok, proc.stderr + proc.stdout
    return proc


def test_cli_nodes_bmc_power_and_rebuild(tmp_path, redfish):
    state = tmp_path / "state"
    pw = tmp_path / "pw"
    pw.write_text(PASSWORD + "\n")
    run(state, "nodes", "add", "--mac", "52:54:00:aa:00:10", "--hostname", "compute10", "--ip", "192.168.0.10",
        "--role", "compute", "--bmc", redfish.url, "--bmc-user", "admin", "--bmc-password-file", str(pw))
    run(state, "nodes", "add", "--mac", "52:54:00:aa:00:11", "--hostname", "compute11", "--ip", "192.168.0.11",
        "--role", "compute", "--bmc", "libvirt://gone", "--bmc-user", "x", "--bmc-password-file", str(pw))
    out = run(state, "nodes", "add", "--mac", "52:54:00:aa:00:12", "--hostname", "compute12", "--ip",
              "192.168.0.12", "--role", "compute", "--bmc", "libvirt://x", ok=False).stderr
    assert "needs --bmc, --bmc-user and --bmc-password-file" in out
    shown = run(state, "nodes", "show", "52:54:00:aa:00:10").stdout
    assert json.loads(shown)["bmc"] == {"url": redfish.url, "username": "admin", "password_set": True}
    assert PASSWORD not in shown
    assert run(state, "power", "status", "compute10").stdout.split() == ["compute10", "on"]
    out = run(state, "power", "off", "compute10", "52:54:00:aa:00:11", ok=False)
    assert out.stdout.split() == ["compute10", "off"]
    assert "compute11" in out.stderr and "FAILED: compute11: BMC libvirt://gone" in out.stderr
    assert "power off: 1 of 2 nodes failed" in out.stderr
    assert redfish.system()["PowerState"] == "Off"
    out = run(state, "rebuild", "--power-cycle", "compute10").stdout
    assert "compute10" in out and "armed for install, booting from the network (power on)" in out
    out = run(state, "rebuild", "--power-cycle", "compute11", ok=False).stderr
    assert "compute11 is rebuilt and armed for install, but the power cycle failed" in out
    # a new password from a file; the URL stays
    (tmp_path / "pw2").write_text("Wrong\n")
    run(state, "nodes", "change", "52:54:00:aa:00:10", "--bmc-password-file", str(tmp_path / "pw2"))
    out = run(state, "power", "on", "compute10", ok=False).stderr
    assert f"compute10: BMC {redfish.url}: the BMC refused the credentials" in out
    run(state, "nodes", "change", "52:54:00:aa:00:10", "--no-bmc")
    out = run(state, "power", "on", "compute10", ok=False).stderr
    assert "compute10 has no BMC" in out
    assert "no node is named 'nope'" in run(state, "power", "on", "nope", ok=False).stderr
