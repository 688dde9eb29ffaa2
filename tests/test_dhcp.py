"""dnsmasq-config, checked by a real dnsmasq and a real DHCP client in namespaces the test makes."""

import os
import shutil
import subprocess
import sys
import time

import pytest

from provisioner.boot.dhcp import dnsmasq_config
from tests.netns import can_make_namespaces, namespaces

needs_netns = pytest.mark.skipif(
    not (can_make_namespaces() and shutil.which("dnsmasq") and os.path.exists("/bin/busybox")),
    reason="needs root, iproute2, dnsmasq and busybox")

LEASE_SCRIPT = """#!/bin/sh
[ "$1" = bound ] && echo "ip=$ip siaddr=$siaddr boot_file=$boot_file router=$router hostname=$hostname" > "$OUT"
exit 0
"""


def test_config_lines(registry, site):
    text = dnsmasq_config(site, registry.list(), interface="br0")
    assert "dhcp-range=192.168.0.0,static,255.255.255.0,12h" in text
    assert "dhcp-host=52:54:00:0c:00:01,192.168.0.1,compute1,infinite" in text
    assert "dhcp-host=52:54:00:0c:01:01,ignore" in text   # compute1's public NIC
    assert "dhcp-boot=tag:!ipxe,tag:!efi-x86_64,tag:!httpboot,lpxelinux.0,,192.168.0.254" in text
    assert "dhcp-boot=tag:!ipxe,tag:efi-x86_64,tag:!httpboot,shimx64.efi,,192.168.0.254" in text
    assert "dhcp-boot=tag:ipxe,http://192.168.0.254:8081/boot.ipxe" in text
    # UEFI HTTP Boot: the GRUB with http that `bootfiles import` builds, by URL from the boot port
    assert "dhcp-boot=tag:httpboot,http://192.168.0.254:8081/bootfiles/grubx64-http.efi" in text
    proxy = dnsmasq_config(site, registry.list(), proxy=True)
    assert "dhcp-range=192.168.0.0,proxy,255.255.255.0" in proxy and "static" not in proxy
    assert 'pxe-service=tag:!ipxe,x86PC,"Network install (BIOS)",lpxelinux,192.168.0.254' in proxy


@needs_netns
@pytest.mark.parametrize("proxy", [False, True])
def test_dnsmasq_accepts_the_file(tmp_path, proxy):
    state = tmp_path / "state"
    args = ["--interface", "br0"] + (["--proxy"] if proxy else [])
    conf = subprocess.run([sys.executable, "-m", "provisioner", "--state-dir", str(state), "dnsmasq-config", *args],
                          capture_output=True, text=True, check=True).stdout
    (tmp_path / "dnsmasq.conf").write_text(conf)
    assert subprocess.run(["dnsmasq", "--test", "-C", str(tmp_path / "dnsmasq.conf")],
                          capture_output=True, text=True).returncode == 0


def _dnsmasq(ns, tmp_path, conf):
    (tmp_path / "dnsmasq.conf").write_text(conf)
    return ns.popen(["dnsmasq", "--keep-in-foreground", "--log-facility=-", "-C", str(tmp_path / "dnsmasq.conf"),
                     f"--dhcp-leasefile={tmp_path / 'leases'}", f"--pid-file={tmp_path / 'dnsmasq.pid'}"],
                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _lease(client_ns, tmp_path, *extra):
    script = tmp_path / "lease.sh"
    script.write_text(LEASE_SCRIPT)
    script.chmod(0o755)
    out = tmp_path / f"lease-{time.monotonic_ns()}"
    proc = client_ns.run("env", f"OUT={out}", "/bin/busybox", "udhcpc", "-i", "eth0", "-n", "-q", "-f",
                         "-t", "4", "-T", "1", "-s", str(script), *extra, check=False, timeout=60)
    if proc.returncode != 0 or not out.exists():
        return None
    return dict(kv.split("=", 1) for kv in out.read_text().split())


@needs_netns
def test_a_real_client_gets_its_address_and_boot_file(tmp_path, registry, site):
    conf = dnsmasq_config(site, registry.list(), interface="br0")
    with namespaces(3) as (server, known, stranger):
        server.bridge("br0")
        server.veth_to(known, "br0", "52:54:00:0c:00:02")
        server.veth_to(stranger, "br0", "52:54:00:99:99:99")
        dnsmasq = _dnsmasq(server, tmp_path, conf)
        try:
            time.sleep(0.5)
            assert dnsmasq.poll() is None, dnsmasq.stdout.read()
            bios = _lease(known, tmp_path)
            assert bios is not None
            assert (bios["ip"], bios["siaddr"], bios["boot_file"], bios["router"]) == (
                "192.168.0.2", "192.168.0.254", "lpxelinux.0", "192.168.0.1")
            # iPXE announces itself in option 77 and is sent to the HTTP script
            ipxe = _lease(known, tmp_path, "-x", "0x4d:69505845")
            assert ipxe["boot_file"] == "http://192.168.0.254:8081/boot.ipxe"
            # a UEFI x86-64 client (option 93 = 7) gets the signed shim
            efi = _lease(known, tmp_path, "-x", "0x5d:0007")
            assert efi["boot_file"] == "shimx64.efi"   # which then fetches grubx64.efi
            # an unregistered machine gets nothing: it cannot be installed by accident
            assert _lease(stranger, tmp_path) is None
        finally:
            dnsmasq.kill()
            dnsmasq.wait()
            dnsmasq.stdout.close()


@needs_netns
def test_dns_for_the_install_network_answers_the_nodes_and_the_service(tmp_path, registry, site):
    """--dns: a client that took its lease resolves every node and the service by name through
    the libc resolver, and a name outside the site is refused at once, not forwarded anywhere."""
    from dataclasses import replace
    site = replace(site, service_url="http://provisioner.cluster.local:8080",
                   boot_url="http://provisioner.cluster.local:8081")
    conf = dnsmasq_config(site, registry.list(), interface="br0", server_ip="192.168.0.254", dns=True)
    assert "port=0" not in conf and "dhcp-option=option:dns-server,192.168.0.254" in conf
    with namespaces(2) as (server, client):
        server.bridge("br0")
        server.veth_to(client, "br0", "52:54:00:0c:00:02")
        dnsmasq = _dnsmasq(server, tmp_path, conf)
        etc = f"/etc/netns/{client.name}"
        try:
            time.sleep(0.5)
            assert dnsmasq.poll() is None, dnsmasq.stdout.read()
            assert _lease(client, tmp_path) is not None
            client.run("ip", "addr", "add", "192.168.0.2/24", "dev", "eth0", check=False)
            # `ip netns exec` gives the namespace /etc/netns/<name>/resolv.conf as its own
            os.makedirs(etc, exist_ok=True)
            with open(f"{etc}/resolv.conf", "w") as f:
                f.write("nameserver 192.168.0.254\noptions timeout:2 attempts:1\n")

            def resolve(name):
                r = client.run("getent", "ahostsv4", name, check=False, timeout=20)
                return r.stdout.split()[0] if r.returncode == 0 and r.stdout else None
            assert resolve("controller.cluster.local") == "192.168.0.5"
            assert resolve("compute2.cluster.local") == "192.168.0.2"
            assert resolve("provisioner.cluster.local") == "192.168.0.254"
            start = time.monotonic()
            assert resolve("mirror.stream.centos.org") is None
            assert time.monotonic() - start < 10
        finally:
            shutil.rmtree(etc, ignore_errors=True)
            dnsmasq.kill()
            dnsmasq.wait()
            dnsmasq.stdout.close()
