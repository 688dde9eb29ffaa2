"""Role-step groups 01-06 (gateway networking, GlusterFS, KVM/libvirt, chrony, INI tools) run for
real on the roles lab's five Debian 13 containers, then a second time that must change nothing.

The substrate (full recipe) comes up in namespaces this test makes, the service answers /hosts at
192.168.0.254 inside them, and each step runs in plan order in every container its roles name,
as a transient unit of the container's systemd (the runner's view: the container's capabilities,
not the test's). A step ends ok or says "skipped: <reason>" itself.

Wall time 9 min 12 s measured with the root cached, on this 2-core host shared with other jobs
(second run 96 s; up, first run, checks and down the rest); the first run on a machine also
builds the root (~18 min here).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from provisioner.app import open_context
from provisioner.config import load_site
from provisioner.lab.roles import rootfs
from provisioner.lab.roles.substrate import Substrate
from provisioner.plan import HOOKS_DIR, config_env, load_plan
from test_lab_roles_substrate import _missing

pytestmark = pytest.mark.skipif(_missing() is not None, reason=_missing() or "")

GROUPS = ("01-", "02-", "03-", "04-", "05-", "06-")
HOOKS = "/usr/libexec/provisioner/hooks"
COMPUTES = ("compute1", "compute2", "compute3", "compute4")
# what a second run must leave as it was: each unit's start (services) or activation (sockets)
UNITS = {"all": ["glusterd", "chrony", "firewalld"], "compute": ["libvirtd", "libvirtd.socket", "libvirtd-tls.socket"]}


class Lab:
    def __init__(self, sub: Substrate, nodes, site, ctx):
        self.sub, self.nodes, self.site, self.ctx = sub, nodes, site, ctx

    def sh(self, host: str, script: str, check: bool = True) -> str:
        r = self.sub.exec(host, ["sh", "-c", script], timeout=120)
        if check:
            assert r.returncode == 0, (host, script, r.stdout, r.stderr)
        return r.stdout

    def install(self) -> None:
        """What %post and the runner would leave: the hooks and the node's configuration."""
        for n in self.nodes:
            root = self.sub.work_dir / "nodes" / n.hostname / "root"
            shutil.copytree(HOOKS_DIR, root / HOOKS.lstrip("/"), dirs_exist_ok=True)
            (root / "etc/provisioner").mkdir(parents=True, exist_ok=True)
            (root / "etc/provisioner/config.env").write_text(
                config_env(self.site, self.ctx.credentials, n, self.nodes, load_plan(), profile="debian-13"))

    def run_groups(self) -> dict[tuple[str, str], str]:
        """Every step of groups 01-06 in plan order on each node it applies to; their output."""
        out = {}
        for step in load_plan().steps:
            if not step.id.startswith(GROUPS):
                continue
            for n in self.nodes:
                if step.applies_to(n.spec.roles):
                    r = self.sub.exec(n.hostname, ["systemd-run", "--pipe", "--wait", "--quiet", "--collect",
                                                   "--service-type=exec", "bash", f"{HOOKS}/{step.id}.sh"],
                                      timeout=300)
                    assert r.returncode == 0, (n.hostname, step.id, r.stdout, r.stderr)
                    out[n.hostname, step.id] = r.stdout
        return out

    def snapshot(self) -> dict:
        """What a second run could change: files under /etc, units' starts, the gluster pool."""
        snap = {}
        for n in self.nodes:
            units = UNITS["all"] + (UNITS["compute"] if "compute" in n.spec.roles else [])
            snap[n.hostname] = {
                "etc": self.sh(n.hostname, "find /etc -xdev -type f -printf '%T@ %p\\n' | sort; "
                                           "find /etc -xdev -type f -exec sha256sum {} + | sort"),
                "units": self.sh(n.hostname, "systemctl show -p Id -p ExecMainStartTimestamp "
                                             "-p ActiveEnterTimestamp " + " ".join(units)),
                "gluster": self.sh(n.hostname, "gluster pool list; gluster volume info"),
            }
        return snap


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    site = load_site()
    ctx = open_context(tmp_path_factory.mktemp("state"), site)
    nodes = ctx.registry.list()
    work = Path(tempfile.mkdtemp(prefix="pvr-steps-", dir="/var/tmp"))
    sub = Substrate.from_site(site, nodes, os.environ.get("PROVISIONER_LAB_ROLES_CACHE") or rootfs.default_cache_dir(),
                              work, progress=lambda line: print(f"[substrate] {line}", flush=True))
    service = None
    try:
        sub.up(boot_timeout=600)
        # the service itself answers /hosts (01-network-gateway/03-hosts) on the lab's side
        code = ("import sys; from werkzeug.serving import make_server; from provisioner.app import create_app; "
                "make_server('192.168.0.254', 8080, create_app(sys.argv[1])).serve_forever()")
        service = sub.lab_popen([sys.executable, "-c", code, str(ctx.state_dir)], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": str(HOOKS_DIR.parents[1])})
        deadline = time.monotonic() + 30
        while not sub.lab_run(["ss", "-Htln", "sport = :8080"]).stdout.strip():
            assert time.monotonic() < deadline and service.poll() is None, "the service did not start"
            time.sleep(0.2)
        lab = Lab(sub, nodes, site, ctx)
        lab.install()
        yield lab
    finally:
        if service:
            service.kill()
            service.wait()
        sub.down()
        ctx.registry.close()
        shutil.rmtree(work, ignore_errors=True)


def test_groups_01_to_06_run_for_real_then_change_nothing(lab):
    t = time.monotonic()
    first = lab.run_groups()
    print(f"first run {time.monotonic() - t:.0f}s")
    skipped = {k: v.splitlines()[0] for k, v in first.items() if v.startswith("skipped: ")}
    print(json.dumps({f"{h} {s}": why for (h, s), why in skipped.items()}, indent=1))
    # what cannot run here says so itself, and only that: SELinux and RDO (not on Debian), and the
    # KVM module (this host's CPU shows no vmx/svm)
    assert {s for _, s in skipped} == {"02-glusterfs-all/02-selinux", "06-openstack-all/01-rdo-repo",
                                       "05-kvm-compute/02-kvm-modprobe"}

    # GlusterFS: one replica per compute host, each brick inside its XFS lv_gluster
    info = lab.sh("controller", "gluster volume info vm-instances")
    assert "Type: Replicate" in info and "Status: Started" in info and "Number of Bricks: 1 x 4 = 4" in info
    assert [line.split(": ", 1)[1] for line in info.splitlines() if line.startswith("Brick") and ": " in line
            and line.split(":")[0][5:].isdigit()] == [f"{h}:/export/gluster/brick" for h in COMPUTES]
    for h in COMPUTES:
        assert lab.sh(h, "findmnt -n -o FSTYPE --target /export/gluster/brick").strip() == "xfs"
    # the FUSE mount on every node, and a file written on one node is read on the others
    for n in lab.nodes:
        assert lab.sh(n.hostname, "findmnt -n -o FSTYPE /var/lib/nova/instances").strip() == "fuse.glusterfs"
        # systemd's unit for it needs glusterd and starts after it (at boot it mounts from localhost)
        unit = lab.sh(n.hostname, "systemctl show -p Requires -p After var-lib-nova-instances.mount")
        assert all("glusterd.service" in line.split("=", 1)[1].split() for line in unit.splitlines()), unit
    token = secrets.token_hex(8)
    lab.sh("compute3", f"echo {token} > /var/lib/nova/instances/probe-{token}")
    for h in ("controller", "compute1"):
        assert lab.sh(h, f"cat /var/lib/nova/instances/probe-{token}").strip() == token
    assert lab.sh("compute4", f"cat /export/gluster/brick/probe-{token}").strip() == token   # the replica
    lab.sh("compute3", f"rm /var/lib/nova/instances/probe-{token}")

    # the gateway: public NIC external (masquerading), install NIC internal with every port there
    assert lab.sh("compute1", "firewall-cmd --get-zone-of-interface=nic0").strip() == "external"
    assert lab.sh("compute1", "firewall-cmd --get-zone-of-interface=nic1").strip() == "internal"
    for port in ("24007-24008/tcp", "49152-60999/tcp", "16514/tcp", "49152-49215/tcp"):   # gluster, libvirt
        assert lab.sh("compute1", f"firewall-cmd --zone=internal --query-port={port}").strip() == "yes", port
    assert lab.sh("compute1", "firewall-cmd --zone=external --query-masquerade").strip() == "yes"
    policy = lab.sh("compute1", "firewall-cmd --info-policy=internal-external")
    assert "ingress-zones: internal" in policy and "egress-zones: external" in policy
    assert lab.sh("compute1", "sysctl -n net.ipv4.ip_forward").strip() == "1"

    # libvirt's migration listener: TLS on the install address, SASL (SCRAM) inside, each host's
    # certificate from the cluster's CA; compute1's through its internal zone
    for client, server in (("compute2", "compute1"), ("compute1", "compute3")):
        assert lab.sh(client, f"virsh -c qemu+tls://{server}/system hostname").strip() == f"{server}.cluster.local"
    assert lab.sh("compute4", "ss -Htln 'sport = :16514'").split()[3] == "192.168.0.4:16514"

    # chrony: no CAP_SYS_TIME here, so chronyd runs with -x and the compute hosts follow the controller
    for n in lab.nodes:
        assert lab.sh(n.hostname, "systemctl is-active chrony").strip() == "active"
    deadline = time.monotonic() + 60
    while "^* 192.168.0.5" not in lab.sh("compute2", "chronyc -n sources", check=False):
        assert time.monotonic() < deadline, lab.sh("compute2", "chronyc -n sources", check=False)
        time.sleep(2)

    before = lab.snapshot()
    t = time.monotonic()
    second = lab.run_groups()
    print(f"second run {time.monotonic() - t:.0f}s")
    after = lab.snapshot()
    for host in before:
        for what in before[host]:
            assert before[host][what] == after[host][what], (host, what)
    # and said so: nothing written, set, enabled, probed or created
    said = {k: line for k, v in second.items() for line in v.splitlines()
            if re.match(r"(wrote|set|Created|peer probe|volume)", line)}
    assert said == {}
