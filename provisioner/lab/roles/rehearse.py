"""The roles rehearsal: the substrate's containers, the real service beside them, every node
installed by its own kickstart's first-boot hand-over, and the real first-boot runner started in
each, ordered by the service's barriers and watched through the service's API.

    r = Rehearsal(sub, site, nodes, until="03-glusterfs-controller/01-glusterfs-probe",
                  barrier_timeout=60)
    r.up()            # containers, the service, every node installed (its credential in node.env)
    r.start()         # the runner in every container
    rows = r.watch()  # until each node is done or failed
    r.down()

`until` limits the plan (each node stops after its last step at or before it in plan.yaml's
order); barrier_timeout and barrier_poll replace the runner's long defaults. Both reach the
runner through a drop-in for its unit, so the unit and runner are the ones %post installs.
"""

from __future__ import annotations

import requests

from provisioner.lab.roles import installer, watch
from provisioner.lab.roles.netns import NamespaceThread
from provisioner.lab.roles.service import LabService
from provisioner.plan import PlanError, load_plan
from provisioner.registry.states import STEP_DONE


class RehearsalError(RuntimeError):
    pass


def node_limits(nodes, until: str | None) -> dict[str, str | None]:
    """Each node's own last step at or before `until` in plan.yaml's order ('' where none is)."""
    plan = load_plan()
    if until is None:
        return {n.hostname: None for n in nodes}
    order = [s.id for s in plan.steps]
    if until not in order:
        raise PlanError(f"--until: no step {until!r} in plan.yaml")
    cut = order.index(until)
    out = {}
    for n in nodes:
        mine = [s.id for s in plan.for_roles(n.spec.roles) if order.index(s.id) <= cut]
        out[n.hostname] = mine[-1] if mine else ""
    return out


class Rehearsal:
    def __init__(self, sub, site, nodes, *, until: str | None = None, barrier_timeout: float | None = None,
                 barrier_poll: float | None = None, progress=lambda line: None):
        self.sub = sub
        self.site = site
        self.nodes = sorted(nodes, key=lambda n: [int(x) for x in n.spec.ip.split(".")])
        self.until = until
        self.limits = node_limits(self.nodes, until)
        self.settings = {}
        if barrier_timeout is not None:
            self.settings["BARRIER_TIMEOUT"] = str(int(barrier_timeout))
        if barrier_poll is not None:
            self.settings["BARRIER_POLL"] = f"{barrier_poll:g}"
        self.progress = progress
        self.service = LabService(sub, site, self.nodes)
        self._ns: NamespaceThread | None = None
        self._http: requests.Session | None = None
        self.watcher = watch.Watcher(self.poll, self.limits)

    # -- bringing it up ------------------------------------------------------------------------

    def up(self, boot_timeout: float = 300.0) -> None:
        self.sub.up(boot_timeout=boot_timeout)
        try:
            self.service.prepare()
            self.service.start()
            self.progress(f"service: {self.service.api_url} (boot {self.site.boot_url}) in the lab's namespace; "
                          f"state {self.service.state_dir}")
            for n in self.nodes:
                self.install(n.hostname)
        except BaseException:
            if self.service.log.exists():
                self.progress(f"the service's last words ({self.service.log}):")
                for line in self.service.log.read_text(errors="replace").splitlines()[-15:]:
                    self.progress(f"  {line}")
            self.progress("up failed: taking down what it made")
            self.down()
            raise

    def install(self, hostname: str) -> None:
        node = self._node(hostname)
        installer.install(self.sub, hostname, node.spec.mac, self.site.boot_url)
        self.progress(f"{hostname}: installed by its kickstart's hand-over (node.env, hooks, "
                      f"{installer.UNIT} enabled)")

    def start(self, hostnames=None) -> None:
        """Start the runner on these nodes (all by default); again on a node, it resumes."""
        for host in hostnames or [n.hostname for n in self.nodes]:
            limit = self.limits[host]
            if limit == "":
                self.progress(f"{host}: no step of its plan comes before {self.until}; not started")
                continue
            settings = dict(self.settings)
            if limit:
                settings["PROVISIONER_UNTIL"] = limit
            installer.start_runner(self.sub, host, settings)
            self.watcher.start_clock(host)

    # -- watching ------------------------------------------------------------------------------

    def api(self, path: str) -> object:
        """GET an API path with the read-only token, from inside the lab's namespace."""
        if self._ns is None:
            self._ns = NamespaceThread(self.sub.lab_namespace)
            self._http = requests.Session()
            # nothing from the environment: no proxy between this and the lab's namespace, and
            # $REQUESTS_CA_BUNDLE would replace the service's CA below
            self._http.trust_env = False
            self._http.headers["Authorization"] = f"Bearer {self.service.read_token()}"
            ca = self.service.ca_file()
            if ca:
                self._http.verify = str(ca)

        def get():
            r = self._http.get(f"{self.service.api_url}{path}", timeout=30)
            r.raise_for_status()
            return r.json()
        return self._ns.call(get)

    def events(self, hostname: str) -> list[dict]:
        return self.api(f"/api/v1/nodes/{self._node(hostname).spec.mac}/events")["events"]

    def view(self, hostname: str) -> watch.NodeView:
        mac = self._node(hostname).spec.mac
        plan = self.api(f"/api/v1/nodes/{mac}/plan")
        view = watch.NodeView(plan=plan, events=self.events(hostname))
        for step in watch.limited(plan["steps"], self.limits[hostname]):
            if step["state"] not in STEP_DONE and step.get("wait"):
                view.barriers[step["wait"]] = self.api(f"/api/v1/barriers/{step['wait']}")
                break
        view.unit = installer.unit_state(self.sub, hostname)
        if view.unit.get("ActiveState") in ("failed", "inactive") and \
                not any(s["state"] == "failed" for s in plan["steps"]):
            # ended without a step to show for it: only its journal says why
            view.journal = installer.journal_tail(self.sub, hostname)
        return view

    def poll(self) -> dict[str, watch.NodeView]:
        return {n.hostname: self.view(n.hostname) for n in self.nodes}

    def watch(self, timeout: float | None = None, console=None, interval: float = 2.0) -> list[watch.Row]:
        if console is not None:
            self.watcher.console = console
        self.watcher.interval = interval
        return self.watcher.run(timeout)

    # -- taking it down ------------------------------------------------------------------------

    def close(self) -> None:
        if self._ns:
            self._ns.close()
            self._ns = None
        if self._http:
            self._http.close()
            self._http = None

    def down(self) -> list[str]:
        self.close()
        return self.sub.down()

    def _node(self, hostname: str):
        for n in self.nodes:
            if n.hostname == hostname:
                return n
        raise RehearsalError(f"no node {hostname!r} in this rehearsal")
