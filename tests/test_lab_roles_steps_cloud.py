"""The whole first-boot chain (hooks/ 01-10, profile debian-13) on the roles lab's five
containers, against the real daemons of Debian 13 (OpenStack 2025.1): MariaDB, RabbitMQ,
Keystone, Glance, Placement, Nova (nova-compute on libvirt with plain QEMU), Neutron with the
Open vSwitch agent on OVS's userspace datapath (the host kernel has no openvswitch module), the
gateway's L3/DHCP/metadata agents and Horizon.

Each node gets its config.env from the service's own code (provisioner.plan.config_env) and the
hooks, and the steps run by hand in plan.yaml's order (a barrier is just that order here; the
runner's barriers are tests/test_hooks_runner.py's). Then: compute services up on compute1-4,
network agents alive, the verification VM ACTIVE with a login prompt on its console, one live
migration to another compute host, Horizon's login page; and a second run of every step changes
nothing.

The VM's image is tests/guestimage.py's (this machine's Debian kernel and busybox behind
SYSLINUX; no CirrOS offline), served to the controller from the lab's side of the install network.

Wall time: not yet measured as one pytest run. The same steps run by hand on this 2-core machine
(shared, load 10-30) took about 35 min for the first run: 13-keystone-create-users alone 12 min
(each openstack CLI call 5-10 s), 09-openstack-gateway/04 3 min, the VM about 3 min to its prompt.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import guestimage  # noqa: E402
from test_lab_roles_substrate import _missing  # noqa: E402

from provisioner.config import load_site  # noqa: E402
from provisioner.lab.roles import containers, rootfs  # noqa: E402
from provisioner.lab.roles.substrate import Substrate  # noqa: E402
from provisioner.plan import HOOKS_DIR, config_env, load_plan  # noqa: E402

PROFILE = "debian-13"
HOOKS = "/opt/provisioner/hooks"
IMAGE_PORT = 8089
STEP_TIMEOUT = 1200          # the longest step (04-check-vm, nova-compute's first start) is minutes
COMPUTES = ("compute1", "compute2", "compute3", "compute4")

# Opt-in: on this project's 2-core machines the run takes 35 min or more (every `openstack` call
# starts slowly), more than the suite's 60-minute CI budget leaves beside the other lab tests.
# PROVISIONER_ROLES_FULL=1 runs it; the README's role section says what it proves.
FULL = pytest.mark.skipif(not os.environ.get("PROVISIONER_ROLES_FULL"),
                          reason="the full role rehearsal takes 35 min or more: set PROVISIONER_ROLES_FULL=1")
pytestmark = [FULL, pytest.mark.skipif(bool(_missing() or guestimage.missing_tools()),
                                     reason=_missing() or guestimage.missing_tools() or "")]


def short(host: str) -> str:
    return host.split(".")[0]      # Nova names hosts by their FQDN, the agents by their short name


class Chain:
    """The lab, each node's configuration and hooks, and what every step printed."""

    def __init__(self, sub: Substrate, nodes, site):
        self.sub, self.nodes, self.site = sub, nodes, site
        self.plan = load_plan()
        self.outputs: dict[tuple[str, str], str] = {}

    def install(self, credentials) -> None:
        state = self.sub._load_state()
        for node in self.nodes:
            root = containers.NodeDirs(Path(state["nodes"][node.hostname]["dir"])).root
            etc = root / "etc/provisioner"
            etc.mkdir(parents=True, exist_ok=True)
            (etc / "config.env").write_text(config_env(self.site, credentials, node, self.nodes, self.plan,
                                                       profile=PROFILE))
            (etc / "config.env").chmod(0o600)
            dest = root / HOOKS.lstrip("/")
            shutil.rmtree(dest, ignore_errors=True)
            shutil.copytree(HOOKS_DIR, dest, ignore=shutil.ignore_patterns("__pycache__"))

    def run_all(self, label: str) -> dict[tuple[str, str], str]:
        """Every step in plan order, each on all its nodes at once; stops at the first failure."""
        outputs = {}
        for step in self.plan.steps:
            hosts = [n.hostname for n in self.nodes if step.applies_to(n.spec.roles)]
            t = time.monotonic()
            with concurrent.futures.ThreadPoolExecutor(len(hosts)) as pool:
                results = dict(zip(hosts, pool.map(lambda h: self._run(h, step.id), hosts)))
            print(f"[{label}] {step.id} on {', '.join(hosts)}: {time.monotonic() - t:.0f}s", flush=True)
            for host, r in results.items():
                outputs[(host, step.id)] = r.stdout + r.stderr
                skipped = [ln for ln in r.stdout.splitlines() if ln.startswith("skipped:")]
                if skipped:
                    print(f"[{label}]   {host}: {skipped[0]}", flush=True)
                assert r.returncode == 0, f"{step.id} failed on {host}:\n{(r.stdout + r.stderr)[-4000:]}"
        return outputs

    def _run(self, host: str, step: str) -> subprocess.CompletedProcess:
        # as a unit of the node's systemd, as the runner's service runs them
        return self.sub.exec(host, ["systemd-run", "--pipe", "--wait", "--quiet", "--collect", "--service-type=exec",
                                    "bash", f"{HOOKS}/{step}.sh"], timeout=STEP_TIMEOUT)

    def openstack(self, *args: str) -> str:
        """An openstack command on the controller as admin, its JSON output parsed."""
        script = ". /etc/provisioner/config.env; " \
                 "export OS_USERNAME=admin OS_PASSWORD=\"$KEYSTONE_ADMIN_PASSWORD\" OS_PROJECT_NAME=admin " \
                 "OS_USER_DOMAIN_NAME=Default OS_PROJECT_DOMAIN_NAME=Default " \
                 "OS_AUTH_URL=http://$CONTROLLER_HOST:5000/v3 OS_IDENTITY_API_VERSION=3; openstack \"$@\""
        r = self.sub.exec("controller", ["bash", "-c", script, "openstack", *args], timeout=900)
        assert r.returncode == 0, f"openstack {' '.join(args)}: {r.stderr[-2000:]}"
        return r.stdout

    def ojson(self, *args: str):
        return json.loads(self.openstack(*args, "-f", "json"))

    def etc_digest(self, host: str) -> dict[str, str]:
        # what the steps write lives under /etc; OVS keeps its database there, which its daemons
        # rewrite on their own, and so do a few daemons' run-time files
        r = self.sub.exec(host, ["bash", "-c", "find /etc -xdev -type f ! -path '/etc/openvswitch/*' "
                                 "! -name '*.pid' ! -path '/etc/lvm/*cache*' -print0 | sort -z | "
                                 "xargs -0 sha256sum"], timeout=120)
        return dict(reversed(line.split("  ", 1)) for line in r.stdout.splitlines())


