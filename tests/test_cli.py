"""The `provisioner` command, run as an operator runs it."""

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from contextlib import contextmanager
from importlib import resources
from pathlib import Path

import pytest
import requests
import yaml


@pytest.fixture
def run(tmp_path):
    env = {**os.environ, "PROVISIONER_STATE_DIR": str(tmp_path / "state")}
    env.pop("PROVISIONER_SITE", None)

    def run(*args, ok=True):
        proc = subprocess.run([sys.executable, "-m", "provisioner", *args], capture_output=True, text=True,
                              env=env, timeout=120)
        if ok is not None:
            assert (proc.returncode == 0) == ok, proc.stderr + proc.stdout
        return proc
    run.env = env
    return run


@pytest.fixture
def custom_site(tmp_path):
    data = yaml.safe_load(resources.files("provisioner").joinpath("site.yaml").read_text())
    path = tmp_path / "site.yaml"

    def write(mutate=None):
        if mutate:
            mutate(data)
        path.write_text(yaml.safe_dump(data))
        return str(path)
    return write


def test_token_is_stable_and_secret_file_private(run, tmp_path):
    token = run("token").stdout.strip()
    assert len(token) >= 32 and run("token").stdout.strip() == token
    reader = run("token", "--read-only").stdout.strip()
    assert len(reader) >= 32 and reader != token and run("token", "--read-only").stdout.strip() == reader
    assert stat.S_IMODE((tmp_path / "state" / "secrets.yaml").stat().st_mode) == 0o600


def test_nodes_add_list_show_rm(run):
    out = run("nodes", "add", "--mac", "52-54-00-AA-00-10", "--hostname", "compute10", "--ip", "192.168.0.10",
              "--role", "compute", "--interface", "eth1", "--nic", "52:54:00:aa:01:10,eth0,off").stdout
    assert "registered compute10 (52:54:00:aa:00:10" in out
    listing = run("nodes", "list").stdout.splitlines()
    assert listing[0].split() == ["HOSTNAME", "MAC", "IP", "ROLES", "STATE", "NETBOOT", "LAST", "EVENT"]
    row = [line for line in listing if line.startswith("compute10")][0].split()
    assert row[:6] == ["compute10", "52:54:00:aa:00:10", "192.168.0.10", "compute", "registered", "armed"]
    assert row[6] == "registered" and row[-1] == "ago"
    assert len(run("nodes", "list", "--role", "controller").stdout.splitlines()) == 2
    shown = json.loads(run("nodes", "show", "5254.00aa.0010").stdout)
    assert shown["nics"][0]["mac"] == "52:54:00:aa:01:10" and shown["events"][0]["type"] == "registered"
    assert "install_token" not in shown
    as_json = json.loads(run("nodes", "list", "--json", "--state", "registered").stdout)
    assert len(as_json) == 6
    assert "removed compute10" in run("nodes", "rm", "52:54:00:aa:00:10").stdout
    assert "compute10" not in run("nodes", "list").stdout


@pytest.mark.parametrize("args, message", [
    (["nodes", "add", "--mac", "zz", "--hostname", "a", "--ip", "192.168.0.9", "--role", "compute"], "mac: 'zz' is not a MAC"),
    (["nodes", "add", "--mac", "52:54:00:aa:00:10", "--hostname", "compute2", "--ip", "192.168.0.9", "--role", "compute"],
     "host name compute2 already belongs to compute2"),
    (["nodes", "add", "--mac", "52:54:00:aa:00:10", "--hostname", "x", "--ip", "192.168.0.9", "--role", "web"],
     "unknown role 'web'"),
    (["nodes", "show", "52:54:00:ff:ff:ff"], "no node has MAC 52:54:00:ff:ff:ff"),
    (["nodes", "rm", "52:54:00:0c:00:02"], "declared in the site file"),
    (["render", "bogus"], "is not a MAC address"),
    (["--site", "/nonexistent/site.yaml", "nodes", "list"], "cannot read"),
    (["serve", "--http", "nope"], "expected HOST:PORT"),
])
def test_errors_are_one_line_and_nonzero(run, args, message):
    proc = run(*args, ok=False)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert message in lines[-1], proc.stderr
    assert "Traceback" not in proc.stderr


def test_state_dir_can_follow_the_command(run, tmp_path):
    other = tmp_path / "elsewhere"
    run("nodes", "add", "--state-dir", str(other), "--mac", "52:54:00:aa:00:10", "--hostname", "c10",
        "--ip", "192.168.0.10", "--role", "compute")
    assert "c10" in run("--state-dir", str(other), "nodes", "list").stdout
    assert "c10" not in run("nodes", "list").stdout


def test_render_prints_the_kickstart(run):
    out = run("render", "01-52-54-00-0c-00-05").stdout
    assert out.startswith("# Kickstart for controller.cluster.local")
    assert "logvol /var/lib/glance/images --vgname=vg_images --name=lv_images --fstype=ext4 --size=28784" in out


