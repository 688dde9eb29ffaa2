"""The first-boot runner against the real service: plans per role, barriers computed from the
hosts' reports, resume after a failed step, and wrong tokens refused."""

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import requests

from provisioner.plan import HOOKS_DIR, load_plan

MACS = {"compute1": "52:54:00:0c:00:01", "compute2": "52:54:00:0c:00:02", "compute3": "52:54:00:0c:00:03",
        "compute4": "52:54:00:0c:00:04", "controller": "52:54:00:0c:00:05"}


@pytest.fixture
def cloud(live_server, state_dir):
    """Every node installed (kickstart fetched, %post reported), first-boot credentials in hand."""
    from provisioner.registry.db import Registry
    reg = Registry.in_state_dir(state_dir)
    tokens = {}
    for host, mac in MACS.items():
        requests.get(f"{live_server}/ks/{mac}", timeout=10).raise_for_status()
        r = requests.post(f"{live_server}/api/v1/nodes/{mac}/events", json={"type": "installed"},
                          headers={"Authorization": f"Bearer {reg.get(mac).install_token}"}, timeout=10)
        r.raise_for_status()
        tokens[host] = r.json()["firstboot_token"]
    return live_server, tokens


def stub_hooks(tmp: Path, fail: set[str] = frozenset()) -> Path:
    """hooks/ with the real runner and plan, and every step a stub that logs itself (or fails)."""
    hooks = tmp / "hooks"
    for step in load_plan().steps:
        script = hooks / f"{step.id}.sh"
        script.parent.mkdir(parents=True, exist_ok=True)
        script.write_text(f'#!/bin/bash\necho "{step.id}" >> "$STEP_LOG"\n'
                          f'[ ! -e "$FAIL_DIR/{step.id.replace("/", "_")}" ] || {{ echo "broken on purpose"; exit 3; }}\n')
    (hooks / "runner.sh").write_text((HOOKS_DIR / "runner.sh").read_text())
    (hooks / "plan.yaml").write_text((HOOKS_DIR / "plan.yaml").read_text())
    for step in fail:
        (tmp / "fail").mkdir(exist_ok=True)
        (tmp / "fail" / step.replace("/", "_")).write_text("")
    return hooks


_RUNNERS: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def _no_runner_outlives_its_test():
    """A failed assertion must not leave runners polling barriers for hours."""
    yield
    while _RUNNERS:
        p = _RUNNERS.pop()
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)       # the runner and its curl and sleep
            p.communicate()


def runner(tmp: Path, url: str, host: str, token: str, **kw) -> subprocess.Popen:
    etc = tmp / host / "etc"
    etc.mkdir(parents=True, exist_ok=True)
    (etc / "node.env").write_text(f"PROVISIONER_URL='{url}'\nPROVISIONER_MAC='{MACS[host]}'\n"
                                  f"PROVISIONER_TOKEN='{token}'\n")
    env = {**os.environ, "HOOKS": str(tmp / "hooks"), "PROVISIONER_ETC": str(etc),
           "PROVISIONER_STATE": str(tmp / host / "state"), "BARRIER_POLL": "0.2",
           "STEP_LOG": str(tmp / host / "steps.log"), "FAIL_DIR": str(tmp / "fail")}
    p = subprocess.Popen(["bash", str(tmp / "hooks" / "runner.sh")], env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, start_new_session=True, **kw)
    _RUNNERS.append(p)
    return p


def ran(tmp, host):
    log = tmp / host / "steps.log"
    return log.read_text().split() if log.exists() else []


def plan_of(url, host):
    return requests.get(f"{url}/api/v1/nodes/{MACS[host]}/plan", headers=url.reader, timeout=10).json()


def test_plans_follow_the_roles(cloud):
    url, _ = cloud
    plan = load_plan()
    for host, roles in (("controller", ["controller"]), ("compute2", ["compute"]), ("compute1", ["compute", "gateway"])):
        got = [s["id"] for s in plan_of(url, host)["steps"]]
        assert got == [s.id for s in plan.for_roles(roles)]
    ctl = [s["id"] for s in plan_of(url, "controller")["steps"]]
    assert "03-glusterfs-controller/02-glusterfs-create-volume" in ctl and "05-kvm-compute/01-kvm-install" not in ctl
    gw = [s["id"] for s in plan_of(url, "compute1")["steps"]]
    assert gw[0] == "01-network-gateway/01-firewall-nat" and "09-openstack-gateway/04-network-create" in gw
    assert "01-network-gateway/01-firewall-nat" not in [s["id"] for s in plan_of(url, "compute2")["steps"]]