def start_service(sub: Substrate, state_dir: Path) -> subprocess.Popen:
    """The service itself on the lab's side, for what the steps fetch from it (/hosts)."""
    code = ("import sys; from werkzeug.serving import make_server; from provisioner.app import create_app; "
            "make_server('192.168.0.254', 8080, create_app(sys.argv[1])).serve_forever()")
    service = sub.lab_popen([sys.executable, "-c", code, str(state_dir)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": str(HOOKS_DIR.parents[1])})
    deadline = time.monotonic() + 30
    while not sub.lab_run(["ss", "-Htln", "sport = :8080"]).stdout.strip():
        assert time.monotonic() < deadline and service.poll() is None, "the service did not start"
        time.sleep(0.2)
    return service


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    from provisioner.app import open_context
    work = Path(tempfile.mkdtemp(prefix="pvr-cloud-", dir="/var/tmp"))
    image_dir = tmp_path_factory.mktemp("image")
    image = guestimage.build(image_dir)
    site = load_site()
    site = dataclasses.replace(site, test_image=f"http://192.168.0.254:{IMAGE_PORT}/{image.name}")
    ctx = open_context(tmp_path_factory.mktemp("state"), site)
    nodes = ctx.registry.list()
    cache = os.environ.get("PROVISIONER_LAB_ROLES_CACHE") or rootfs.default_cache_dir()
    sub = Substrate.from_site(site, nodes, cache, work, progress=lambda line: print(f"[substrate] {line}", flush=True))
    server = service = None
    try:
        sub.up(boot_timeout=600)
        server = sub.lab_popen(["python3", "-m", "http.server", "--bind", "192.168.0.254", str(IMAGE_PORT)],
                               cwd=str(image_dir), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        service = start_service(sub, ctx.state_dir)
        c = Chain(sub, nodes, site)
        c.install(ctx.credentials)
        t = time.monotonic()
        c.outputs = c.run_all("first run")
        c.first_run_seconds = time.monotonic() - t
        print(f"[chain] first run of every step: {c.first_run_seconds:.0f}s", flush=True)
        yield c
    finally:
        for proc in (server, service):
            if proc:
                proc.kill()
                proc.wait()
        sub.down()
        ctx.registry.close()
        shutil.rmtree(work, ignore_errors=True)


def test_compute_services_up_on_every_compute_host(chain):
    services = chain.ojson("compute", "service", "list", "--service", "nova-compute")
    up = {short(s["Host"]) for s in services if s["State"] == "up" and s["Status"] == "enabled"}
    assert up == set(COMPUTES), services


def test_network_agents_alive(chain):
    agents = chain.ojson("network", "agent", "list")
    alive = {(a["Agent Type"], short(a["Host"])) for a in agents if a["Alive"] in (True, ":-)")}
    for host in COMPUTES:
        assert ("Open vSwitch agent", host) in alive, agents
    gateway = next(n.hostname for n in chain.nodes if "gateway" in n.spec.roles)
    for kind in ("L3 agent", "DHCP agent", "Metadata agent"):
        assert (kind, gateway) in alive, agents
    # on the userspace datapath, as the agent was told
    r = chain.sub.exec("compute2", ["ovs-vsctl", "get", "bridge", "br-int", "datapath_type"])
    assert r.stdout.strip().strip('"') == "netdev"


def test_the_gateways_uplink_keeps_its_address(chain):
    # item 5: the public NIC is not in br-provider and still holds its DHCP address
    gw = next(n for n in chain.nodes if "gateway" in n.spec.roles)
    public = next(nic.name for nic in gw.spec.nics if nic.mode == "dhcp")
    ports = chain.sub.exec(gw.hostname, ["ovs-vsctl", "list-ports", "br-provider"]).stdout.split()
    assert public not in ports
    addrs = json.loads(chain.sub.exec(gw.hostname, ["ip", "-j", "-4", "addr", "show", public]).stdout)
    assert addrs and addrs[0]["addr_info"], addrs


def test_the_vm_is_active_and_reached_its_login_prompt(chain):
    server = chain.ojson("server", "show", "test-cirros")
    assert server["status"] == "ACTIVE"
    assert "test-cirros reached its login prompt" in chain.outputs[("controller", "10-openstack-controller/04-check-vm")]
    console = chain.openstack("console", "log", "show", "test-cirros")
    assert re.search(rf"^{guestimage.HOSTNAME} login:", console, re.M), console[-2000:]
    print("[chain] console says:", [ln for ln in console.splitlines() if "test-vm:" in ln])


def test_a_live_migration_moves_the_vm_to_another_compute_host(chain):
    before = short(chain.ojson("server", "show", "test-cirros")["OS-EXT-SRV-ATTR:host"])
    t = time.monotonic()
    chain.openstack("server", "migrate", "--live-migration", "--wait", "test-cirros")
    server = chain.ojson("server", "show", "test-cirros")
    after = short(server["OS-EXT-SRV-ATTR:host"])
    print(f"[chain] live migration {before} -> {after} in {time.monotonic() - t:.0f}s")
    assert server["status"] == "ACTIVE"
    assert after != before and after in COMPUTES
    migrations = chain.ojson("server", "migration", "list", "--server", "test-cirros", "--type", "live-migration")
    assert any(m["Status"] == "completed" for m in migrations), migrations


def test_horizon_login_page(chain):
    gateway = next(n for n in chain.nodes if "gateway" in n.spec.roles)
    r = chain.sub.exec("controller", ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "120",
                                      f"http://{gateway.spec.ip}/horizon/auth/login/"])
    assert r.stdout == "200", (r.stdout, r.stderr)


def test_a_second_run_changes_nothing(chain):
    before = {n.hostname: chain.etc_digest(n.hostname) for n in chain.nodes}
    server = chain.ojson("server", "show", "test-cirros")
    outputs = chain.run_all("second run")
    changed = {k: [ln for ln in v.splitlines() if re.match(r"(wrote |set \[|set a line )", ln)]
               for k, v in outputs.items()}
    assert {k: v for k, v in changed.items() if v} == {}
    after = {n.hostname: chain.etc_digest(n.hostname) for n in chain.nodes}
    diff = {h: sorted(set(before[h].items()) ^ set(after[h].items())) for h in before}
    assert {h: d for h, d in diff.items() if d} == {}
    again = chain.ojson("server", "show", "test-cirros")
    assert (again["id"], again["status"]) == (server["id"], "ACTIVE")
