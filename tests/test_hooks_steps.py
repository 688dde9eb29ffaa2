"""Every role step on a scratch root with recording shims: the commands it issues, the files it
writes, and that a second run changes nothing (no state-changing command, byte-identical files)."""

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from provisioner.plan import HOOKS_DIR, config_env, load_plan

# the steps edit INI files with crudini (lib/common.sh's ini_set), for real on the scratch root
pytestmark = pytest.mark.skipif(shutil.which("crudini") is None, reason="needs crudini (pip install crudini)")

SHIM = Path(__file__).parent / "shims" / "shim.py"
TOOLS = ["rpm", "dnf", "systemctl", "firewall-cmd", "getsebool", "setsebool", "gluster", "mountpoint", "mount",
         "lsmod", "modprobe", "sasldblistusers2", "saslpasswd2", "rabbitmqctl", "mysql", "su", "keystone-manage",
         "stat", "chown", "curl", "openstack", "ovs-vsctl", "ssh-keygen", "sysctl", "dpkg-query", "apt-get",
         "semanage", "pvs", "lvmdevices"]
NODES = {"compute1": "52:54:00:0c:00:01", "compute2": "52:54:00:0c:00:02", "controller": "52:54:00:0c:00:05"}
HOSTS = "127.0.0.1 localhost\n192.168.0.5 controller.cluster.local controller\n"


class Box:
    """One node's scratch root, shim state and command log."""

    def __init__(self, tmp: Path, app, hostname: str, cpu_flags: str = "fpu vmx sse2", profile: str | None = None):
        self.root = tmp / (profile or "site") / hostname / "root"
        self.state = tmp / (profile or "site") / hostname / "state"
        self.log = tmp / (profile or "site") / hostname / "commands.log"
        self.bin = tmp / "bin"
        self.bin.mkdir(exist_ok=True)
        for tool in TOOLS:
            link = self.bin / tool
            if not link.exists():
                # the real interpreter, without site-packages: the steps call these hundreds of times
                link.write_text(f"#!{sys.executable} -S\nimport sys\nsys.argv[0] = {tool!r}\n"
                                f"exec(compile(open({str(SHIM)!r}).read(), {str(SHIM)!r}, 'exec'))\n")
                link.chmod(0o755)
        crudini = self.bin / "crudini"
        if not crudini.exists():
            # the real crudini, started without pyenv's shim: the steps call it hundreds of times
            crudini.write_text(f"#!{sys.executable}\nimport sys\nfrom crudini import main\nsys.exit(main())\n")
            crudini.chmod(0o755)
        ctx = app.extensions["provisioner"]
        self.node = ctx.registry.get(NODES[hostname])
        (self.root / "etc/provisioner").mkdir(parents=True)
        (self.root / "etc/provisioner/config.env").write_text(
            config_env(ctx.site, ctx.credentials, self.node, ctx.registry.list(), load_plan(), profile=profile))
        (self.root / "proc").mkdir()
        (self.root / "proc/cpuinfo").write_text(f"processor : 0\nflags : {cpu_flags}\n")
        self.state.mkdir(parents=True)
        if "compute" in self.node.spec.roles:
            (self.state / "mounted").mkdir()
            (self.state / "mounted" / "%export%gluster").write_text("")   # lv_gluster, from the kickstart
        self.env = {**os.environ, "ROOT": str(self.root), "PATH": f"{self.bin}:{os.environ['PATH']}",
                    "SHIM_LOG": str(self.log), "SHIM_STATE": str(self.state), "SHIM_HOSTS": HOSTS,
                    "COMPUTE_HOSTS": "compute1 compute2 compute3 compute4"}

    def run(self, step: str) -> list[str]:
        """Run one step; return the commands it issued."""
        before = self.log.read_text().splitlines() if self.log.exists() else []
        proc = subprocess.run(["bash", str(HOOKS_DIR / f"{step}.sh")], env=self.env, capture_output=True,
                              text=True, timeout=60)
        assert proc.returncode == 0, f"{step}: {proc.stderr}{proc.stdout}"
        after = self.log.read_text().splitlines() if self.log.exists() else []
        return after[len(before):]

    def files(self) -> dict[str, str]:
        return {str(p.relative_to(self.root)): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(self.root.rglob("*")) if p.is_file()}

    def text(self, rel: str) -> str:
        return (self.root / rel).read_text()


@pytest.fixture
def box(tmp_path, app):
    return lambda hostname, **kw: Box(tmp_path, app, hostname, **kw)


