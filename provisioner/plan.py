"""The first-boot plan: hooks/plan.yaml as data, each node's share of it, and the barriers.

A node's plan is the steps whose roles it holds, in the report's order. A step's state is the
last `step` event the node reported for it since it was installed. A barrier is open when
every node holding its roles has reported its `after` step ok; the service computes that from
the reports, so no host ever sleeps and hopes.
"""

from __future__ import annotations

import gzip
import io
import os
import re
import shlex
import tarfile
from importlib import resources
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import yaml

from provisioner.config import Site
from provisioner.credentials import PASSWORD_KEYS, Credentials
from provisioner.registry.db import Node, Registry
from provisioner.registry.states import STEP_DONE

HOOKS_DIR = Path(str(resources.files("provisioner"))) / "hooks"     # shipped in the package
PROFILES_DIR = HOOKS_DIR / "profiles"    # one KEY='value' file per OS the steps run on
# what a step may name under `secrets:`; the root password reaches machines only as a hash in
# the kickstart, and MariaDB's root is reached over its socket
STEP_SECRETS = tuple(k for k in PASSWORD_KEYS if k not in ("root_password", "mariadb_root_password"))


class PlanError(ValueError):
    pass


@dataclass(frozen=True)
class Step:
    id: str
    roles: tuple[str, ...]
    report: str
    wait: str | None
    secrets: tuple[str, ...] = ()

    def applies_to(self, roles) -> bool:
        return "all" in self.roles or any(r in roles for r in self.roles)


@dataclass(frozen=True)
class Barrier:
    name: str
    after: str
    roles: tuple[str, ...]
    why: str


@dataclass(frozen=True)
class Plan:
    steps: tuple[Step, ...]
    barriers: dict[str, Barrier]
    folded: dict[str, str]

    def for_roles(self, roles) -> list[Step]:
        return [s for s in self.steps if s.applies_to(roles)]

    def step(self, step_id: str) -> Step | None:
        return next((s for s in self.steps if s.id == step_id), None)

    def secrets_for(self, roles) -> list[str]:
        """The secrets a node with these roles is sent: those its own steps name."""
        out: list[str] = []
        for step in self.for_roles(roles):
            out += [k for k in step.secrets if k not in out]
        return out


@lru_cache(maxsize=4)
def load_plan(hooks_dir: Path = HOOKS_DIR) -> Plan:
    data = yaml.safe_load((hooks_dir / "plan.yaml").read_text())
    barriers = {}
    for name, b in data.get("barriers", {}).items():
        barriers[name] = Barrier(name, b["after"], tuple(b["roles"]), b.get("why", ""))
    steps = []
    for i, s in enumerate(data["steps"]):
        step = Step(s["step"], tuple(s["roles"]), s.get("report", ""), s.get("wait"), tuple(s.get("secrets", ())))
        unknown = [k for k in step.secrets if k not in STEP_SECRETS]
        if unknown:
            raise PlanError(f"plan.yaml steps[{i}].secrets: no secret named {unknown[0]!r} "
                            f"(known: {', '.join(STEP_SECRETS)})")
        if not (hooks_dir / f"{step.id}.sh").is_file():
            raise PlanError(f"plan.yaml steps[{i}]: no script hooks/{step.id}.sh")
        if step.wait and step.wait not in barriers:
            raise PlanError(f"plan.yaml steps[{i}].wait: no barrier named {step.wait!r}")
        steps.append(step)
    ids = [s.id for s in steps]
    if len(set(ids)) != len(ids):
        raise PlanError("plan.yaml: a step is listed twice")
    for b in barriers.values():
        if b.after not in ids:
            raise PlanError(f"plan.yaml barriers.{b.name}.after: no step {b.after!r}")
    return Plan(tuple(steps), barriers, dict(data.get("folded", {})))


def step_states(registry: Registry, node: Node) -> dict[str, dict]:
    """step id -> {"state", "at", "detail"} from the node's reports since its last install."""
    out: dict[str, dict] = {}
    for ev in registry.events_since_install(node.mac):
        if ev.type != "step" or not isinstance(ev.detail, dict):
            continue
        out[ev.detail.get("step")] = {"state": ev.detail.get("status"), "at": ev.at,
                                      "output": ev.detail.get("output", "")}
    return out


def node_plan(plan: Plan, registry: Registry, node: Node) -> list[dict]:
    states = step_states(registry, node)
    rows = []
    for s in plan.for_roles(node.spec.roles):
        st = states.get(s.id, {})
        rows.append({"id": s.id, "report": s.report, "wait": s.wait, "state": st.get("state", "pending"),
                     "at": st.get("at"), "output": st.get("output", "")})
    return rows


def barrier_status(plan: Plan, registry: Registry, name: str) -> dict:
    b = plan.barriers[name]
    waiting = []
    holders = [n for n in registry.list() if any(r in n.spec.roles for r in b.roles)]
    for n in holders:
        if step_states(registry, n).get(b.after, {}).get("state") not in STEP_DONE:
            waiting.append(n.hostname)
    return {"name": name, "ready": bool(holders) and not waiting, "after": b.after, "roles": list(b.roles),
            "waiting_for": waiting, "why": b.why}


