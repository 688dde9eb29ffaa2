import os
import sys
from pathlib import Path

import pytest

from provisioner.app import create_app
from provisioner.config import load_site
from provisioner.credentials import load_or_create

# The suite runs as `.venv/bin/python -m pytest` without the venv activated: the console scripts
# of the test extras (sushy-emulator, vbmc, provisioner) live beside that interpreter.
os.environ["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])

REPORT_COMPUTE_DISK = 250_059_350_016     # WD 250 GB, report 5.1
REPORT_CONTROLLER_DISK = 80_026_361_856   # Seagate 80 GB, report 5.1


@pytest.fixture
def state_dir(tmp_path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def site():
    """The embedded site, but kickstarts are served to any address: the tests fetch them from
    loopback, not from each node's own address (tests/test_security.py checks the default)."""
    from dataclasses import replace
    return replace(load_site(), kickstart_node_address_only=False)


@pytest.fixture
def app(state_dir, site):
    app = create_app(state_dir, site)
    app.config["TESTING"] = True
    yield app
    app.extensions["provisioner"].registry.close()


@pytest.fixture
def client(app, state_dir):
    """A client that reads with the read-only token (a request's own Authorization wins);
    tests/test_security.py checks what an anonymous one gets."""
    c = app.test_client()
    c.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {load_or_create(state_dir).reader_token}"
    return c


@pytest.fixture
def admin(state_dir, app):
    return {"Authorization": f"Bearer {load_or_create(state_dir).admin_token}"}


@pytest.fixture
def registry(app):
    return app.extensions["provisioner"].registry


def loopback_site(tmp_path: Path) -> Path:
    """The embedded site as a file, but kickstarts are served to any address (the tests fetch
    them from loopback, not from each node's own address)."""
    from importlib import resources
    text = resources.files("provisioner").joinpath("site.yaml").read_text()
    assert "  kickstart_node_address_only: true\n" in text
    path = tmp_path / "site-loopback.yaml"
    path.write_text(text.replace("  kickstart_node_address_only: true\n", "  kickstart_node_address_only: false\n"))
    return path


class LiveServer(str):
    """The base URL of a real `provisioner serve` (gunicorn) on loopback; `.log` is its output."""
    log: Path


@pytest.fixture
def live_server(state_dir, tmp_path):
    import socket
    import subprocess
    import sys
    import time

    import requests

    def free_port():
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]
    port, boot = free_port(), free_port()
    log = tmp_path / "serve.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "provisioner", "--state-dir", str(state_dir),
                                 "--site", str(loopback_site(tmp_path)), "serve",
                                 "--http", f"127.0.0.1:{port}", "--boot", f"127.0.0.1:{boot}", "--no-tftp"],
                                stdout=out, stderr=subprocess.STDOUT)
    url = LiveServer(f"http://127.0.0.1:{port}")
    url.log = log
    url.boot = f"http://127.0.0.1:{boot}"
    url.reader = {"Authorization": f"Bearer {load_or_create(state_dir).reader_token}"}
    deadline = time.monotonic() + 30
    while True:
        try:
            requests.get(f"{url}/api/v1/nodes", timeout=2)
            break
        except requests.ConnectionError:
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
    yield url
    proc.terminate()
    proc.wait(timeout=10)


def new_node(**over):
    body = {"mac": "52:54:00:aa:00:10", "hostname": "compute10", "ip": "192.168.0.10",
            "roles": ["compute"], "interface": "eth1"}
    body.update(over)
    return body


def db_dump(registry) -> list[str]:
    """Every row of every table, to prove a rejected request changed nothing."""
    return list(registry._conn().iterdump())


def make_tree(root: Path, kernel: bytes = b"K" * 5000, initrd: bytes = b"I" * 300_000,
              name: str = "CentOS Stream", version: str = "9", arch: str = "x86_64",
              algo: str = "sha256", corrupt: str | None = None) -> Path:
    """A small CentOS-Stream-shaped install tree, as `distro import` expects one."""
    import hashlib
    pxe = root / "images" / "pxeboot"
    pxe.mkdir(parents=True, exist_ok=True)
    (pxe / "vmlinuz").write_bytes(kernel)
    (pxe / "initrd.img").write_bytes(initrd)
    sums = {p: hashlib.new(algo, data).hexdigest() for p, data in
            (("images/pxeboot/vmlinuz", kernel), ("images/pxeboot/initrd.img", initrd))}
    if corrupt:
        sums[corrupt] = "0" * len(sums[corrupt])
    (root / ".treeinfo").write_text(f"""[header]
type = productmd.treeinfo
version = 1.2

[release]
name = {name}
short = CentOS-Stream
version = {version}

[tree]
arch = {arch}
platforms = {arch}

[images-{arch}]
initrd = images/pxeboot/initrd.img
kernel = images/pxeboot/vmlinuz

[checksums]
images/pxeboot/initrd.img = {algo}:{sums['images/pxeboot/initrd.img']}
images/pxeboot/vmlinuz = {algo}:{sums['images/pxeboot/vmlinuz']}
""")
    return root


@pytest.fixture
def imported(state_dir, app, tmp_path):
    """The default site's distro imported from a small local tree."""
    from provisioner.boot.distros import import_tree
    tree = make_tree(tmp_path / "tree")
    import_tree(state_dir, str(tree))
    return tree


def inventory(mac: str = "52:54:00:dd:00:01", *, disk_bytes: int = REPORT_COMPUTE_DISK, **over) -> dict:
    """What the inspection ramdisk reports of a machine booted from `mac` (two NICs, two disks)."""
    body = {"boot_mac": mac,
            "nics": [{"mac": mac, "name": "eth0", "link": True},
                     {"mac": "52:54:01" + mac[8:], "name": "eth1", "link": False}],
            "disks": [{"name": "sda", "bytes": disk_bytes, "model": "WDC WD2500AAKS"},
                      {"name": "sdb", "bytes": 80_026_361_856, "model": "ST380815AS"}],
            "cpus": 4, "virt": "vmx", "memory_bytes": 8 * 2**30, "firmware": "bios",
            "system": {"vendor": "Dell Inc.", "model": "OptiPlex 755", "serial": "ABC1234"}}
    body.update(over)
    return body


def discovery_on(app, **settings):
    """Turn the app's site's discovery on (as site.yaml `discovery: {enabled: true, ...}`)."""
    from dataclasses import replace

    from provisioner.config import Discovery
    ctx = app.extensions["provisioner"]
    ctx.site = replace(ctx.site, discovery=Discovery(enabled=True, **settings))
    return ctx.site
