"""What each node of a rehearsal is doing, from the service's API, as one row per node; and the
live table and summary drawn from those rows (rich).

The rows come from what the service knows (the node's plan with each step's state, its events,
the barriers it waits on: GET /api/v1/nodes/<mac>/plan, /events, /barriers/<name>, with the
read-only token), and from the runner unit's state in the container only for what the service
cannot know: a runner that ended without reporting a step (no configuration, no plan).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from provisioner.registry.states import STEP_DONE

TERMINAL = ("done", "failed")
STYLE = {"done": "green", "failed": "bold red", "waiting": "yellow", "running": "cyan", "pending": "dim"}


@dataclass
class Row:
    node: str
    state: str               # pending, running, waiting, done, failed
    step: str = ""           # the current step (or the one that failed)
    message: str = ""
    elapsed: float = 0.0
    steps_ok: int = 0
    steps: int = 0


@dataclass
class NodeView:
    """What one poll saw of a node."""
    plan: dict                                   # GET .../plan: {"node", "state", "steps": [...]}
    events: list = field(default_factory=list)   # GET .../events: [{"at", "type", "detail"}]
    barriers: dict = field(default_factory=dict)  # name -> GET /barriers/<name>
    unit: dict = field(default_factory=dict)     # the runner unit's ActiveState, Result, ...
    journal: list = field(default_factory=list)  # its last lines, when it ended


def limited(steps: list[dict], until: str | None) -> list[dict]:
    """The node's steps up to `until` (its own last step of the rehearsal; None: all)."""
    if until is None:
        return steps
    ids = [s["id"] for s in steps]
    return steps[:ids.index(until) + 1] if until in ids else []


_SAYS_WHY = re.compile(r"error|fail|cannot|can't|refused|denied|problem|not |timed out|broken|missing|invalid", re.I)


def last_line(text: str) -> str:
    """The output's last line that says what went wrong (curl, for one, ends with advice), else its last."""
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    why = [ln for ln in lines if _SAYS_WHY.search(ln)]
    return (why or lines or [""])[-1]


def row(hostname: str, view: NodeView, until: str | None) -> Row:
    """One node's row, without its elapsed time (the watcher keeps the clock)."""
    steps = limited(view.plan.get("steps", []), until)
    ok = sum(1 for s in steps if s["state"] in STEP_DONE)
    base = {"node": hostname, "steps_ok": ok, "steps": len(steps)}
    unit = view.unit.get("ActiveState", "")
    failed = next((s for s in steps if s["state"] == "failed"), None)
    if failed and unit == "activating":
        # run again (the fix is in): the runner is about to report the step started
        return Row(state="running", step=failed["id"], message=f"resuming at {failed['id']}", **base)
    if failed:
        return Row(state="failed", step=failed["id"],
                   message=last_line(failed.get("output", "")) or "failed, saying nothing (its output is empty)", **base)
    if steps and ok == len(steps):
        skipped = sum(1 for s in steps if s["state"] == "skipped")
        what = "deployed" if view.plan.get("state") == "deployed" else \
            f"every step up to {steps[-1]['id']} ok" + (f" ({skipped} skipped)" if skipped else "")
        return Row(state="done", step=steps[-1]["id"], message=what, **base)
    if not steps:
        return Row(state="done", message="no step of its plan is in this rehearsal", **base)
    if unit == "failed" or (unit == "inactive" and view.unit.get("Result", "success") != "success"):
        # ended without a failed step: it never got as far as a step (configuration, plan)
        return Row(state="failed", message="runner ended: " + (view.journal[-1] if view.journal else
                                                                view.unit.get("Result", "?")), **base)
    running = next((s for s in steps if s["state"] == "started"), None)
    if running:
        return Row(state="running", step=running["id"], message=f"{running['id']} started", **base)
    nxt = next(s for s in steps if s["state"] not in STEP_DONE)
    barrier = view.barriers.get(nxt.get("wait") or "")
    if barrier and not barrier.get("ready"):
        who = ", ".join(barrier.get("waiting_for", [])) or "nobody holds its roles"
        return Row(state="waiting", step=nxt["id"], message=f"barrier {barrier['name']}: waiting for {who}", **base)
    if unit in ("activating", "active") or ok:
        return Row(state="running", step=nxt["id"], message=_last_event(view) or "starting", **base)
    return Row(state="pending", step=nxt["id"], message=f"node {view.plan.get('state', '?')}", **base)