def test_the_whole_cloud_comes_up_in_order_through_the_barriers(cloud, tmp_path):
    url, tokens = cloud
    stub_hooks(tmp_path)
    procs = {h: runner(tmp_path, url, h, t) for h, t in tokens.items() if h != "compute4"}
    # compute4 is late: the controller must stop at its first barrier and wait
    deadline = time.monotonic() + 60
    while "02-glusterfs-all/04-glusterfs-start" not in ran(tmp_path, "controller") and time.monotonic() < deadline:
        time.sleep(0.2)
    # until the other compute hosts have their bricks (a loaded machine takes its time)
    while time.monotonic() < deadline:
        status = requests.get(f"{url}/api/v1/barriers/gluster-bricks", headers=url.reader, timeout=10).json()
        if status["waiting_for"] == ["compute4"]:
            break
        time.sleep(0.2)
    time.sleep(2)
    assert "03-glusterfs-controller/01-glusterfs-probe" not in ran(tmp_path, "controller")
    assert status["ready"] is False and status["waiting_for"] == ["compute4"]
    assert requests.get(f"{url}/api/v1/nodes/{MACS['controller']}", headers=url.reader, timeout=10).json()["state"] == "configuring"

    procs["compute4"] = runner(tmp_path, url, "compute4", tokens["compute4"])
    for host, p in procs.items():
        out, _ = p.communicate(timeout=120)
        assert p.returncode == 0, f"{host}: {out}"
    assert requests.get(f"{url}/api/v1/barriers/gluster-bricks", headers=url.reader, timeout=10).json()["ready"] is True

    # every node ran its whole plan once, in the plan's order, and is deployed
    plan = load_plan()
    for host in MACS:
        node = requests.get(f"{url}/api/v1/nodes/{MACS[host]}", headers=url.reader, timeout=10).json()
        assert ran(tmp_path, host) == [s.id for s in plan.for_roles(node["roles"])], host
        assert node["state"] == "deployed"
        assert (tmp_path / host / "state" / "deployed").exists()
        assert (tmp_path / host / "etc" / "config.env").stat().st_mode & 0o777 == 0o600
    # cross-host order: the probe came after the last brick, the mounts after the volume
    events = {h: requests.get(f"{url}/api/v1/nodes/{m}/events", headers=url.reader, timeout=10).json()["events"] for h, m in MACS.items()}

    def at(host, step, status):
        return next(e["id"] for e in events[host] if e["type"] == "step" and e["detail"]["step"] == step
                    and e["detail"]["status"] == status)
    probe = at("controller", "03-glusterfs-controller/01-glusterfs-probe", "started")
    assert all(at(f"compute{i}", "02-glusterfs-all/05-glusterfs-brick", "ok") < probe for i in range(1, 5))
    volume = at("controller", "03-glusterfs-controller/02-glusterfs-create-volume", "ok")
    assert all(at(h, "04-glusterfs-all/01-glusterfs-mount", "started") > volume for h in MACS)
    services = at("controller", "07-openstack-controller/31-cinder-start", "ok")
    assert all(at(f"compute{i}", "08-openstack-compute/01-nova-compute-install", "started") > services for i in range(1, 5))
    assert at("controller", "10-openstack-controller/02-boot-cirros", "started") > at(
        "compute1", "09-openstack-gateway/05-secgroup-add", "ok")


