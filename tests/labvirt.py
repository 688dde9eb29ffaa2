"""libvirtd for the lab tests: one at a time on this host, in the test's network namespace."""

from __future__ import annotations

import fcntl
import time
from contextlib import contextmanager
from pathlib import Path

import pytest


@contextmanager
def libvirtd_to_ourselves(wait=900):
    """Only the network is namespaced: libvirtd's socket (/run/libvirt), its state and its
    definitions (/etc/libvirt) are the host's, and the lab's names are fixed (pv-*). Two runs at
    once talk to whichever libvirtd bound the socket last and tear down each other's lab."""
    with open("/run/lock/provisioner-lab-libvirtd.lock", "w") as lock:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    pytest.skip("another lab test held libvirtd for the whole wait")
                time.sleep(5)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def start_libvirtd(ns, tmp_path: Path) -> None:
    """libvirtd in the namespace, seeing a /dev/kvm its QEMU user may open. In this container
    /dev/kvm belongs to the host's kvm group (992), not to the one libvirt-qemu is in (107):
    libvirt 9.0's probe of QEMU finds KVM, its access check as libvirt-qemu does not, so it
    holds its cached QEMU capabilities outdated and probes QEMU again at every lookup
    (virQEMUCapsIsValid: "KVM was enabled when probing ..., but it is not available now"), about
    45 s under TCG. The emulators define the domain on the first read of a system and on every
    boot-device change, so each would take that long and time the BMC requests out. A node for
    the same device, group kvm, bound over /dev/kvm in libvirtd's own mount namespace makes the
    two agree (defines take 0.01-0.3 s); the VMs still run under TCG (domain type qemu)."""
    dev = tmp_path / "kvmdev"
    dev.mkdir()
    script = (f"set -e\nif [ -c /dev/kvm ] && getent group kvm >/dev/null; then\n"
              f"  mount -t tmpfs -o mode=755 pv-kvm {dev}\n"
              f"  mknod -m 660 {dev}/kvm c 10 232\n  chgrp kvm {dev}/kvm\n  mount --bind {dev}/kvm /dev/kvm\nfi\n"
              f"exec libvirtd -d -p {tmp_path / 'libvirtd.pid'}")
    ns.run("unshare", "--mount", "--propagation", "private", "sh", "-c", script)
