"""The roles lab as one object: root, networks and containers up, and everything gone on down.

    sub = Substrate.from_site(site, registry.list(), cache_dir, work_dir)
    sub.up()                       # build or reuse the root, make the networks, boot every node
    sub.exec("controller", ["systemctl", "is-system-running"])
    sub.down()

What `up` made is written to work_dir/state.json as it is made, so `down` (in this process or a
later one) removes exactly that, even after an `up` that failed halfway.
"""

from __future__ import annotations

import ipaddress
import json
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from provisioner.lab.roles import containers, netns, rootfs
from provisioner.lab.roles.recipe import RECIPES

STATE = "state.json"


class SubstrateError(RuntimeError):
    pass


@dataclass
class Timings:
    root: float = 0.0
    root_cached: bool = False
    network: float = 0.0
    boot: float = 0.0
    states: dict[str, str] = field(default_factory=dict)


class Substrate:
    def __init__(self, nodes, cache_dir: Path | None = None, work_dir: Path | None = None, *,
                 network: str = "192.168.0.0/24", service_address: str = "192.168.0.254",
                 gateway: str | None = None, domain: str = "", nameservers: tuple[str, ...] = (),
                 recipe: str = "full", progress=lambda line: None):
        """nodes: the registry's nodes (registry.Node) or their specs (config.NodeSpec)."""
        self.specs = sorted((getattr(n, "spec", n) for n in nodes),
                            key=lambda s: ipaddress.IPv4Address(s.ip))
        self.cache_dir = Path(cache_dir) if cache_dir else rootfs.default_cache_dir()
        self.work_dir = Path(work_dir) if work_dir else default_work_dir()
        self.network = ipaddress.IPv4Network(network)
        self.service_address = service_address
        self.gateway = gateway
        self.domain = domain
        self.nameservers = tuple(nameservers)
        if recipe not in RECIPES:
            raise SubstrateError(f"unknown recipe {recipe!r} (one of {', '.join(RECIPES)})")
        self.recipe = RECIPES[recipe]
        self.progress = progress
        self.timings = Timings()
        self._children: dict[str, subprocess.Popen] = {}   # nspawns this process started

    @classmethod
    def from_site(cls, site, nodes, cache_dir=None, work_dir=None, **kw) -> "Substrate":
        from provisioner.lab.vms import service_address
        return cls(nodes, cache_dir, work_dir, network=str(site.network), service_address=service_address(site),
                   gateway=site.gateway, domain=site.domain, nameservers=site.nameservers, **kw)

    # -- up / down ---------------------------------------------------------------------------

    def up(self, boot_timeout: float = 300.0) -> Timings:
        if not self.specs:
            raise SubstrateError("no nodes to bring up: register some first")
        if self._load_state():
            raise SubstrateError(f"a roles lab is already up in {self.work_dir}: run down first")
        self.work_dir.mkdir(parents=True, exist_ok=True)
        t = time.monotonic()
        cached = rootfs.cached_root(self.recipe, self.cache_dir) is not None
        root = rootfs.ensure_root(self.recipe, self.cache_dir, self.progress)
        self.timings = Timings(root=time.monotonic() - t, root_cached=cached)
        state = {"lab_id": uuid.uuid4().hex[:6], "root": str(root), "nodes": {}}
        self._save_state(state)
        try:
            self._up(state, root, boot_timeout)
        except BaseException:
            self.progress("up failed: taking down what it made")
            self.down()
            raise
        return self.timings

    def _up(self, state: dict, root: Path, boot_timeout: float) -> None:
        t = time.monotonic()
        net = self._net(state)
        net.create()
        public = netns.public_addresses()
        plans = {}
        for i, spec in enumerate(self.specs):
            plans[spec.hostname] = plan = netns.plan_node(spec, self.network, self.gateway, public)
            state["nodes"][spec.hostname] = {"ns": net.node_ns(spec.hostname), "ip": spec.ip}
            self._save_state(state)
            net.add_node(i, plan)
        self.progress(f"networks: {net.name} (install {self.network}, service {self.service_address}; "
                      f"public {netns.PUBLIC_CIDR}) and {len(plans)} node namespaces")
        self.timings.network = time.monotonic() - t

        t = time.monotonic()
        hosts = self._hosts_file()
        for spec in self.specs:
            node = state["nodes"][spec.hostname]
            dirs = self._dirs(spec.hostname)
            node["dir"] = str(dirs.base)
            self._save_state(state)
            containers.mount_overlay(root, dirs)
            containers.seed_identity(dirs.root, spec.hostname, hosts, uuid.uuid4().hex, self.nameservers)
            brick = "compute" in spec.roles
            if brick:
                node["brick"] = str(dirs.brick_image)
                self._save_state(state)
                containers.make_brick(dirs)
            proc = self._children[spec.hostname] = containers.start(dirs, spec.hostname, net.ns_path(node["ns"]),
                                                                    brick)
            node["nspawn"] = proc.pid
            self._save_state(state)
        for spec in self.specs:
            node = state["nodes"][spec.hostname]
            node["leader"] = containers.leader(node["nspawn"])
            self._save_state(state)
        for spec in self.specs:
            left = max(5.0, boot_timeout - (time.monotonic() - t))
            node = state["nodes"][spec.hostname]
            try:
                self.timings.states[spec.hostname] = containers.wait_booted(node["leader"], left)
            except containers.ContainerError as e:
                raise SubstrateError(f"{spec.hostname}: {e}; console: {self._dirs(spec.hostname).console}") from None
            self.progress(f"{spec.hostname}: {self.timings.states[spec.hostname]}")
        self.timings.boot = time.monotonic() - t

    def down(self) -> list[str]:
        """Stop every container, unmount and remove its overlay, delete the namespaces."""
        state = self._load_state()
        if not state:
            return []
        done = []
        for hostname, node in state["nodes"].items():
            if node.get("nspawn") or node.get("leader"):
                containers.stop(node.get("nspawn"), node.get("leader"))
                if hostname in self._children:
                    self._children.pop(hostname).wait()
                done.append(f"stopped {hostname}")
            if node.get("dir"):
                dirs = containers.NodeDirs(Path(node["dir"]))
                if containers.unmount(dirs.root):
                    done.append(f"unmounted {dirs.root}")
                if node.get("brick") and containers.remove_brick(dirs):
                    done.append(f"removed the brick {dirs.brick_image}")
                shutil.rmtree(dirs.base, ignore_errors=True)
        for ns in self._net(state).delete():
            done.append(f"deleted namespace {ns}")
        left = containers.mounts_under(self.work_dir)
        if left:
            raise SubstrateError(f"still mounted after down: {', '.join(left)}")
        (self.work_dir / STATE).unlink()
        shutil.rmtree(self.work_dir / "nodes", ignore_errors=True)
        for line in done:
            self.progress(line)
        return done

    # -- using it ----------------------------------------------------------------------------

    def status(self) -> dict[str, str]:
        """Each node's systemd state, or why there is none; {} when nothing is up."""
        state = self._load_state()
        if not state:
            return {}
        out = {}
        for hostname, node in state["nodes"].items():
            if not node.get("leader") or not containers.alive(node["leader"]):
                out[hostname] = "stopped"
                continue
            r = subprocess.run(containers.exec_argv(node["leader"], ["systemctl", "is-system-running"]),
                               capture_output=True, text=True, timeout=30)
            out[hostname] = r.stdout.strip() or f"unknown ({r.stderr.strip()})"
        return out

    def exec(self, node: str, argv: list[str], env: dict[str, str] | None = None,
             **kw) -> subprocess.CompletedProcess:
        """Run argv as root inside node's container (subprocess.run's keywords apply)."""
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        extra = [f"{k}={v}" for k, v in (env or {}).items()]
        return subprocess.run(containers.exec_argv(self._leader(node), list(argv), extra), **kw)

    def shell(self, node: str) -> int:
        """An interactive login shell in node's container, on this terminal."""
        import os
        term = [f"TERM={os.environ.get('TERM', 'xterm')}"]
        return subprocess.call(containers.exec_argv(self._leader(node), ["/bin/bash", "-l"], term))

    def failed_units(self, node: str) -> list[str]:
        r = self.exec(node, ["systemctl", "list-units", "--failed", "--plain", "--no-legend"])
        return [line.split()[0] for line in r.stdout.splitlines() if line.strip()]

    def lab_popen(self, argv: list[str], **kw) -> subprocess.Popen:
        """A process on the lab's side of the install network (where the service's address is)."""
        state = self._require_state()
        return subprocess.Popen(self._net(state).exec_argv(list(argv)), **kw)

    def lab_run(self, argv: list[str], **kw) -> subprocess.CompletedProcess:
        state = self._require_state()
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        return subprocess.run(self._net(state).exec_argv(list(argv)), **kw)

    def namespaces(self) -> list[str]:
        state = self._load_state()
        return self._net(state).owned() if state else []

    @property
    def root(self) -> Path | None:
        state = self._load_state()
        return Path(state["root"]) if state else None

    # -- internals ---------------------------------------------------------------------------

    def _net(self, state: dict) -> netns.LabNetwork:
        return netns.LabNetwork(state["lab_id"], f"{self.service_address}/{self.network.prefixlen}")

    def _dirs(self, hostname: str) -> containers.NodeDirs:
        return containers.NodeDirs(self.work_dir / "nodes" / hostname)

    def _hosts_file(self) -> str:
        lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
        for spec in self.specs:
            names = [f"{spec.hostname}.{self.domain}"] if self.domain else []
            lines.append("\t".join([spec.ip, *names, spec.hostname, *spec.aliases]))
        return "\n".join(lines) + "\n"

    def _leader(self, node: str) -> int:
        state = self._require_state()
        entry = state["nodes"].get(node)
        if not entry or not entry.get("leader"):
            raise SubstrateError(f"no container for {node!r} (nodes: {', '.join(state['nodes'])})")
        if not containers.alive(entry["leader"]):
            raise SubstrateError(f"{node}'s container is not running")
        return entry["leader"]

    def _require_state(self) -> dict:
        state = self._load_state()
        if not state:
            raise SubstrateError(f"no roles lab is up in {self.work_dir}")
        return state

    def _load_state(self) -> dict | None:
        try:
            return json.loads((self.work_dir / STATE).read_text())
        except FileNotFoundError:
            return None

    def _save_state(self, state: dict) -> None:
        tmp = self.work_dir / (STATE + ".tmp")
        tmp.write_text(json.dumps(state, indent=2) + "\n")
        tmp.replace(self.work_dir / STATE)


def default_work_dir() -> Path:
    import os
    if os.geteuid() == 0:
        return Path("/var/lib/provisioner-lab-roles")
    return Path(os.path.expanduser("~/.local/share/provisioner-lab-roles"))
