"""One install network for the tests that boot QEMU through the service: a namespace with a
bridge at the service's address, a tap for the VM, `provisioner serve` and dnsmasq with the
configuration the service itself generates."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from pathlib import Path

from tests.netns import namespaces

SERVICE_IP = "192.168.0.254"


def provisioner(state: Path, *args: str) -> str:
    """Run the CLI; its standard output, or a failure that shows its standard error."""
    r = subprocess.run([sys.executable, "-m", "provisioner", "--state-dir", str(state), *args],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return r.stdout


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


@contextlib.contextmanager
def install_network(tmp_path: Path, state: Path, *, tftp: bool = True,
                    dnsmasq_args: tuple[str, ...] = ("--interface", "br0", "--no-ipxe")):
    """Yields the namespace, with the service answering at SERVICE_IP and tap0 on its bridge.
    The service's output is left in tmp_path/service.log."""
    (tmp_path / "dnsmasq.conf").write_text(provisioner(state, "dnsmasq-config", *dnsmasq_args))
    with namespaces(1) as (ns,):
        ns.bridge("br0", f"{SERVICE_IP}/24")
        ns.tap("tap0", "br0")
        tftp_args = ["--tftp", f"{SERVICE_IP}:69"] if tftp else ["--no-tftp"]
        with open(tmp_path / "service.log", "w") as log:
            procs = [ns.popen([sys.executable, "-m", "provisioner", "--state-dir", str(state), "serve",
                               "--http", f"{SERVICE_IP}:8080", *tftp_args], stdout=log, stderr=subprocess.STDOUT)]
            try:
                procs.append(ns.popen(["dnsmasq", "--keep-in-foreground", "--log-facility=-",
                                       "-C", str(tmp_path / "dnsmasq.conf"),
                                       f"--dhcp-leasefile={tmp_path / 'leases'}",
                                       f"--pid-file={tmp_path / 'dnsmasq.pid'}"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
                wait_for(lambda: ns.run("curl", "-sf", f"http://{SERVICE_IP}:8080/api/v1/openapi.json",
                                        check=False).returncode == 0, 30, "the service")
                yield ns
            finally:
                for p in procs:
                    if p.poll() is None:
                        p.kill()
                        p.wait()