def _last_event(view: NodeView) -> str:
    for ev in reversed(view.events):
        d = ev.get("detail")
        if ev.get("type") == "step" and isinstance(d, dict):
            return f"{d.get('step')} {d.get('status')}" + (f": {last_line(d.get('output', ''))}"
                                                           if d.get("status") == "failed" else "")
    return ""


def _elapsed(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    return f"{m // 60}:{m % 60:02d}:{s:02d}" if m >= 60 else f"{m}:{s:02d}"


def table(rows: list[Row], title: str = "") -> Table:
    t = Table(title=title or None, expand=False)
    t.add_column("node", no_wrap=True)
    t.add_column("state", no_wrap=True)
    t.add_column("current step", no_wrap=True)
    t.add_column("elapsed", justify="right", no_wrap=True)
    t.add_column("last message", overflow="fold", max_width=90)
    for r in rows:
        t.add_row(r.node, Text(r.state, style=STYLE.get(r.state, "")), r.step, _elapsed(r.elapsed), r.message)
    return t


def summary(rows: list[Row]) -> Table:
    t = Table(title="rehearsal summary")
    t.add_column("node", no_wrap=True)
    t.add_column("result", no_wrap=True)
    t.add_column("steps ok", justify="right", no_wrap=True)
    t.add_column("elapsed", justify="right", no_wrap=True)
    t.add_column("where it ended, and why", overflow="fold")
    for r in rows:
        t.add_row(r.node, Text(r.state, style=STYLE.get(r.state, "")), f"{r.steps_ok}/{r.steps}",
                  _elapsed(r.elapsed), Text(f"{r.step}\n", style="bold") + Text(r.message) if r.step else r.message)
    return t


def render_text(renderable, width: int = 200) -> str:
    """What a renderable looks like as plain text (for logs and tests)."""
    console = Console(width=width, record=True, file=_Null(), color_system=None)
    console.print(renderable)
    return console.export_text()


class _Null:
    def write(self, _):
        return 0

    def flush(self):
        pass


class Watcher:
    """Polls until every node is done or failed (or `timeout`), the table live on `console`.

    poll: a function returning {hostname: NodeView}; until: {hostname: its last step or None}."""

    def __init__(self, poll, until: dict[str, str | None], console: Console | None = None,
                 interval: float = 2.0, clock=time.monotonic):
        self.poll = poll
        self.until = until
        self.console = console or Console()
        self.interval = interval
        self.clock = clock
        self.started: dict[str, float] = {}
        self.finished: dict[str, float] = {}
        self.rows: list[Row] = []

    def start_clock(self, hostname: str) -> None:
        self.started[hostname] = self.clock()
        self.finished.pop(hostname, None)

    def refresh(self) -> list[Row]:
        views = self.poll()
        now = self.clock()
        rows = []
        for host, view in views.items():
            r = row(host, view, self.until.get(host))
            if r.state in TERMINAL:
                self.finished.setdefault(host, now)
            else:
                self.finished.pop(host, None)
            start = self.started.get(host, now)
            r.elapsed = self.finished.get(host, now) - start
            rows.append(r)
        self.rows = rows
        return rows

    def done(self) -> bool:
        return bool(self.rows) and all(r.state in TERMINAL for r in self.rows)

    def run(self, timeout: float | None = None, title: str = "roles rehearsal") -> list[Row]:
        deadline = None if timeout is None else self.clock() + timeout
        with Live(table(self.refresh(), title), console=self.console, refresh_per_second=2,
                  transient=False) as live:
            while not self.done():
                if deadline is not None and self.clock() > deadline:
                    break
                time.sleep(self.interval)
                live.update(table(self.refresh(), title))
        return self.rows
