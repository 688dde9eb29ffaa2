"""The roles rehearsal: the real first-boot runner in every container, against the real service.

The fast tests (no containers) check the pieces: the hand-over the lab runs is the kickstart's
own text, the runner's plan limit, the rows of the live table, each node's limit. The slow test
(`rehearsal`, root and the full root image) brings up the lab with the service in its namespace,
installs every node through its kickstart, breaks one early step on compute1 on purpose and
runs the plan up to the controller's first barrier (README, "Role rehearsal").
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import requests

from provisioner.lab.roles import installer, watch
from provisioner.lab.roles.rehearse import node_limits
from provisioner.plan import HOOKS_DIR, PlanError, load_plan
from provisioner.render.kscheck import check_kickstart
from tests.test_lab_roles_substrate import _missing

COMPUTE1, COMPUTE2, CONTROLLER = "52:54:00:0c:00:01", "52:54:00:0c:00:02", "52:54:00:0c:00:05"
BROKEN = "01-network-gateway/03-hosts"
PROBE = "03-glusterfs-controller/01-glusterfs-probe"      # the controller's first barrier: gluster-bricks
BRICK = "02-glusterfs-all/05-glusterfs-brick"


# -- the hand-over: the kickstart's own text -----------------------------------------------------

def test_the_handover_is_the_kickstarts_own_first_boot_part(client, registry):
    for mac in (COMPUTE1, CONTROLLER):
        ks = client.get(f"/ks/{mac}").get_data(as_text=True)
        script = installer.handover_script(ks).script
        post = next(s.script for s in check_kickstart(ks).handler.scripts if "report installed" in s.script)
        pre = next(s.script for s in check_kickstart(ks).handler.scripts if "report installing" in s.script)
        # the helpers, %pre's callback line, and the hand-over, each verbatim
        head, body = post.split("\nset -e\n", 1)
        assert script.startswith(head)
        assert re.search(r"^report installing .*$", pre, re.M).group(0) in script
        assert script.endswith(post[post.index(installer.HANDOVER_MARKER):])
        assert registry.get(mac).install_token in script
        # what it leaves out is the CentOS install's: hosts, NetworkManager, dnf
        assert "/etc/hosts" not in script and "NetworkManager" not in script and "dnf" not in script
        for needed in ("hooks.tar.gz", "systemctl enable provisioner-firstboot.service", "report installed",
                       "/etc/provisioner/node.env", "chmod 0600 /etc/provisioner/node.env"):
            assert needed in script, needed
        assert subprocess.run(["sh", "-n"], input=script, text=True).returncode == 0


def test_a_kickstart_without_the_handover_is_refused():
    with pytest.raises(installer.InstallError, match="hand-over"):
        installer.handover_script("text\n%post\necho hi\n%end\n")


def test_the_drop_in_sets_only_what_it_is_given():
    text = installer.drop_in({"BARRIER_TIMEOUT": "60", "PROVISIONER_UNTIL": PROBE})
    assert "[Service]\nEnvironment=BARRIER_TIMEOUT=60\nEnvironment=PROVISIONER_UNTIL=" + PROBE in text


# -- the plan limit ------------------------------------------------------------------------------

class _N:
    def __init__(self, hostname, roles):
        self.hostname = hostname
        self.spec = type("S", (), {"roles": roles, "ip": "192.168.0.1"})()


def test_each_node_stops_at_its_own_last_step_before_the_limit():
    nodes = [_N("controller", ("controller",)), _N("compute1", ("compute", "gateway")), _N("compute2", ("compute",))]
    assert node_limits(nodes, PROBE) == {"controller": PROBE, "compute1": BRICK, "compute2": BRICK}
    assert node_limits(nodes, "01-network-gateway/02-ip-forward") == {
        "controller": "", "compute1": "01-network-gateway/02-ip-forward", "compute2": ""}
    assert node_limits(nodes, None) == {"controller": None, "compute1": None, "compute2": None}
    with pytest.raises(PlanError):
        node_limits(nodes, "99-nothing/01-here")


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
def test_the_runner_stops_after_its_limit_and_refuses_a_step_not_in_its_plan(live_server, state_dir, tmp_path):
    """The real runner.sh against the real service (steps stubbed: the limit is the runner's)."""
    from provisioner.registry.db import Registry
    reg = Registry.in_state_dir(state_dir)
    requests.get(f"{live_server}/ks/{COMPUTE2}", timeout=10).raise_for_status()
    r = requests.post(f"{live_server}/api/v1/nodes/{COMPUTE2}/events", json={"type": "installed"},
                      headers={"Authorization": f"Bearer {reg.get(COMPUTE2).install_token}"}, timeout=10)
    token = r.json()["firstboot_token"]
    reg.close()
    hooks = tmp_path / "hooks"
    for step in load_plan().steps:
        (hooks / step.id).parent.mkdir(parents=True, exist_ok=True)
        (hooks / f"{step.id}.sh").write_text(f'echo {step.id} >> "$STEP_LOG"\n')
    shutil.copy(HOOKS_DIR / "runner.sh", hooks / "runner.sh")
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "node.env").write_text(f"PROVISIONER_URL='{live_server}'\nPROVISIONER_MAC='{COMPUTE2}'\n"
                                  f"PROVISIONER_TOKEN='{token}'\n")
    env = {**os.environ, "HOOKS": str(hooks), "PROVISIONER_ETC": str(etc), "PROVISIONER_STATE": str(tmp_path / "s"),
           "STEP_LOG": str(tmp_path / "steps.log"), "BARRIER_POLL": "0.2"}

    def run(until):
        return subprocess.run(["bash", str(hooks / "runner.sh")], env={**env, "PROVISIONER_UNTIL": until},
                              capture_output=True, text=True, timeout=60)

    r = run(PROBE)          # the controller's step, not compute2's
    assert r.returncode == 1 and f"no step {PROBE} in this node's plan" in r.stderr
    assert not (tmp_path / "steps.log").exists()
    r = run("02-glusterfs-all/04-glusterfs-start")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "every step up to 02-glusterfs-all/04-glusterfs-start ok" in r.stdout
    assert (tmp_path / "steps.log").read_text().split() == [
        "01-network-gateway/03-hosts", "02-glusterfs-all/01-firewall-glusterfs", "02-glusterfs-all/02-selinux",
        "02-glusterfs-all/03-glusterfs-install", "02-glusterfs-all/04-glusterfs-start"]
    assert not (tmp_path / "s" / "deployed").exists()
    node = requests.get(f"{live_server}/api/v1/nodes/{COMPUTE2}", headers=live_server.reader, timeout=10).json()
    assert node["state"] == "configuring"
    r = run(BRICK)          # one more: the ok steps are not run again
    assert r.returncode == 0 and (tmp_path / "steps.log").read_text().split()[-2:] == [
        "02-glusterfs-all/04-glusterfs-start", BRICK]


