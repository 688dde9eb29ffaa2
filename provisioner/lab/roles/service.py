"""The real service inside the roles lab: `provisioner serve` in the lab's namespace, at the
service's address on the install network, with a state directory of its own under the lab's
work dir (its registry, secrets and CA; gone with `down`).

Its registry holds the site's nodes (as `serve` itself registers them) and any the operator
registered through the API, all armed for install, as on a fresh service. The role steps'
configuration names the Debian profile ($PROVISIONER_FIRSTBOOT_PROFILE), because the lab's
nodes are Debian containers whatever OS the site installs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse


PROFILE = "debian-13"
API_WORKERS = 1          # one of each is plenty for a handful of nodes, on a 2-core host
BOOT_PROCESSES = 1


class ServiceError(RuntimeError):
    pass


class LabService:
    """sub: the Substrate it runs in; site: the operator's Site (its source is what serve reads)."""

    def __init__(self, sub, site, nodes=()):
        self.sub = sub
        self.site = site
        self.nodes = list(nodes)
        self.dir = sub.work_dir / "service"
        self.state_dir = self.dir / "state"
        self.log = self.dir / "serve.log"
        if site.tls_ca:
            raise ServiceError("service.tls_ca names an operator's CA: the lab's own service has no "
                               "certificate from it; rehearse with a site without tls_ca")

    @property
    def api_url(self) -> str:
        return self.site.service_url

    @property
    def address(self) -> str:
        return urlparse(self.site.service_url).hostname

    def ports(self) -> tuple[int, int]:
        api = urlparse(self.site.service_url)
        boot = urlparse(self.site.boot_url)
        default = 443 if api.scheme == "https" else 80
        return api.port or default, boot.port or 80

    def prepare(self) -> None:
        """The state directory: secrets, the site's nodes, and the operator's API-registered ones."""
        from provisioner.app import open_context
        self.dir.mkdir(parents=True, exist_ok=True)
        self.sub.adopt_dir(self.dir)
        ctx = open_context(self.state_dir, self.site, reload_templates=False)
        try:
            have = {n.mac for n in ctx.registry.list()}
            for node in self.nodes:
                if node.spec.mac not in have:
                    ctx.registry.add(node.spec, source="api")
        finally:
            ctx.registry.close()

    def start(self, timeout: float = 60.0) -> None:
        api_port, boot_port = self.ports()
        argv = [sys.executable, "-m", "provisioner", "--state-dir", str(self.state_dir), "--site",
                str(self.site.source), "serve", "--http", f"{self.address}:{api_port}",
                "--boot", f"{self.address}:{boot_port}", "--no-tftp",
                "--workers", str(API_WORKERS), "--boot-processes", str(BOOT_PROCESSES)]
        env = {**os.environ, "PROVISIONER_FIRSTBOOT_PROFILE": PROFILE}
        with open(self.log, "ab") as log:
            proc = self.sub.lab_popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                      stderr=subprocess.STDOUT, start_new_session=True)
        self.sub.adopt_process("service", proc)
        deadline = time.monotonic() + timeout
        while not self._listening(api_port, boot_port):
            if proc.poll() is not None:
                raise ServiceError(f"provisioner serve exited ({proc.returncode}): {self._tail()}")
            if time.monotonic() > deadline:
                raise ServiceError(f"provisioner serve not listening after {timeout:.0f}s: {self._tail()}")
            time.sleep(0.2)

    def read_token(self) -> str:
        """The read-only token: plans, events and barriers are all the lab reads."""
        from provisioner.credentials import load_or_create
        return load_or_create(self.state_dir).reader_token

    def ca_file(self) -> Path | None:
        """The CA to verify the API with, when it speaks HTTPS (serve made it in its state dir)."""
        from provisioner.tls import ca_pem
        pem = ca_pem(self.site, self.state_dir)
        if pem is None:
            return None
        path = self.dir / "ca.pem"
        path.write_text(pem)
        return path

    def _listening(self, *ports: int) -> bool:
        out = self.sub.lab_run(["ss", "-Htln"]).stdout
        return all(f"{self.address}:{p} " in out for p in ports)

    def _tail(self) -> str:
        try:
            return " | ".join(self.log.read_text(errors="replace").splitlines()[-5:])
        except OSError:
            return "(no log)"


def start_time(pid: int) -> str | None:
    """When the process started (clock ticks since boot): with the PID, it names one process,
    so a PID reused after the lab's service ended is never signalled by `down`."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2:].split()[19]


def stop_process(pid: int, start: str | None, timeout: float = 15.0) -> bool:
    """SIGTERM to the process group a lab process leads (serve's supervisor and its children),
    then SIGKILL to whatever is left; False if that process is gone already."""
    if start is None or start_time(pid) != start:
        return False
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return True
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            _reap(pid)
            try:
                os.killpg(pid, 0)
            except ProcessLookupError:
                return True
            time.sleep(0.1)
    return True


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
