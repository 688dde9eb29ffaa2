"""The roles rehearsal: the real first-boot runner in every container, against the real service.

The fast tests (no containers) check the pieces: the hand-over the lab runs is the kickstart's
own text, the runner's plan limit, the rows of the live table, each node's limit. The slow test
(`rehearsal`, root and the full root image) brings up the lab with the service in its namespace,
installs every node through its kickstart, breaks one early step on compute2 on purpose and
runs the plan up to the controller's first barrier (README, "Role rehearsal").
"""

from __future__ import annotations

import io
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
# broken on purpose on compute2, after three steps that pass there (03-hosts, the Gluster firewall,
# SELinux, which Debian skips): the rerun must start at it and not run those again
BROKEN_HOST = "compute2"
BROKEN = "02-glusterfs-all/03-glusterfs-install"
BEFORE_BROKEN = ["01-network-gateway/03-hosts", "02-glusterfs-all/01-firewall-glusterfs", "02-glusterfs-all/02-selinux"]
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
    ended = {"ActiveState": "failed", "Result": "exit-code"}
    row = watch.row("compute1", _view([(a, None, "ok"), (b, None, "failed"), (c, None, "pending")],
                                      output="wrote x\nbroken on purpose\n", unit=ended), None)
    assert (row.state, row.step, row.message, row.steps_ok, row.steps) == ("failed", b, "broken on purpose", 1, 3)
    row = watch.row("compute1", _view([(b, None, "failed")], unit=ended, output=(
        "curl: (60) SSL certificate problem: unable to get local issuer certificate\n"
        "More details here: https://curl.se/docs/sslcerts.html\n\nhow to fix it, please visit the webpage above.\n")), None)
    assert row.message == "curl: (60) SSL certificate problem: unable to get local issuer certificate"
    # run again after the fix: resuming, not failed, until the runner reports the step anew
    row = watch.row("compute1", _view([(a, None, "ok"), (b, None, "failed"), (c, None, "pending")],
                                      output="broken on purpose\n"), None)
    assert (row.state, row.step, row.message) == ("running", b, f"resuming at {b}")
    barrier = {"name": "gluster-bricks", "ready": False, "waiting_for": ["compute1"]}
    row = watch.row("controller", _view([(a, None, "ok"), (c, "gluster-bricks", "pending")], barrier=barrier), None)
    assert (row.state, row.step, row.message) == ("waiting", c, "barrier gluster-bricks: waiting for compute1")
    row = watch.row("compute2", _view([(a, None, "ok"), (b, None, "started"), (c, None, "pending")]), None)
    assert (row.state, row.step) == ("running", b)
    # the limit: done once its own last step is ok
    row = watch.row("compute2", _view([(a, None, "ok"), (b, None, "ok"), (c, None, "pending")]), b)
    assert (row.state, row.message) == ("done", f"every step up to {b} ok")
    row = watch.row("compute2", _view([(a, None, "skipped"), (b, None, "ok"), (c, None, "pending")]), b)
    assert (row.state, row.message) == ("done", f"every step up to {b} ok (1 skipped)")
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
    views = {"compute1": _view([(BROKEN, None, "failed")], output="broken on purpose",
                               unit={"ActiveState": "failed"}),
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


# -- the rehearsal, for real -----------------------------------------------------------------------
#
# Three of the report's nodes (the controller, compute1 the gateway, compute2) to keep it short;
# the plan runs only up to the controller's first barrier (PROBE, which waits at gluster-bricks
# for every compute host's brick), with a short barrier timeout. Wall time on the 2-core test
# host, root cached: up 10-16 s, the rehearsal 60-75 s, the rerun 9-19 s; the whole file with
# the HTTPS test and the fast ones 105-160 s, as the host is loaded (README, "Role rehearsal").

NODES = ("compute1", "compute2", "controller")
BARRIER_TIMEOUT = 45
RECIPE = os.environ.get("PROVISIONER_LAB_ROLES_RECIPE", "full")


def _site(tmp: Path) -> Path:
    import yaml
    from importlib import resources
    data = yaml.safe_load(resources.files("provisioner").joinpath("site.yaml").read_text())
    data["nodes"] = [n for n in data["nodes"] if n["hostname"] in NODES]
    path = tmp / "site.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


class Lab:
    """The rehearsal and what the test saw of it."""

    def __init__(self, rehearsal, work: Path, site: Path, state: Path):
        self.r, self.sub, self.work, self.site, self.state = rehearsal, rehearsal.sub, work, site, state
        self.rows: dict[str, watch.Row] = {}
        self.table = ""

    def watch(self, timeout: float) -> dict[str, watch.Row]:
        from rich.console import Console
        console = Console(width=200, file=io.StringIO(), color_system=None)
        rows = self.r.watch(timeout, console=console, interval=1.0)
        self.rows = {r.node: r for r in rows}
        self.table = watch.render_text(watch.table(rows))
        print(self.table, flush=True)
        return self.rows

    def steps(self, host: str) -> list[tuple[str, str]]:
        """(step, status) of every step report the service holds for host, in order."""
        return [(e["detail"]["step"], e["detail"]["status"]) for e in self.r.events(host) if e["type"] == "step"]


@pytest.fixture(scope="module")
def lab():
    if _missing():
        pytest.skip(_missing())
    from provisioner.app import open_context
    from provisioner.config import load_site
    from provisioner.lab.roles import Substrate, rootfs
    from provisioner.lab.roles.rehearse import Rehearsal
    tmp = Path(tempfile.mkdtemp(prefix="pvr-rehearsal-", dir="/var/tmp"))
    site_path = _site(tmp)
    site = load_site(site_path)
    ctx = open_context(tmp / "operator", site)
    nodes = ctx.registry.list()
    ctx.registry.close()
    cache = os.environ.get("PROVISIONER_LAB_ROLES_CACHE") or rootfs.default_cache_dir()
    sub = Substrate.from_site(site, nodes, cache, tmp / "work", recipe=RECIPE,
                              progress=lambda line: print(f"[lab] {line}", flush=True))
    rehearsal = Rehearsal(sub, site, nodes, until=PROBE, barrier_timeout=BARRIER_TIMEOUT, barrier_poll=2,
                          progress=lambda line: print(f"[lab] {line}", flush=True))
    t = time.monotonic()
    try:
        rehearsal.up(boot_timeout=600)
        print(f"[lab] up in {time.monotonic() - t:.0f}s (root {sub.timings.root:.0f}s, boot {sub.timings.boot:.0f}s)")
        yield Lab(rehearsal, tmp / "work", site_path, tmp / "operator")
    finally:
        rehearsal.down()
        shutil.rmtree(tmp, ignore_errors=True)


def _break(lab: Lab, host: str, step: str) -> None:
    path = f"/usr/libexec/provisioner/hooks/{step}.sh"
    r = lab.sub.exec(host, ["sed", "-i", f"2i echo '{step} broken on purpose (tests/test_lab_roles_runner.py)' >&2; exit 3",
                            path])
    assert r.returncode == 0, r.stderr


def _restore(lab: Lab, host: str, step: str) -> None:
    """The operator's fix: the step as shipped."""
    path = f"/usr/libexec/provisioner/hooks/{step}.sh"
    r = lab.sub.exec(host, ["sh", "-c", f"cat > {path}"], input=(HOOKS_DIR / f"{step}.sh").read_text())
    assert r.returncode == 0, r.stderr


@pytest.mark.skipif(_missing() is not None, reason=_missing() or "")
def test_every_node_is_installed_through_its_own_kickstart(lab):
    sub, svc = lab.sub, lab.r.service
    for host in NODES:
        events = lab.r.events(host)
        types = [e["type"] for e in events]
        # the kickstart fetched (installing; %pre's `installing` repeats that, which the service
        # does not record twice), then %post's `installed`
        assert types[-2:] == ["kickstart", "installed"], (host, types)
        assert sub.exec(host, ["stat", "-c", "%a %U", "/etc/provisioner/node.env"]).stdout.split() == ["600", "root"]
        assert sub.exec(host, ["systemctl", "is-enabled", installer.UNIT]).stdout.strip() == "enabled"
        # the credential in the container is the node's own: its config, not another's
        env = sub.exec(host, ["sh", "-c", ". /etc/provisioner/node.env && curl -fsS -H \"Authorization: Bearer "
                              "$PROVISIONER_TOKEN\" $PROVISIONER_URL/api/v1/nodes/$PROVISIONER_MAC/config"])
        assert env.returncode == 0 and f"NODE_HOSTNAME={host}\n" in env.stdout and "PROFILE=debian-13\n" in env.stdout
    # the kickstart is the node's alone: from the lab's own side of the network it is refused
    mac = lab.r._node("compute2").spec.mac
    r = sub.lab_run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", f"{lab.r.site.boot_url}/ks/{mac}"])
    assert r.stdout == "403"
    # the service is only in the lab's namespace: nothing of it listens on the host
    host_listen = subprocess.run(["ss", "-Htln"], capture_output=True, text=True).stdout
    assert f"{svc.address}:" not in host_listen


@pytest.mark.skipif(_missing() is not None, reason=_missing() or "")
def test_a_broken_step_stops_its_node_and_the_barrier_times_out_naming_it(lab):
    _break(lab, BROKEN_HOST, BROKEN)
    t = time.monotonic()
    lab.r.start()
    rows = lab.watch(timeout=900)
    print(f"[lab] rehearsal to {PROBE} in {time.monotonic() - t:.0f}s")
    # compute2 stopped at the broken step, its error in the table and in the events
    broken = rows[BROKEN_HOST]
    assert (broken.state, broken.step) == ("failed", BROKEN), broken
    assert "broken on purpose" in broken.message
    line = next(ln for ln in lab.table.splitlines() if ln.lstrip("│ ").startswith(BROKEN_HOST))
    assert "failed" in line and "broken on purpose" in line
    # SELinux does not apply on Debian: the step says so and the runner reports it skipped, not ok
    expected = [(step, status) for step in BEFORE_BROKEN
                for status in ("started", "skipped" if step == "02-glusterfs-all/02-selinux" else "ok")]
    assert lab.steps(BROKEN_HOST) == expected + [(BROKEN, "started"), (BROKEN, "failed")]
    failed = [e for e in lab.r.events(BROKEN_HOST) if e["type"] == "step" and e["detail"]["status"] == "failed"]
    assert "broken on purpose" in failed[-1]["detail"]["output"]
    # the controller waited at gluster-bricks, never ran the probe, and failed it naming compute2
    ctl = rows["controller"]
    assert (ctl.state, ctl.step) == ("failed", PROBE), ctl
    assert re.search(rf"timed out after {BARRIER_TIMEOUT}s: barrier gluster-bricks .*still waits for: .*{BROKEN_HOST}",
                     ctl.message), ctl.message
    assert (PROBE, "started") not in lab.steps("controller")
    assert lab.steps("controller")[-1] == (PROBE, "failed")
    done = {step: status for step, status in lab.steps("controller")[:-1] if status != "started"}
    assert done.pop("02-glusterfs-all/02-selinux") == "skipped"     # no SELinux on Debian
    assert set(done.values()) == {"ok"}, done


@pytest.mark.skipif(_missing() is not None, reason=_missing() or "")
def test_after_the_fix_a_rerun_resumes_at_the_broken_step(lab):
    before = lab.steps(BROKEN_HOST)
    assert before[-1] == (BROKEN, "failed")
    _restore(lab, BROKEN_HOST, BROKEN)
    t = time.monotonic()
    lab.r.start([BROKEN_HOST])
    rows = lab.watch(timeout=600)
    print(f"[lab] rerun on {BROKEN_HOST} in {time.monotonic() - t:.0f}s")
    after = lab.steps(BROKEN_HOST)[len(before):]
    # it began at the broken step, which passes now; the ok steps before it were not run again
    assert after[:2] == [(BROKEN, "started"), (BROKEN, "ok")], after
    assert not [step for step, _ in after if step in BEFORE_BROKEN], after
    assert rows[BROKEN_HOST].step != BROKEN


@pytest.mark.skipif(_missing() is not None, reason=_missing() or "")
def test_a_shell_in_a_node_and_down_leaves_nothing(lab):
    import sys
    r = subprocess.run([sys.executable, "-m", "provisioner", "lab", "roles", "shell", "compute2",
                        "--work-dir", str(lab.work)], input="hostname; stat -c %a /etc/provisioner/node.env\n",
                       capture_output=True, text=True, timeout=60,
                       env={**os.environ, "PROVISIONER_STATE_DIR": str(lab.state)})
    assert r.returncode == 0 and r.stdout.split()[-2:] == ["compute2", "600"], r.stdout + r.stderr
    r = subprocess.run([sys.executable, "-m", "provisioner", "lab", "roles", "status", "--work-dir", str(lab.work)],
                       capture_output=True, text=True, timeout=60, env={**os.environ, "PROVISIONER_STATE_DIR": str(lab.state)})
    assert re.search(r"^service +pid \d+, running$", r.stdout, re.M), r.stdout
    state = lab.sub._load_state()
    service = state["processes"]["service"]
    lab.r.down()
    from provisioner.lab.roles import containers, netns
    assert not [ns for ns in netns.namespaces() if ns.startswith(f"pvr-{state['lab_id']}")]
    assert containers.mounts_under(lab.work) == []
    assert not Path(f"/proc/{service['pid']}").exists()
    assert not (lab.work / "service").exists()


@pytest.mark.skipif(_missing() is not None, reason=_missing() or "")
def test_over_https_the_ca_travels_in_the_kickstart_and_the_runner_pins_it(tmp_path):
    """service.url https: the service's own CA goes into the kickstart, the hand-over writes it,
    the runner reports over HTTPS with it pinned, and the lab reads the API with it. One node,
    one step (about 25 s)."""
    import yaml
    from importlib import resources

    from rich.console import Console

    from provisioner.app import open_context
    from provisioner.config import load_site
    from provisioner.lab.roles import Substrate, rootfs
    from provisioner.lab.roles.rehearse import Rehearsal
    data = yaml.safe_load(resources.files("provisioner").joinpath("site.yaml").read_text())
    data["nodes"] = [n for n in data["nodes"] if n["hostname"] == "controller"]
    data["service"]["url"] = "https://192.168.0.254:8443"
    (tmp_path / "site.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    site = load_site(tmp_path / "site.yaml")
    ctx = open_context(tmp_path / "operator", site)
    nodes = ctx.registry.list()
    ctx.registry.close()
    cache = os.environ.get("PROVISIONER_LAB_ROLES_CACHE") or rootfs.default_cache_dir()
    work = Path(tempfile.mkdtemp(prefix="pvr-tls-", dir="/var/tmp"))
    sub = Substrate.from_site(site, nodes, cache, work, recipe=RECIPE)
    r = Rehearsal(sub, site, nodes, until="01-network-gateway/03-hosts")
    try:
        r.up(boot_timeout=300)
        pem = sub.exec("controller", ["cat", "/etc/provisioner/ca.pem"]).stdout
        assert "BEGIN CERTIFICATE" in pem and pem == r.service.ca_file().read_text()
        assert "PROVISIONER_URL='https://192.168.0.254:8443'" in sub.exec(
            "controller", ["cat", "/etc/provisioner/node.env"]).stdout
        r.start()
        r.watch(timeout=300, console=Console(file=io.StringIO()))
        # the runner's reports came in over HTTPS (whatever the step made of it: 03-hosts's own
        # curl is its owner's)
        steps = [(e["detail"]["step"], e["detail"]["status"]) for e in r.events("controller") if e["type"] == "step"]
        assert steps[0] == ("01-network-gateway/03-hosts", "started") and len(steps) == 2, steps
    finally:
        r.down()
        shutil.rmtree(work, ignore_errors=True)