def test_a_failed_step_stops_the_plan_and_a_rerun_resumes_there(cloud, tmp_path):
    url, tokens = cloud
    broken = "02-glusterfs-all/03-glusterfs-install"
    stub_hooks(tmp_path, fail={broken})
    p = runner(tmp_path, url, "compute2", tokens["compute2"])
    out, _ = p.communicate(timeout=60)
    assert p.returncode == 1 and f"step {broken} failed" in out
    steps = {s["id"]: s for s in plan_of(url, "compute2")["steps"]}
    assert steps[broken]["state"] == "failed" and "broken on purpose" in steps[broken]["output"]
    assert steps["02-glusterfs-all/02-selinux"]["state"] == "ok"
    assert steps["02-glusterfs-all/04-glusterfs-start"]["state"] == "pending"
    before = ran(tmp_path, "compute2")
    assert before == ["01-network-gateway/03-hosts", "02-glusterfs-all/01-firewall-glusterfs",
                      "02-glusterfs-all/02-selinux", broken]

    (tmp_path / "fail" / broken.replace("/", "_")).unlink()        # the operator's fix
    p = runner(tmp_path, url, "compute2", tokens["compute2"])
    try:
        # it resumes at the failed step, goes on, and then waits for the controller's volume
        deadline = time.monotonic() + 60
        while "02-glusterfs-all/05-glusterfs-brick" not in ran(tmp_path, "compute2") and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1)
        assert p.poll() is None
    finally:
        p.kill()
        p.communicate()
    assert ran(tmp_path, "compute2")[len(before):] == [broken, "02-glusterfs-all/04-glusterfs-start",
                                                       "02-glusterfs-all/05-glusterfs-brick"]
    steps = {s["id"]: s for s in plan_of(url, "compute2")["steps"]}
    assert steps[broken]["state"] == "ok"
    assert steps["04-glusterfs-all/01-glusterfs-mount"]["state"] == "pending"
    assert requests.get(f"{url}/api/v1/nodes/{MACS['compute2']}", headers=url.reader, timeout=10).json()["state"] == "configuring"


def test_wrong_tokens_are_refused(cloud, tmp_path):
    url, tokens = cloud
    stub_hooks(tmp_path)
    p = runner(tmp_path, url, "compute2", tokens["compute3"])      # another node's token
    out, _ = p.communicate(timeout=60)
    assert p.returncode == 1 and "cannot fetch this node's configuration" in out
    assert ran(tmp_path, "compute2") == []
    mac = MACS["compute2"]
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": f"Bearer {tokens['compute3']}"}):
        r = requests.post(f"{url}/api/v1/nodes/{mac}/events", headers=headers, timeout=10,
                          json={"type": "step", "detail": {"step": "02-glusterfs-all/02-selinux", "status": "ok"}})
        assert r.status_code == 403
        assert requests.get(f"{url}/api/v1/nodes/{mac}/config", headers=headers, timeout=10).status_code == 403
    assert all(s["state"] == "pending" for s in plan_of(url, "compute2")["steps"])


def test_step_reports_are_checked(cloud):
    url, tokens = cloud
    mac, auth = MACS["compute2"], {"Authorization": f"Bearer {tokens['compute2']}"}
    for detail in ({"step": "03-glusterfs-controller/01-glusterfs-probe", "status": "ok"},   # not its step
                   {"step": "02-glusterfs-all/02-selinux", "status": "maybe"},
                   {"step": "02-glusterfs-all/02-selinux", "status": "ok", "extra": 1}, "text"):
        r = requests.post(f"{url}/api/v1/nodes/{mac}/events", json={"type": "step", "detail": detail}, headers=auth,
                          timeout=10)
        assert r.status_code == 400, detail


def test_config_env_is_the_nodes_own(cloud):
    url, tokens = cloud
    text = requests.get(f"{url}/api/v1/nodes/{MACS['compute1']}/config",
                        headers={"Authorization": f"Bearer {tokens['compute1']}"}, timeout=10).text
    env = dict(line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#"))
    assert env["NODE_HOSTNAME"] == "compute1" and env["PUBLIC_INTERFACE"] == "nic0"
    assert env["COMPUTE_HOSTS"] == "'compute1 compute2 compute3 compute4'" and env["REPLICA_COUNT"] == "4"
    assert env["CONTROLLER_HOST"] == "controller" and env["CINDER_VG"] == "nova-volumes"


def test_hooks_tarball_carries_the_steps(cloud, tmp_path):
    import io
    import tarfile
    url, _ = cloud
    body = requests.get(f"{url}/hooks.tar.gz", timeout=10).content
    assert body == requests.get(f"{url}/hooks.tar.gz", timeout=10).content   # the same bytes each time
    names = tarfile.open(fileobj=io.BytesIO(body)).getnames()
    assert "runner.sh" in names and "lib/common.sh" in names and "provisioner-firstboot.service" in names
    assert all(f"{s.id}.sh" in names for s in load_plan().steps)