@pytest.mark.parametrize("hostname", list(NODES))
def test_every_step_twice_the_second_run_changes_nothing(box, hostname):
    b = box(hostname)
    steps = [s.id for s in load_plan().for_roles(b.node.spec.roles)]
    first = {s: b.run(s) for s in steps}
    files = b.files()
    second = {s: b.run(s) for s in steps}
    changes = {s: [c for c in cmds if c.startswith("CHANGE")] for s, cmds in second.items()}
    assert {s: c for s, c in changes.items() if c} == {}
    assert b.files() == files
    # and the first run did do something: every install step installed, every service started
    assert sum(1 for cmds in first.values() for c in cmds if c.startswith("CHANGE")) > len(steps) / 2


GOLDEN = Path(__file__).parent / "golden" / "hooks-first-run.txt"


def test_every_step_issues_exactly_the_reviewed_commands(box, app):
    credentials = app.extensions["provisioner"].credentials
    """The commands each step issues on a fresh node, against a reviewed transcript.

    After a deliberate change to a step, regenerate with UPDATE_GOLDEN=1 and review the diff.
    """
    lines = []
    for hostname in NODES:
        b = box(hostname)
        for step in [s.id for s in load_plan().for_roles(b.node.spec.roles)]:
            lines.append(f"== {hostname} {step}")
            lines += [c.replace(str(b.root), "$ROOT") for c in b.run(step)]
    text = "\n".join(lines) + "\n"
    for name, value in credentials.values.items():     # generated afresh for every test
        text = text.replace(value, f"${{{name.upper()}}}")
    if os.environ.get("UPDATE_GOLDEN"):
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(text)
    assert text == GOLDEN.read_text()


def changes(cmds):
    return [c.removeprefix("CHANGE ") for c in cmds if c.startswith("CHANGE")]


def test_gateway_nat_and_forwarding(box):
    b = box("compute1")
    assert changes(b.run("01-network-gateway/01-firewall-nat")) == [
        "firewall-cmd -q --permanent --zone=external --change-interface=nic0",
        "firewall-cmd -q --permanent --zone=internal --change-interface=nic1",
        "firewall-cmd -q --permanent --zone=external --add-masquerade",
        "firewall-cmd -q --permanent --new-policy=internal-external",
        "firewall-cmd -q --permanent --policy=internal-external --set-target=ACCEPT",
        "firewall-cmd -q --permanent --policy=internal-external --add-ingress-zone=internal",
        "firewall-cmd -q --permanent --policy=internal-external --add-egress-zone=external",
        "firewall-cmd -q --reload",
    ]
    assert changes(b.run("01-network-gateway/02-ip-forward")) == [
        f"sysctl -q -p {b.root}/etc/sysctl.d/90-provisioner-ip-forward.conf"]
    assert "net.ipv4.ip_forward = 1\n" in b.text("etc/sysctl.d/90-provisioner-ip-forward.conf")
    b.run("01-network-gateway/03-hosts")
    assert b.text("etc/hosts") == HOSTS


def test_the_controller_builds_the_volume_with_one_replica_per_compute_host(box):
    b = box("controller")
    assert changes(b.run("03-glusterfs-controller/01-glusterfs-probe")) == [
        f"gluster peer probe compute{i}" for i in range(1, 5)]
    assert changes(b.run("03-glusterfs-controller/02-glusterfs-create-volume")) == [
        "gluster --mode=script volume create vm-instances replica 4 " +
        " ".join(f"compute{i}:/export/gluster/brick" for i in range(1, 5)),
        "gluster --mode=script volume start vm-instances",
    ]


def test_the_volume_is_mounted_by_one_fstab_line(box):
    b = box("compute2")
    (b.root / "etc").mkdir(exist_ok=True)
    (b.root / "etc/fstab").write_text("/dev/mapper/vg_base-lv_root / ext4 defaults 1 1\n"
                                      "old:/x /var/lib/nova/instances glusterfs defaults 0 0\n")
    assert changes(b.run("04-glusterfs-all/01-glusterfs-mount")) == ["mount /var/lib/nova/instances"]
    assert b.text("etc/fstab") == ("/dev/mapper/vg_base-lv_root / ext4 defaults 1 1\n"
                                   "localhost:/vm-instances /var/lib/nova/instances glusterfs "
                                   "defaults,_netdev,x-systemd.requires=glusterd.service 0 0\n")
    b.run("04-glusterfs-all/01-glusterfs-mount")
    assert b.text("etc/fstab").count("vm-instances") == 1