def os_profile(site: Site, profile: str | None = None) -> str:
    """The OS profile the steps use (hooks/profiles/<name>.env): `profile` if given (the
    rehearsal's Debian 13 containers ask for debian-13), else the site's OS, named as the
    profiles are: CentOS Stream 9 -> centos-stream-9, Debian 13 -> debian-13."""
    # $PROVISIONER_FIRSTBOOT_PROFILE: the roles lab's service, whose nodes are Debian containers
    # whatever OS the site installs
    name = profile or os.environ.get("PROVISIONER_FIRSTBOOT_PROFILE") \
        or re.sub(r"[^a-z0-9]+", "-", f"{site.os_name} {site.os_version}".lower()).strip("-")
    known = sorted(p.stem for p in PROFILES_DIR.glob("*.env"))
    if name not in known:
        raise PlanError(f"no OS profile {name!r} for the role steps (known: {', '.join(known)})")
    return name


def config_env(site: Site, credentials: Credentials, node: Node, nodes: list[Node], plan: Plan,
               profile: str | None = None) -> str:
    """The node's configuration for its steps (the report's configrc, rendered per node), with
    the secrets its own steps name in the plan and no others: a compute host never holds a
    database password. PROFILE names the OS profile (os_profile) the steps read."""
    controllers = [n for n in nodes if "controller" in n.spec.roles]
    computes = sorted((n for n in nodes if "compute" in n.spec.roles), key=lambda n: n.hostname)
    gateways = [n for n in nodes if "gateway" in n.spec.roles]
    controller = controllers[0] if controllers else None
    public = next((nic.name for nic in node.spec.nics if nic.mode == "dhcp"), "")
    c = credentials.values
    values = {
        "PROFILE": os_profile(site, profile),
        "NODE_HOSTNAME": node.hostname,
        "NODE_IP": node.spec.ip,
        "NODE_ROLES": " ".join(node.spec.roles),
        "NODE_INTERFACE": node.spec.interface,
        "NODE_IS_CONTROLLER": "1" if "controller" in node.spec.roles else "0",
        "PUBLIC_INTERFACE": public,
        "INTERNAL_NET": str(site.network),
        "DOMAIN": site.domain,
        "CONTROLLER_HOST": controller.hostname if controller else "",
        "CONTROLLER_IP": controller.spec.ip if controller else "",
        "COMPUTE_HOSTS": " ".join(n.hostname for n in computes),
        "GATEWAY_HOST": gateways[0].hostname if gateways else "",
        "REPLICA_COUNT": str(len(computes)),
        "GLUSTER_VOLUME": "vm-instances",
        "GLUSTER_EXPORT": "/export/gluster",
        "GLUSTER_BRICK": "/export/gluster/brick",
        "INSTANCES_DIR": "/var/lib/nova/instances",
        "GLANCE_DIR": "/var/lib/glance/images",
        "CINDER_VG": "nova-volumes",
        "NTP_SERVERS": " ".join(site.ntp_servers),
        "OPENSTACK_RELEASE": site.openstack_release,
        "PROVIDER_CIDR": site.provider_network["cidr"],
        "PROVIDER_GATEWAY": site.provider_network["gateway"],
        "PROVIDER_POOL_START": site.provider_network["pool_start"],
        "PROVIDER_POOL_END": site.provider_network["pool_end"],
        "SELFSERVICE_CIDR": site.selfservice_cidr,
        "CIRROS_URL": site.test_image,
        "PROVISIONER_URL": site.service_url,
    }
    for key in plan.secrets_for(node.spec.roles):
        values[key.upper()] = c[key]
    lines = ["# Rendered by the provisioner for this node; do not edit (it is fetched again)."]
    lines += [f"{k}={shlex.quote(v)}" for k, v in values.items()]
    return "\n".join(lines) + "\n"


def _hook_files(hooks_dir: Path) -> list[Path]:
    return sorted(p for p in hooks_dir.rglob("*") if p.is_file() and "__pycache__" not in p.parts)


def hooks_version(hooks_dir: Path = HOOKS_DIR) -> tuple:
    """Changes whenever a file under hooks/ is added, removed or rewritten."""
    return tuple((p.as_posix(), st.st_mtime_ns, st.st_size) for p in _hook_files(hooks_dir) for st in [p.stat()])


def hooks_tarball(hooks_dir: Path = HOOKS_DIR) -> bytes:
    """hooks/ as a gzipped tar, the same bytes every time for the same files."""
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as gz, tarfile.open(fileobj=gz, mode="w") as tar:
        for path in _hook_files(hooks_dir):
            rel = path.relative_to(hooks_dir).as_posix()
            info = tarfile.TarInfo(rel)
            info.size = path.stat().st_size
            info.mode = 0o755 if path.suffix == ".sh" else 0o644
            info.mtime = 0
            with open(path, "rb") as f:
                tar.addfile(info, f)
    return buf.getvalue()