def test_regenerate_reports_what_changed_and_how(run, tmp_path, custom_site):
    out_dir = tmp_path / "ks"
    first = run("regenerate", "--out", str(out_dir)).stdout
    assert "5 new, 0 changed, 0 removed, 0 unchanged" in first
    files = sorted(p.name for p in out_dir.glob("*.ks"))
    assert files == [f"52-54-00-0c-00-0{i}.ks" for i in range(1, 6)]
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in out_dir.glob("*.ks"))
    assert "0 new, 0 changed, 0 removed, 5 unchanged" in run("regenerate", "--out", str(out_dir)).stdout

    # a config change: new NTP servers touch every kickstart, by one line out and two in
    site = custom_site(lambda d: d.update(ntp_servers=["ntp1.example.org", "ntp2.example.org"]))
    second = run("--site", site, "regenerate", "--out", str(out_dir), "--diff").stdout
    assert "0 new, 5 changed, 0 removed, 0 unchanged" in second
    assert "changed compute1 (52:54:00:0c:00:01): +2 -3 lines" in second
    assert "+timesource --ntp-server=ntp1.example.org" in second
    assert "-timesource --ntp-server=0.centos.pool.ntp.org" in second

    run("--site", site, "nodes", "add", "--mac", "52:54:00:aa:00:10", "--hostname", "c10", "--ip",
        "192.168.0.10", "--role", "compute")
    third = run("--site", site, "regenerate", "--out", str(out_dir)).stdout
    assert "new c10 (52:54:00:aa:00:10)" in third and "1 new, 0 changed, 0 removed, 5 unchanged" in third
    run("--site", site, "nodes", "rm", "52:54:00:aa:00:10")
    fourth = run("--site", site, "regenerate", "--out", str(out_dir)).stdout
    assert "removed c10 (52:54:00:aa:00:10)" in fourth
    assert not (out_dir / "52-54-00-aa-00-10.ks").exists()


def test_validate_passes_the_default_site_and_shows_table2s_warning(run):
    out = run("validate").stdout
    assert out.count("ok   ") == 5
    assert "warning: layout controller: lv_images is 28788 MiB" in out
    assert "all 5 kickstarts parse under RHEL9 with no error and no warning" in out