@pytest.mark.parametrize("flags, module, virt", [("vmx", "kvm_intel", "kvm"), ("svm", "kvm_amd", "kvm"),
                                                 ("sse2", None, "qemu")])
def test_kvm_follows_the_cpu(box, flags, module, virt):
    b = box("compute2", cpu_flags=f"fpu {flags}")
    cmds = changes(b.run("05-kvm-compute/02-kvm-modprobe"))
    if module:
        assert cmds == [f"modprobe {module}"] and b.text("etc/modules-load.d/kvm.conf") == f"kvm\n{module}\n"
    else:
        assert cmds == [] and not (b.root / "etc/modules-load.d/kvm.conf").exists()
    b.run("08-openstack-compute/03-nova-config")
    assert f"virt_type = {virt}" in b.text("etc/nova/nova.conf")


def test_libvirt_tls_needs_a_password_and_listens_inside(box):
    b = box("compute2")
    cmds = changes(b.run("05-kvm-compute/04-libvirt-config"))
    assert "saslpasswd2 -p -a libvirt -f /etc/libvirt/passwd.db migration" in cmds
    assert b.text("etc/libvirt/virtproxyd.conf") == 'auth_tls = "sasl"\n'    # no sections in libvirt's files
    assert "ListenStream=192.168.0.2:16514" in b.text("etc/systemd/system/virtproxyd-tls.socket.d/listen.conf")
    assert (b.root / "etc/libvirt/auth.conf").stat().st_mode & 0o777 == 0o600


def test_chrony_serves_the_network_from_the_controller(box, site):
    ctl, cmp_ = box("controller"), box("compute2")
    ctl.run("06-openstack-all/03-chrony-config")
    cmp_.run("06-openstack-all/03-chrony-config")
    servers = "".join(f"server {s} iburst\n" for s in site.ntp_servers)
    assert ctl.text("etc/chrony.conf").startswith(servers + "allow 192.168.0.0/24\nlocal stratum 10\n")
    assert cmp_.text("etc/chrony.conf").startswith(servers + "server controller iburst prefer\n")


def test_keystone_objects_are_created_once(box):
    b = box("controller")
    for step in ("07-openstack-controller/07-keystone-create-db", "07-openstack-controller/08-keystone-fernet",
                 "07-openstack-controller/10-keystone-init-db", "07-openstack-controller/11-keystone-bootstrap"):
        b.run(step)
    cmds = changes(b.run("07-openstack-controller/13-keystone-create-users"))
    assert sum(c.startswith("openstack endpoint create") for c in cmds) == 15
    assert sum(c.startswith("openstack user create") for c in cmds) == 5
    assert "openstack project create --domain default --description 'Service Project' service" in cmds
    assert changes(b.run("07-openstack-controller/13-keystone-create-users")) == []
    conf = b.text("etc/keystone/keystone.conf") if (b.root / "etc/keystone/keystone.conf").exists() else ""
    assert conf == ""   # configuration is the config step's, not this one's


def test_ini_edits_replace_keys_and_keep_the_rest(box):
    b = box("controller")
    conf = b.root / "etc/glance/glance-api.conf"
    conf.parent.mkdir(parents=True)
    conf.write_text("[DEFAULT]\n# a comment that stays\n#enabled_backends = old\n\n[database]\n"
                    "connection = sqlite://\nmax_retries = 5\n")
    b.run("07-openstack-controller/16-glance-config")
    text = conf.read_text()
    assert text.count("connection = ") == 1 and "connection = mysql+pymysql://glance:" in text
    assert "max_retries = 5" in text and "# a comment that stays" in text
    assert "enabled_backends = fs:file" in text and "#enabled_backends = old" in text
    assert "[fs]\nfilesystem_store_datadir = /var/lib/glance/images/" in text


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="needs shellcheck")
def test_every_script_passes_shellcheck_and_bash_n():
    scripts = sorted(str(p) for p in HOOKS_DIR.rglob("*.sh"))
    assert len(scripts) >= 70
    proc = subprocess.run(["shellcheck", "-x", *scripts], capture_output=True, text=True, cwd=HOOKS_DIR)
    assert proc.returncode == 0, proc.stdout
    for s in scripts:
        assert subprocess.run(["bash", "-n", s]).returncode == 0, s


def test_every_step_names_the_report_step_it_replaces():
    for step in load_plan().steps:
        head = (HOOKS_DIR / f"{step.id}.sh").read_text().splitlines()[1:4]
        assert any("Report" in line or "report" in line or "Table" in line for line in head), step.id