# -- the table's rows ----------------------------------------------------------------------------

def _view(states, node_state="configuring", output="", barrier=None, unit=None, journal=()):
    steps = [{"id": i, "wait": w, "state": st, "output": output if st == "failed" else ""} for i, w, st in states]
    return watch.NodeView(plan={"state": node_state, "steps": steps}, barriers={barrier["name"]: barrier} if barrier else {},
                          unit=unit or {"ActiveState": "activating"}, journal=list(journal))


def test_rows_say_what_each_node_does():
    a, b, c = "01-a/01-x", "01-a/02-y", "02-b/01-z"
    row = watch.row("compute1", _view([(a, None, "ok"), (b, None, "failed"), (c, None, "pending")],
                                      output="wrote x\nbroken on purpose\n"), None)
    assert (row.state, row.step, row.message, row.steps_ok, row.steps) == ("failed", b, "broken on purpose", 1, 3)
    barrier = {"name": "gluster-bricks", "ready": False, "waiting_for": ["compute1"]}
    row = watch.row("controller", _view([(a, None, "ok"), (c, "gluster-bricks", "pending")], barrier=barrier), None)
    assert (row.state, row.step, row.message) == ("waiting", c, "barrier gluster-bricks: waiting for compute1")
    row = watch.row("compute2", _view([(a, None, "ok"), (b, None, "started"), (c, None, "pending")]), None)
    assert (row.state, row.step) == ("running", b)
    # the limit: done once its own last step is ok
    row = watch.row("compute2", _view([(a, None, "ok"), (b, None, "ok"), (c, None, "pending")]), b)
    assert (row.state, row.message) == ("done", f"every step up to {b} ok")
    row = watch.row("compute2", _view([(a, None, "ok")], node_state="deployed"), None)
    assert (row.state, row.message) == ("done", "deployed")
    # a runner that ended before any step: the unit says so, with its journal's last line
    row = watch.row("compute3", _view([(a, None, "pending")], node_state="installed",
                                      unit={"ActiveState": "failed", "Result": "exit-code"},
                                      journal=["cannot fetch this node's configuration"]), None)
    assert (row.state, row.message) == ("failed", "runner ended: cannot fetch this node's configuration")
    row = watch.row("compute4", _view([(a, None, "pending")], node_state="installed", unit={"ActiveState": "inactive"}),
                    None)
    assert row.state == "pending"


def test_the_table_shows_the_error_and_the_clock_stops_when_a_node_ends():
    now = [100.0]
    views = {"compute1": _view([(BROKEN, None, "failed")], output="broken on purpose"),
             "controller": _view([(BROKEN, None, "ok"), (PROBE, "gluster-bricks", "pending")],
                                 barrier={"name": "gluster-bricks", "ready": False, "waiting_for": ["compute1"]})}
    w = watch.Watcher(lambda: views, {"compute1": None, "controller": None}, clock=lambda: now[0])
    for host in views:
        w.start_clock(host)
    now[0] = 130.0
    w.refresh()
    now[0] = 190.0
    rows = {r.node: r for r in w.refresh()}
    assert rows["compute1"].elapsed == 30.0 and rows["controller"].elapsed == 90.0
    assert not w.done()
    text = watch.render_text(watch.table(list(rows.values())))
    line = next(ln for ln in text.splitlines() if "compute1" in ln)
    assert "failed" in line and "broken on purpose" in line and "0:30" in line
    assert "barrier gluster-bricks: waiting for compute1" in text