def test_validate_names_the_nodes_that_fail_and_why(run, custom_site, tmp_path):
    templates = tmp_path / "templates"
    templates.mkdir()
    # an operator's override of one partial that uses a deprecated option
    (templates / "_install.ks.j2").write_text(
        (resources.files("provisioner") / "templates" / "kickstarts" / "_install.ks.j2").read_text()
        + "{% if 'controller' in roles %}timezone Etc/UTC --ntpservers=ntp.example.org\n{% endif %}")
    site = custom_site(lambda d: d.update(templates=str(templates)))
    proc = run("--site", site, "validate", ok=False)
    assert proc.returncode == 1
    assert "FAIL controller (52:54:00:0c:00:05): KickstartDeprecationWarning" in proc.stdout
    assert proc.stdout.count("ok   ") == 4
    assert "1 of 5 kickstarts fail" in proc.stderr


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def _serving(run):
    """`provisioner serve` on the embedded defaults, up: its three processes and both ports."""
    port, boot = _free_port(), _free_port()     # not port + 1, the default: that may be taken here
    proc = subprocess.Popen([sys.executable, "-m", "provisioner", "serve", "--http", f"127.0.0.1:{port}",
                             "--boot", f"127.0.0.1:{boot}", "--no-tftp"],
                            env=run.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while len(_children(proc.pid)) < 3 or not _listening(port) or not _listening(boot):
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, "timeout"
            time.sleep(0.2)
        yield proc, port, boot
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        proc.stdout.close()
        proc.stderr.close()


def test_serve_runs_on_the_embedded_defaults(run):
    with _serving(run) as (proc, port, boot_port):
        assert requests.get(f"http://127.0.0.1:{port}/api/v1/nodes", timeout=5).status_code == 401
        reader = {"Authorization": f"Bearer {run('token', '--read-only').stdout.strip()}"}
        resp = requests.get(f"http://127.0.0.1:{port}/api/v1/nodes", headers=reader, timeout=5)
        assert [n["hostname"] for n in resp.json()["nodes"]][-1] == "controller"
        # kickstarts go to each node's own address only, and loopback is none of them
        ks = requests.get(f"http://127.0.0.1:{port}/ks/52:54:00:0c:00:01", timeout=5)
        assert ks.status_code == 403 and "compute1's own address" in ks.text
        # machines are sent to the boot server, which answers the same
        boot = requests.get(f"http://127.0.0.1:{boot_port}/ks/52:54:00:0c:00:01", timeout=5)
        assert boot.status_code == 403 and boot.text == ks.text
        assert requests.get(f"http://127.0.0.1:{boot_port}/pxelinux.cfg/01-52-54-00-0c-00-01",
                            timeout=5).status_code == 200
        kids = _children(proc.pid)
        # the API (gunicorn, with its workers under it) and two boot server processes
        assert len(kids) == 3 and sum(bool(_children(k)) for k in kids) == 1
        proc.terminate()
        assert proc.wait(timeout=10) == 0
        assert not any(os.path.exists(f"/proc/{pid}") for pid in kids)


@pytest.mark.parametrize("victim", ["the API", "boot server 2"])
def test_serve_stops_when_a_part_of_it_dies(run, victim):
    with _serving(run) as (proc, _, _):
        kids = _children(proc.pid)          # in the order forked: the API, then the boot servers
        os.kill(kids[0] if victim == "the API" else kids[2], signal.SIGKILL)
        assert proc.wait(timeout=15) != 0
        assert f"{victim} ended with status -9; stopping" in proc.stderr.read()
        assert not any(os.path.exists(f"/proc/{pid}") for pid in kids)


def test_serve_leaves_nothing_behind_when_killed(run):
    with _serving(run) as (proc, port, boot):
        kids = _children(proc.pid)
        workers = [w for k in kids for w in _children(k)]
        proc.kill()                         # SIGKILL: no handler runs in the supervisor
        proc.wait(timeout=10)
        deadline = time.monotonic() + 15
        while any(os.path.exists(f"/proc/{pid}") and "zombie" not in _status(pid) for pid in kids + workers):
            assert time.monotonic() < deadline, "processes left behind, holding the ports"
            time.sleep(0.2)
        assert not _listening(port) and not _listening(boot)


def _status(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text().lower()
    except OSError:
        return "zombie"


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def test_bootfiles_and_distro_import(run, tmp_path):
    if not os.path.exists("/usr/lib/PXELINUX/lpxelinux.0"):
        pytest.skip("needs pxelinux")
    out = run("bootfiles", "import").stdout
    assert "imported lpxelinux.0 <- /usr/lib/PXELINUX/lpxelinux.0" in out
    from tests.conftest import make_tree
    tree = make_tree(tmp_path / "tree")
    proc = run("distro", "import", "--from", str(tree))
    assert "imported centos-stream-9-x86_64: images/pxeboot/vmlinuz and images/pxeboot/initrd.img, checksums verified" in proc.stdout
    assert "images/pxeboot/initrd.img: 100% (300000 bytes)" in proc.stderr
    assert run("distro", "list").stdout.split() == ["centos-stream-9-x86_64"]
    bad = make_tree(tmp_path / "bad", corrupt="images/pxeboot/initrd.img")
    proc = run("distro", "import", "--from", str(bad), ok=False)
    assert "not imported" in proc.stderr.strip().splitlines()[-1]


def test_dnsmasq_config_command(run):
    out = run("dnsmasq-config", "--interface", "br0").stdout
    assert "interface=br0" in out and "dhcp-host=52:54:00:0c:00:05,192.168.0.5,controller,infinite" in out


def test_serve_answers_tftp_too(run):
    from tests.tftpclient import fetch
    port, tport = _free_port(), _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "provisioner", "serve", "--http", f"127.0.0.1:{port}",
                             "--tftp", f"127.0.0.1:{tport}"], env=run.env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        first = proc.stdout.readline()
        assert f"tftp://127.0.0.1:{tport}/" in first
        res = fetch(("127.0.0.1", tport), "pxelinux.cfg/01-52-54-00-0c-00-01", {"tsize": 0, "blksize": 1408})
        assert "Install compute1" in res.data.decode()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        proc.stdout.close()
        proc.stderr.close()


def test_plan_prints_each_step_with_its_state(run):
    out = run("plan", "52:54:00:0c:00:05").stdout.splitlines()
    assert out[0].startswith("controller (52:54:00:0c:00:05), registered:") and out[0].endswith("steps")
    steps = [line.split() for line in out[1:]]
    assert all(s[0] == "pending" for s in steps)
    ids = [s[1] for s in steps]
    assert ids.index("03-glusterfs-controller/01-glusterfs-probe") < ids.index("07-openstack-controller/22-nova-install")
    probe = next(line for line in out if "01-glusterfs-probe" in line)
    assert "(8) 01-glusterfs-probe.sh" in probe and "[waits for gluster-bricks]" in probe
    assert "05-kvm-compute" not in "\n".join(out)
    assert "no node has MAC" in run("plan", "52:54:00:ff:ff:ff", ok=False).stderr


def test_serve_puts_the_boot_server_one_port_up_by_default(tmp_path, monkeypatch):
    from click.testing import CliRunner

    import provisioner.server
    from provisioner.cli import main
    import logging
    monkeypatch.setattr(logging.getLogger(), "level", logging.getLogger().level)   # serve raises it
    seen = {}
    monkeypatch.setattr(provisioner.server, "serve_forever", lambda *a, **kw: seen.update(kw))
    result = CliRunner().invoke(main, ["serve", "--state-dir", str(tmp_path / "s"), "--http", "10.1.2.3:8080",
                                       "--tftp", "10.1.2.3:69"])
    assert result.exit_code == 0, result.output
    assert seen["boot"] == ("10.1.2.3", 8081) and seen["boot_processes"] == 2
    result = CliRunner().invoke(main, ["serve", "--state-dir", str(tmp_path / "s"), "--no-boot", "--no-tftp"])
    assert result.exit_code == 0 and seen["boot"] is None and seen["tftp"] is None
