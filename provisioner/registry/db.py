"""The node registry: embedded SQLite in the state directory.

Every write runs in one IMMEDIATE transaction, so a rejected request leaves the database exactly
as it was. Uniqueness of MACs, names and IPs is enforced by the schema (the `macs` and `names`
tables index every NIC and every host name and alias); the checks in Python only exist to say
*which* field clashes. Events are append-only (triggers refuse UPDATE and DELETE) and keyed by
MAC, so a node's history outlives its record.
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import json
import logging
import os
import secrets
import sqlite3
import threading
from collections import deque
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator

from provisioner.config import Nic, NodeSpec, Site
from provisioner.power.bmc import Bmc, Sealer
from provisioner.registry.states import CALLBACKS, DISCOVERED, STEP_DONE

log = logging.getLogger(__name__)

DB_FILE = "registry.sqlite3"
STATES = (DISCOVERED, "registered", "installing", "installed", "failed", "configuring", "deployed")
SOURCES = ("site", "api")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS nodes (
    id            INTEGER PRIMARY KEY,
    mac           TEXT NOT NULL UNIQUE,
    hostname      TEXT NOT NULL UNIQUE,
    ip            TEXT NOT NULL UNIQUE,
    interface     TEXT NOT NULL,
    aliases       TEXT NOT NULL,
    roles         TEXT NOT NULL,
    nics          TEXT NOT NULL,
    disk_bytes    INTEGER,
    state         TEXT NOT NULL,
    netboot       INTEGER NOT NULL,
    install_token TEXT NOT NULL,
    source        TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS macs (
    mac     TEXT PRIMARY KEY,
    node_id INTEGER NOT NULL REFERENCES nodes(id) ON DELETE CASCADE
);
CREATE TABLE IF NOT EXISTS names (
    name    TEXT PRIMARY KEY,
    node_id INTEGER NOT NULL REFERENCES nodes(id) ON DELETE CASCADE
);
CREATE TABLE IF NOT EXISTS events (
    id     INTEGER PRIMARY KEY,
    mac    TEXT NOT NULL,
    at     TEXT NOT NULL,
    type   TEXT NOT NULL,
    detail TEXT
);
-- machines the inspection ramdisk reported that are not registered (yet): the inventory as
-- reported, keyed by the MAC they booted from; every NIC MAC of theirs is indexed, so one machine
-- that boots from another NIC replaces its own record instead of appearing twice
CREATE TABLE IF NOT EXISTS discovered (
    mac        TEXT PRIMARY KEY,
    inventory  TEXT NOT NULL,
    reports    INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS discovered_macs (
    mac   TEXT PRIMARY KEY,
    owner TEXT NOT NULL REFERENCES discovered(mac) ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS discovered_macs_by_owner ON discovered_macs(owner);
CREATE INDEX IF NOT EXISTS events_by_mac ON events(mac, id);
CREATE INDEX IF NOT EXISTS macs_by_node ON macs(node_id);
CREATE INDEX IF NOT EXISTS names_by_node ON names(node_id);
-- bumped whenever a name or address in /etc/hosts would change, so every process can tell
-- whether the hosts file it built is still right without building it again
CREATE TABLE IF NOT EXISTS counters (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
INSERT OR IGNORE INTO counters (name, value) VALUES ('names', 0);
CREATE TRIGGER IF NOT EXISTS names_on_insert AFTER INSERT ON nodes
    BEGIN UPDATE counters SET value = value + 1 WHERE name = 'names'; END;
CREATE TRIGGER IF NOT EXISTS names_on_delete AFTER DELETE ON nodes
    BEGIN UPDATE counters SET value = value + 1 WHERE name = 'names'; END;
CREATE TRIGGER IF NOT EXISTS names_on_update AFTER UPDATE OF hostname, ip, aliases ON nodes
    BEGIN UPDATE counters SET value = value + 1 WHERE name = 'names'; END;
CREATE TRIGGER IF NOT EXISTS events_no_update BEFORE UPDATE ON events
    BEGIN SELECT RAISE(ABORT, 'the event log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS events_no_delete BEFORE DELETE ON events
    BEGIN SELECT RAISE(ABORT, 'the event log is append-only'); END;
"""

# Columns of `nodes` that registries made by older versions lack: `_migrate` adds each one that
# is missing, so append new columns here (ADD COLUMN wants a constant default if NOT NULL).
_NODE_COLUMNS: tuple[tuple[str, str], ...] = (
    # the row's revision, for ETag / If-Match: every UPDATE of a node's row moves it on
    ("version", "INTEGER NOT NULL DEFAULT 1"),
    # sha256 of the node's first-boot credential, from `installed` until `deployed` or a rebuild
    ("firstboot_hash", "TEXT"),
    # bios | uefi, or NULL until set or learned from the boot loader that asked (pxe.py)
    ("firmware", "TEXT"),
    # {"url", "username", "password"}, JSON; the password sealed with the state directory's
    # bmc.key (provisioner/power/bmc.py says why there)
    ("bmc", "TEXT"),
    # what the inspection ramdisk reported of an enrolled machine (JSON), NULL for the rest
    ("inventory", "TEXT"),
)

# Statements that name the columns above, so they run after `_migrate` has added them.
# The trigger bumps `version` on every UPDATE, whichever code path wrote the row, so no writer
# can forget; an UPDATE that sets `version` itself is left alone (WHEN), and the trigger's own
# UPDATE does not fire it again (recursive triggers are off, and its WHEN would stop it anyway).
# It touches only `version`, so the `names_on_update` trigger (OF hostname, ip, aliases) stays quiet.
_AFTER_COLUMNS = (
    "CREATE TRIGGER IF NOT EXISTS nodes_version AFTER UPDATE ON nodes"
    " WHEN NEW.version = OLD.version"
    " BEGIN UPDATE nodes SET version = OLD.version + 1 WHERE id = NEW.id; END",
    # barriers are read with any node's first-boot credential, found by its hash
    "CREATE INDEX IF NOT EXISTS nodes_by_firstboot ON nodes(firstboot_hash)",
)


def _migrate(db: sqlite3.Connection) -> None:
    """Bring an existing registry's schema up to this version's. Run inside a write
    transaction, so two processes opening an old registry at once do not both add a column."""
    have = {r[1] for r in db.execute("PRAGMA table_info(nodes)")}
    for name, decl in _NODE_COLUMNS:
        if name not in have:
            db.execute(f"ALTER TABLE nodes ADD COLUMN {name} {decl}")
    for sql in _AFTER_COLUMNS:
        db.execute(sql)


class RegistryError(Exception):
    status = 400
    error = "invalid"

    def __init__(self, detail: str, field: str | None = None):
        super().__init__(detail)
        self.detail = detail
        self.field = field


class NotFound(RegistryError):
    status = 404
    error = "not found"


class Conflict(RegistryError):
    status = 409
    error = "conflict"


class Forbidden(RegistryError):
    status = 403
    error = "forbidden"


class Full(RegistryError):
    """507: the registry holds as many discovered machines as the site allows."""
    status = 507
    error = "full"


@dataclass(frozen=True)
class Event:
    id: int
    mac: str
    at: str
    type: str
    detail: object

    def as_dict(self) -> dict:
        return {"id": self.id, "at": self.at, "type": self.type, "detail": self.detail}


@dataclass(frozen=True)
class Node:
    id: int
    spec: NodeSpec
    state: str
    netboot: bool
    install_token: str = field(repr=False)
    firstboot_hash: str | None = field(repr=False)
    source: str
    created_at: str
    updated_at: str
    last_event: Event | None = None
    version: int = 1
    inventory: dict | None = None

    @property
    def mac(self) -> str:
        return self.spec.mac

    @property
    def hostname(self) -> str:
        return self.spec.hostname

    def public(self) -> dict:
        """What the API and listings show: everything but the install token."""
        s = self.spec
        return {
            "mac": s.mac, "hostname": s.hostname, "aliases": list(s.aliases), "ip": s.ip,
            "interface": s.interface, "roles": list(s.roles),
            "nics": [asdict(n) for n in s.nics], "disk_bytes": s.disk_bytes, "firmware": s.firmware,
            "bmc": s.bmc.public() if s.bmc else None,
            "state": self.state, "netboot": self.netboot, "source": self.source,
            "created_at": self.created_at, "updated_at": self.updated_at,
            "last_event": self.last_event.as_dict() if self.last_event else None,
            "inventory": self.inventory,
        }


@dataclass(frozen=True)
class Discovered:
    """A machine the inspection ramdisk reported, not registered: its MAC and inventory."""
    mac: str
    inventory: dict
    reports: int
    created_at: str
    updated_at: str
    last_event: Event | None = None

    state = DISCOVERED
    netboot = False
    hostname = None

    def boot_nic(self) -> dict | None:
        return next((n for n in self.inventory.get("nics", []) if n.get("mac") == self.mac), None)

    def public(self) -> dict:
        """The same keys as a registered node's (what it lacks is null or empty), and its inventory."""
        nic = self.boot_nic()
        return {
            "mac": self.mac, "hostname": None, "aliases": [], "ip": None,
            "interface": nic["name"] if nic else None, "roles": [], "nics": [], "disk_bytes": None,
            "firmware": self.inventory.get("firmware"), "bmc": None,
            "state": DISCOVERED, "netboot": False, "source": "discovery",
            "created_at": self.created_at, "updated_at": self.updated_at,
            "last_event": self.last_event.as_dict() if self.last_event else None,
            "inventory": self.inventory,
        }


@dataclass(frozen=True)
class InstallView:
    """A node as a kickstart fetch sees it, read in one query: whether it is armed, and `key`,
    every column its kickstart is rendered from (the description and the install token)."""
    row: sqlite3.Row = field(repr=False)
    unseal: Callable[[str], str | None] | None = field(default=None, repr=False, compare=False)

    @property
    def mac(self) -> str:
        return self.row["mac"]

    @property
    def hostname(self) -> str:
        return self.row["hostname"]

    @property
    def state(self) -> str:
        return self.row["state"]

    @property
    def netboot(self) -> bool:
        return bool(self.row["netboot"])

    @property
    def key(self) -> tuple:
        return tuple(self.row[c] for c in _KICKSTART_COLUMNS)

    def node(self) -> Node:
        return _row_to_node(self.row, None, self.unseal)


_KICKSTART_COLUMNS = ("mac", "hostname", "ip", "interface", "aliases", "roles", "nics", "disk_bytes", "firmware",
                      "install_token")


def now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Registry:
    def __init__(self, path: Path):
        self.path = Path(path)
        self._local = threading.local()
        self._write_lock = threading.Lock()
        self._fetched: deque[tuple[int, str, str]] = deque()    # kickstart fetches not yet written
        self._checkpointer: threading.Thread | None = None
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._lock_fd = os.open(self.path.with_name(self.path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        self._sealer = Sealer(self.path.parent)
        if not self.path.exists():
            # the install tokens live here: owner-only from the first byte
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600))
        os.chmod(self.path, 0o600)      # at every start: an older version's file or a restore may be readable
        for extra in ("-wal", "-shm"):     # they hold the same rows as the database, install tokens too
            try:
                os.chmod(self.path.with_name(self.path.name + extra), 0o600)
            except FileNotFoundError:
                pass
        self._conn().executescript(_SCHEMA)
        with self._tx() as db:
            _migrate(db)

    @classmethod
    def in_state_dir(cls, state_dir: Path) -> "Registry":
        return cls(Path(state_dir) / DB_FILE)

    # -- connections and transactions ---------------------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, isolation_level=None, timeout=30)
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA foreign_keys=ON")
            if self._checkpointer is not None:
                db.execute("PRAGMA wal_autocheckpoint=0")
            self._local.db = db
        return db

    def checkpoint_in_background(self, stop: threading.Event, every: float = 1.0) -> threading.Thread:
        """Move this process's WAL checkpoints to a thread of their own. A checkpoint copies
        pages back and fsyncs; left to SQLite, it runs inside whichever commit crosses the
        threshold, and in a boot storm that is a kickstart fetch or a callback waiting on it.
        Call before the threads that write open their connections."""
        def run():
            while not stop.wait(every):
                try:
                    self._conn().execute("PRAGMA wal_checkpoint(PASSIVE)")
                except sqlite3.Error as e:
                    log.warning("WAL checkpoint: %s", e)
            self.close()
        self._checkpointer = threading.Thread(target=run, name="wal-checkpoint", daemon=True)
        self._checkpointer.start()
        return self._checkpointer

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None

    def __del__(self):
        try:
            os.close(self._lock_fd)
        except (AttributeError, OSError):
            pass

    @contextmanager
    def _tx(self, durable: bool = False) -> Iterator[sqlite3.Connection]:
        """One IMMEDIATE transaction. durable: the commit is on disk (the WAL fsynced) before
        this returns, for changes that arm or disarm netboot: with synchronous=NORMAL a power
        cut may undo the last commits, and an undone `installed` reinstalls a machine."""
        db = self._conn()
        # Writers take turns on a thread lock and an flock(2) on a lock file (for the other
        # worker processes), which wake the next writer at once, rather than in SQLite's busy
        # handler, which sleeps in steps of up to 100 ms: those sleeps were a boot storm's
        # kickstart latency.
        with self._write_lock:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
            if durable:
                db.execute("PRAGMA synchronous=FULL")
            try:
                db.execute("BEGIN IMMEDIATE")
                written: list[tuple[int, str, str]] = []
                try:
                    self._write_fetched(db, written)
                    yield db
                except BaseException:
                    db.execute("ROLLBACK")
                    self._fetched.extendleft(reversed(written))     # for the next transaction
                    raise
                else:
                    db.execute("COMMIT")
            finally:
                if durable:
                    db.execute("PRAGMA synchronous=NORMAL")
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    # -- reads ------------------------------------------------------------------------------

    def get(self, mac: str) -> Node:
        """The node that owns this MAC (its install NIC or any other NIC)."""
        return self._node(_node_row(self._conn(), mac))

    def find(self, mac: str) -> Node | None:
        try:
            return self.get(mac)
        except NotFound:
            return None

    def list(self, role: str | None = None, state: str | None = None) -> list[Node]:
        sql, args = "SELECT * FROM nodes", []
        if state is not None:
            sql += " WHERE state = ?"
            args.append(state)
        rows = self._conn().execute(sql + " ORDER BY hostname", args).fetchall()
        nodes = self._nodes(rows)
        if role is not None:
            nodes = [n for n in nodes if role in n.spec.roles]
        return nodes

    def count(self) -> int:
        return self._conn().execute("SELECT count(*) FROM nodes").fetchone()[0]

    def events(self, mac: str, limit: int = 100) -> list[Event]:
        node = self.find(mac) or self.get_discovered(mac)
        rows = self._conn().execute(
            "SELECT * FROM events WHERE mac = ? ORDER BY id DESC LIMIT ?", (node.mac, limit)).fetchall()
        return [self._event(r) for r in reversed(rows)]

    # -- discovered machines -----------------------------------------------------------------

    def get_discovered(self, mac: str) -> Discovered:
        """The discovered machine that has this MAC (the one it booted from or another NIC's)."""
        row = _discovered_row(self._conn(), mac)
        if row is None:
            raise NotFound(f"no node has MAC {mac} (registered or discovered)")
        return self._discovered(row)

    def find_discovered(self, mac: str) -> Discovered | None:
        row = _discovered_row(self._conn(), mac)
        return None if row is None else self._discovered(row)

    def discovered(self) -> list[Discovered]:
        rows = self._conn().execute("SELECT * FROM discovered ORDER BY created_at, mac").fetchall()
        return [self._discovered(r) for r in rows]

    def count_discovered(self) -> int:
        return self._conn().execute("SELECT count(*) FROM discovered").fetchone()[0]

    def discover(self, mac: str, inventory: dict, cap: int) -> tuple[Discovered, bool]:
        """Record what the inspection ramdisk reported of a machine booted from `mac`; True when
        it is new. A machine already held (by any of its MACs) has its inventory replaced and no
        event written, so a client that repeats itself cannot flood the event log. Refused:
        a MAC of a registered node (Conflict), a new machine beyond `cap` (Full)."""
        macs = [mac] + [n["mac"] for n in inventory.get("nics", []) if n["mac"] != mac]
        text = json.dumps(inventory)
        with self._tx() as db:
            for m in macs:
                row = _find_row(db, m)
                if row is not None:
                    raise Conflict(f"MAC {m} belongs to registered node {row['hostname']}; "
                                   "a registered machine is not rediscovered", "mac")
            marks = ",".join("?" * len(macs))
            owners = [r["owner"] for r in db.execute(
                f"SELECT DISTINCT owner FROM discovered_macs WHERE mac IN ({marks})", macs)]
            if not owners and db.execute("SELECT count(*) FROM discovered").fetchone()[0] >= cap:
                raise Full(f"the registry holds {cap} discovered machines already (discovery.max_nodes): "
                           "enroll or remove some first", "mac")
            at = now()
            old = db.execute("SELECT * FROM discovered WHERE mac = ?", (mac,)).fetchone()
            created_at = old["created_at"] if old else (
                min((r["created_at"] for r in db.execute(
                    f"SELECT created_at FROM discovered WHERE mac IN ({','.join('?' * len(owners))})", owners)),
                    default=at))
            reports = (old["reports"] if old else 0) + 1
            # the machine's records under other MACs (it booted from another NIC before) go
            db.executemany("DELETE FROM discovered WHERE mac = ? AND mac != ?", [(o, mac) for o in owners])
            db.execute("INSERT INTO discovered (mac, inventory, reports, created_at, updated_at) VALUES (?, ?, ?, ?, ?)"
                       " ON CONFLICT(mac) DO UPDATE SET inventory = excluded.inventory, reports = excluded.reports,"
                       " updated_at = excluded.updated_at", (mac, text, reports, created_at, at))
            db.execute("DELETE FROM discovered_macs WHERE owner = ?", (mac,))
            db.executemany("INSERT INTO discovered_macs (mac, owner) VALUES (?, ?)", [(m, mac) for m in macs])
            new = not owners
            if new:
                self._event_in(db, mac, DISCOVERED, _summary(inventory))
        if new:
            log.info("discovered %s: %s", mac, _summary(inventory))
        return self.get_discovered(mac), new

    def forget_discovered(self, mac: str) -> Discovered:
        with self._tx() as db:
            row = _discovered_row(db, mac)
            if row is None:
                raise NotFound(f"no discovered machine has MAC {mac}")
            found = self._discovered(row)
            db.execute("DELETE FROM discovered WHERE mac = ?", (row["mac"],))
            self._event_in(db, row["mac"], "removed", {"state": DISCOVERED})
        log.info("removed discovered machine %s", found.mac)
        return found

    def enroll(self, mac: str, build: Callable[[Discovered], NodeSpec], source: str = "api",
               detail: dict | None = None) -> Node:
        """A discovered machine becomes a registered node, armed for install, in one transaction:
        `build` makes its description from the record as it is inside it (and may raise, which
        changes nothing)."""
        with self._tx(durable=True) as db:
            row = _find_row(db, mac)
            if row is not None:
                raise Conflict(f"{mac} is registered already ({row['hostname']}, {row['state']}); "
                               "only a discovered machine is enrolled", "mac")
            drow = _discovered_row(db, mac)
            if drow is None:
                raise NotFound(f"no discovered machine has MAC {mac}: it must PXE-boot the inspection "
                               "ramdisk first (discovery on), or register it with its description")
            found = self._discovered(drow)
            spec = build(found)
            self._check_free(db, spec, node_id=None)
            db.execute("DELETE FROM discovered WHERE mac = ?", (found.mac,))
            self._insert(db, spec, source, found.inventory, event=("enrolled", {
                "hostname": spec.hostname, "ip": spec.ip, "roles": list(spec.roles), **(detail or {})}))
        log.info("enrolled %s as %s (%s, %s), armed for install", found.mac, spec.hostname, spec.ip,
                 ", ".join(spec.roles))
        return self.get(spec.mac)

    def _discovered(self, row: sqlite3.Row) -> Discovered:
        ev = self._conn().execute("SELECT * FROM events WHERE mac = ? ORDER BY id DESC LIMIT 1",
                                  (row["mac"],)).fetchone()
        return Discovered(row["mac"], json.loads(row["inventory"]), row["reports"], row["created_at"],
                          row["updated_at"], self._event(ev) if ev else None)

    # -- writes -----------------------------------------------------------------------------

    def add(self, spec: NodeSpec, source: str = "api") -> Node:
        with self._tx(durable=True) as db:
            self._check_free(db, spec, node_id=None)
            self._insert(db, spec, source)
        log.info("registered %s (%s, %s) from %s", spec.hostname, spec.mac, spec.ip, source)
        return self.get(spec.mac)

    def update(self, mac: str, spec: NodeSpec | Callable[[Node], NodeSpec], *,
               allow_site: bool = False) -> Node:
        """Replace a node's description. `spec` may be a function of the node as it is now,
        called inside the write transaction: a change merged into a node read before it would
        silently undo whatever was written in between. What it raises aborts the update."""
        with self._tx() as db:
            node = self._get_in(db, mac)
            if node.source == "site" and not allow_site:
                raise Conflict(f"{node.hostname} is declared in the site file; change it there", "source")
            if callable(spec):
                spec = spec(node)
            self._check_free(db, spec, node_id=node.id)
            changed = _diff(node.spec, spec)
            if not changed:
                return node
            self._rewrite(db, node.id, spec, node.source)
            self._event_in(db, spec.mac, "updated", {"changed": changed})
        log.info("updated %s (%s): %s", spec.hostname, spec.mac, ", ".join(changed))
        return self.get(spec.mac)

    def remove(self, mac: str, *, allow_site: bool = False) -> Node:
        with self._tx(durable=True) as db:
            node = self._get_in(db, mac)
            if node.source == "site" and not allow_site:
                raise Conflict(f"{node.hostname} is declared in the site file; remove it there", "source")
            db.execute("DELETE FROM nodes WHERE id = ?", (node.id,))
            self._event_in(db, node.mac, "removed", {"hostname": node.hostname})
        log.info("removed %s (%s)", node.hostname, node.mac)
        return node

    def add_event(self, mac: str, type_: str, detail: object = None) -> Event:
        with self._tx() as db:
            node = self._get_in(db, mac)
            return self._event_in(db, node.mac, type_, detail)

    def learn_firmware(self, mac: str, firmware: str, how: str) -> Node | None:
        """Record the firmware a node's boot loader revealed. Set only where none is recorded,
        so what an operator set stays; a loader that contradicts it is logged as an event (the
        kickstart's %pre refuses the mismatch). Returns the node when anything was written."""
        with self._tx() as db:
            row = _find_row(db, mac)
            if row is None or row["firmware"] == firmware:
                return None
            if row["firmware"] is None:
                db.execute("UPDATE nodes SET firmware=?, updated_at=? WHERE id=?", (firmware, now(), row["id"]))
                self._event_in(db, row["mac"], "firmware", {"firmware": firmware, "learned_from": how})
            else:
                seen = db.execute("SELECT detail FROM events WHERE mac = ? AND type = 'firmware-mismatch'"
                                  " ORDER BY id DESC LIMIT 1", (row["mac"],)).fetchone()
                detail = {"registered": row["firmware"], "seen": firmware, "learned_from": how}
                if seen is not None and json.loads(seen["detail"]) == detail:
                    return None     # once per contradiction, not once per boot attempt
                self._event_in(db, row["mac"], "firmware-mismatch", detail)
        log.info("firmware of %s: %s (%s)", mac, firmware, how)
        return self.get(mac)

    def names_version(self) -> int:
        """Changes whenever `host_entries` would."""
        return self._conn().execute("SELECT value FROM counters WHERE name = 'names'").fetchone()[0]

    def host_entries(self) -> list[tuple[str, str, tuple[str, ...]]]:
        """(ip, hostname, aliases) of every node: what /etc/hosts needs, without building whole
        nodes (every installing machine asks for it)."""
        return [(r["ip"], r["hostname"], tuple(json.loads(r["aliases"])))
                for r in self._conn().execute("SELECT ip, hostname, aliases FROM nodes")]

    def install_view(self, mac: str) -> InstallView | None:
        """The node that owns this MAC, as a kickstart fetch needs it: one query, nothing decoded."""
        row = _find_row(self._conn(), mac)
        return None if row is None else InstallView(row)

    def armed_views(self) -> list[InstallView]:
        return [InstallView(r, self._sealer.unseal) for r in self._conn().execute("SELECT * FROM nodes WHERE netboot = 1")]

    def kickstart_fetched(self, view: InstallView) -> None:
        """An armed node's installer fetched its kickstart: it is installing now.

        Written with this process's next transaction, or by `flush`: the boot server flushes after
        every round of requests, so a storm of fetches costs a commit per round, not one each.
        Losing one in a crash loses only the early `installing` state; the installer's own
        `installing` report sets it again."""
        if not view.netboot:
            raise Conflict(f"{view.hostname} is {view.state} and not armed for install; "
                           "rebuild it to reinstall", "state")
        if view.state != "installing":     # once per install cycle: fetching again writes nothing
            self._fetched.append((view.row["id"], view.mac, now()))

    def flush(self) -> None:
        """Write the kickstart fetches noted so far."""
        if self._fetched:
            with self._tx():
                pass

    def _write_fetched(self, db: sqlite3.Connection, written: list[tuple[int, str, str]]) -> None:
        while self._fetched:
            node_id, mac, at = item = self._fetched.popleft()
            written.append(item)        # given back if the transaction fails
            # the fetch-time rule against the state now: an `installed` written meanwhile wins,
            # and fetches noted twice before either was written make one event
            cur = db.execute("UPDATE nodes SET state='installing', updated_at=? WHERE id=? AND netboot=1"
                             " AND state != 'installing'", (at, node_id))
            if cur.rowcount:
                db.execute("INSERT INTO events (mac, at, type, detail) VALUES (?, ?, 'kickstart', ?)",
                           (mac, at, json.dumps({"state": "installing"})))

    def callback(self, mac: str, token: str | None, type_: str, detail: object) -> tuple[Node, str | None]:
        """A kickstart callback, authenticated by the node's install token. Returns the node as
        written and, for `installed`, the first-boot credential: handed out here once, never
        again. `installed` ends the install token, so a second `installed` (a retry whose answer
        was lost, or someone on the install network who read the kickstart and got there first)
        is refused: the real machine's install then fails loudly instead of its secrets going
        to whoever won (Ironic's agent token, "first lookup wins", is the model)."""
        sources, target, disarm = CALLBACKS[type_]
        with self._tx(durable=disarm) as db:
            row = _node_row(db, mac)
            node = _row_to_node(row, None, self._sealer.unseal)
            _check_install_token(node, token)
            if node.state not in sources:
                raise Conflict(f"{node.hostname} is {node.state}; a '{type_}' report cannot follow that",
                               "type")
            if node.state == target and type_ in ("installing", "failed"):
                return node, None       # said already: a repeat writes nothing (no event flood)
            netboot, at = (False if disarm else node.netboot), now()
            firstboot = secrets.token_urlsafe(32) if type_ == "installed" else None
            if firstboot:
                db.execute("UPDATE nodes SET state=?, netboot=?, install_token='', firstboot_hash=?,"
                           " updated_at=? WHERE id=?", (target, int(netboot), token_hash(firstboot), at, node.id))
            else:
                db.execute("UPDATE nodes SET state=?, netboot=?, updated_at=? WHERE id=?",
                           (target, int(netboot), at, node.id))
            event = self._event_in(db, node.mac, type_, detail)
        log.info("%s (%s) reported %s: now %s%s", node.hostname, node.mac, type_, target,
                 ", netboot disarmed, install token ended, first-boot credential handed out" if disarm else "")
        # the node as written, without reading it back: every installer sends two of these
        return replace(node, state=target, netboot=netboot, updated_at=at, last_event=event,
                       install_token="" if firstboot else node.install_token,
                       firstboot_hash=token_hash(firstboot) if firstboot else node.firstboot_hash), firstboot

    def is_firstboot_credential(self, token: str | None) -> bool:
        """Whether this is some node's live first-boot credential (runners poll barriers with it:
        one indexed lookup, no node built)."""
        if not token:
            return False
        return self._conn().execute("SELECT 1 FROM nodes WHERE firstboot_hash = ? LIMIT 1",
                                    (token_hash(token),)).fetchone() is not None

    def events_since_install(self, mac: str) -> list[Event]:
        """The node's events after its last `installed` report (first-boot step reports)."""
        node = self.get(mac)
        rows = self._conn().execute(_SINCE_INSTALL, (node.mac, node.mac)).fetchall()
        return [self._event(r) for r in rows]

    def step_report(self, mac: str, token: str | None, detail: dict, plan_ids: list[str]) -> Node:
        """A first-boot step's report, authenticated by the node's first-boot credential:
        installed -> configuring; deployed once every step is ok or skipped, and the credential ends there."""
        with self._tx() as db:
            node = self._get_in(db, mac)
            check_firstboot_token(node, token)
            if node.state not in ("installed", "configuring", "deployed"):
                raise Conflict(f"{node.hostname} is {node.state}; step reports come after the install",
                               "type")
            self._event_in(db, node.mac, "step", detail)
            state = "configuring"
            if detail["status"] in STEP_DONE:
                done = {}
                for row in db.execute(_SINCE_INSTALL, (node.mac, node.mac)):
                    if row["type"] == "step":
                        d = json.loads(row["detail"])
                        done[d.get("step")] = d.get("status")
                if all(done.get(i) in STEP_DONE for i in plan_ids):
                    state = "deployed"
            if state == "deployed":
                db.execute("UPDATE nodes SET state=?, firstboot_hash=NULL, updated_at=? WHERE id=?",
                           (state, now(), node.id))
            elif state != node.state:
                db.execute("UPDATE nodes SET state=?, updated_at=? WHERE id=?", (state, now(), node.id))
        if state == "deployed" and node.state != "deployed":
            log.info("%s (%s): every first-boot step ok, deployed", node.hostname, node.mac)
        return self.get(mac)

    def rebuild(self, mac: str) -> Node:
        """Arm a node for reinstall with a new install token; the old install token and the
        first-boot credential stop working."""
        with self._tx(durable=True) as db:
            node = self._get_in(db, mac)
            db.execute("UPDATE nodes SET state='registered', netboot=1, install_token=?, firstboot_hash=NULL,"
                       " updated_at=? WHERE id=?",
                       (secrets.token_urlsafe(24), now(), node.id))
            self._event_in(db, node.mac, "rebuild", {"previous_state": node.state})
        log.info("rebuild %s (%s): armed for install, new install token", node.hostname, node.mac)
        return self.get(mac)

    def sync_site(self, site: Site) -> list[str]:
        """Make the registry hold site.yaml's nodes as declared; state, tokens and events are kept.

        Nodes registered through the API are left alone. A node that left site.yaml is kept
        (a machine record is never dropped silently) and becomes API-managed.
        Returns what changed, one line each.
        """
        report: list[str] = []
        declared = {n.mac for n in site.nodes}
        with self._tx() as db:
            for spec in site.nodes:
                row = _find_row(db, spec.mac)
                if row is None:
                    self._check_free(db, spec, node_id=None, context="site file")
                    self._insert(db, spec, "site")
                    report.append(f"added {spec.hostname} ({spec.mac}) from the site file")
                    continue
                node = self._node(row)
                if spec.firmware is None and node.spec.firmware is not None:
                    # learned from its boot loader: a site that does not say keeps it
                    spec = replace(spec, firmware=node.spec.firmware)
                self._check_free(db, spec, node_id=node.id, context="site file")
                changed = _diff(node.spec, spec)
                if changed or node.source != "site":
                    self._rewrite(db, node.id, spec, "site")
                    self._event_in(db, spec.mac, "updated", {"changed": changed, "source": "site"})
                    report.append(f"updated {spec.hostname} ({spec.mac}) from the site file: "
                                  f"{', '.join(changed) or 'now declared there'}")
            for row in db.execute("SELECT * FROM nodes WHERE source = 'site'").fetchall():
                if row["mac"] not in declared:
                    db.execute("UPDATE nodes SET source='api', updated_at=? WHERE id=?", (now(), row["id"]))
                    self._event_in(db, row["mac"], "updated", {"changed": ["source"], "source": "api"})
                    report.append(f"kept {row['hostname']} ({row['mac']}): no longer in the site file, "
                                  "now managed through the API")
        for line in report:
            log.info("%s", line)
        return report

    # -- internals --------------------------------------------------------------------------

    def _get_in(self, db: sqlite3.Connection, mac: str) -> Node:
        return self._node(_node_row(db, mac))

    def _check_free(self, db: sqlite3.Connection, spec: NodeSpec, node_id: int | None,
                    context: str = "") -> None:
        """Raise Conflict naming the field if another node already holds a MAC, name or IP."""
        prefix = f"{context}: " if context else ""

        def owner(sql: str, value: str) -> str | None:
            row = db.execute(sql, (value,)).fetchone()
            if row is None or row["id"] == node_id:
                return None
            return row["hostname"]

        for i, mac in enumerate([spec.mac] + [n.mac for n in spec.nics]):
            other = owner("SELECT n.id, n.hostname FROM macs m JOIN nodes n ON n.id = m.node_id WHERE m.mac = ?", mac)
            if other:
                raise Conflict(f"{prefix}MAC {mac} already belongs to {other}", "mac" if i == 0 else "nics")
        for i, name in enumerate((spec.hostname,) + spec.aliases):
            other = owner("SELECT n.id, n.hostname FROM names x JOIN nodes n ON n.id = x.node_id WHERE x.name = ?", name)
            if other:
                raise Conflict(f"{prefix}host name {name} already belongs to {other}",
                               "hostname" if i == 0 else "aliases")
        other = owner("SELECT id, hostname FROM nodes WHERE ip = ?", spec.ip)
        if other:
            raise Conflict(f"{prefix}IP {spec.ip} already belongs to {other}", "ip")

    def _insert(self, db: sqlite3.Connection, spec: NodeSpec, source: str, inventory: dict | None = None,
                event: tuple[str, dict] | None = None) -> None:
        ts = now()
        cur = db.execute(
            "INSERT INTO nodes (mac, hostname, ip, interface, aliases, roles, nics, disk_bytes, firmware, state,"
            " netboot, install_token, source, created_at, updated_at, bmc, inventory)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'registered', 1, ?, ?, ?, ?, ?, ?)",
            (spec.mac, spec.hostname, spec.ip, spec.interface, json.dumps(spec.aliases),
             json.dumps(spec.roles), _nics_json(spec.nics), spec.disk_bytes, spec.firmware,
             secrets.token_urlsafe(24), source, ts, ts, self._bmc_json(spec.bmc),
             None if inventory is None else json.dumps(inventory)))
        self._index(db, cur.lastrowid, spec)
        # registered by its description while discovered: the machine is known now
        db.executemany("DELETE FROM discovered WHERE mac IN (SELECT owner FROM discovered_macs WHERE mac = ?)",
                       [(m,) for m in [spec.mac] + [n.mac for n in spec.nics]])
        type_, detail = event or ("registered", {"source": source, "hostname": spec.hostname})
        self._event_in(db, spec.mac, type_, detail)

    def _rewrite(self, db: sqlite3.Connection, node_id: int, spec: NodeSpec, source: str) -> None:
        """Replace a node's description (state, token and history stay)."""
        db.execute(
            "UPDATE nodes SET mac=?, hostname=?, ip=?, interface=?, aliases=?, roles=?, nics=?,"
            " disk_bytes=?, firmware=?, source=?, updated_at=?, bmc=? WHERE id=?",
            (spec.mac, spec.hostname, spec.ip, spec.interface, json.dumps(spec.aliases),
             json.dumps(spec.roles), _nics_json(spec.nics), spec.disk_bytes, spec.firmware, source, now(),
             self._bmc_json(spec.bmc), node_id))
        db.execute("DELETE FROM macs WHERE node_id = ?", (node_id,))
        db.execute("DELETE FROM names WHERE node_id = ?", (node_id,))
        self._index(db, node_id, spec)

    def _bmc_json(self, bmc: Bmc | None) -> str | None:
        if bmc is None:
            return None
        # a password that could not be unsealed stays unset rather than being sealed as "None"
        sealed = self._sealer.seal(bmc.password) if bmc.password is not None else None
        return json.dumps({"url": bmc.url, "username": bmc.username, "password": sealed})

    def _index(self, db: sqlite3.Connection, node_id: int, spec: NodeSpec) -> None:
        db.executemany("INSERT INTO macs (mac, node_id) VALUES (?, ?)",
                       [(m, node_id) for m in [spec.mac] + [n.mac for n in spec.nics]])
        db.executemany("INSERT INTO names (name, node_id) VALUES (?, ?)",
                       [(h, node_id) for h in (spec.hostname,) + spec.aliases])

    def _event_in(self, db: sqlite3.Connection, mac: str, type_: str, detail: object) -> Event:
        at = now()
        text = None if detail is None else json.dumps(detail)
        cur = db.execute("INSERT INTO events (mac, at, type, detail) VALUES (?, ?, ?, ?)", (mac, at, type_, text))
        return Event(cur.lastrowid, mac, at, type_, detail)

    def _event(self, row: sqlite3.Row) -> Event:
        detail = None if row["detail"] is None else json.loads(row["detail"])
        return Event(row["id"], row["mac"], row["at"], row["type"], detail)

    def _node(self, row: sqlite3.Row, last: Event | None = None) -> Node:
        if last is None:
            ev = self._conn().execute("SELECT * FROM events WHERE mac = ? ORDER BY id DESC LIMIT 1",
                                      (row["mac"],)).fetchone()
            last = self._event(ev) if ev else None
        return _row_to_node(row, last, self._sealer.unseal)

    def _nodes(self, rows: list[sqlite3.Row]) -> list[Node]:
        # one query for every node's last event, not one per node
        last = {}
        for ev in self._conn().execute(
                "SELECT e.* FROM events e JOIN (SELECT mac, max(id) AS id FROM events GROUP BY mac) l"
                " ON e.id = l.id"):
            last[ev["mac"]] = self._event(ev)
        return [_row_to_node(r, last.get(r["mac"]), self._sealer.unseal) for r in rows]


def _find_row(db: sqlite3.Connection, mac: str) -> sqlite3.Row | None:
    """The row of the node that owns this MAC (its install NIC or any other NIC)."""
    return db.execute("SELECT n.* FROM macs m JOIN nodes n ON n.id = m.node_id WHERE m.mac = ?",
                      (mac,)).fetchone()


def _discovered_row(db: sqlite3.Connection, mac: str) -> sqlite3.Row | None:
    return db.execute("SELECT d.* FROM discovered_macs m JOIN discovered d ON d.mac = m.owner WHERE m.mac = ?",
                      (mac,)).fetchone()


def _summary(inventory: dict) -> dict:
    """What a `discovered` event says of the machine (the full inventory is on its record)."""
    return {"nics": len(inventory.get("nics", [])),
            "disks": {d["name"]: d["bytes"] for d in inventory.get("disks", [])},
            "cpus": inventory.get("cpus"), "memory_bytes": inventory.get("memory_bytes"),
            "system": inventory.get("system")}


def _node_row(db: sqlite3.Connection, mac: str) -> sqlite3.Row:
    row = _find_row(db, mac)
    if row is None:
        raise NotFound(f"no node has MAC {mac}")
    return row


def token_hash(token: str) -> str:
    """First-boot credentials are kept as hashes: a copy of the registry does not hold them."""
    return hashlib.sha256(token.encode()).hexdigest()


def _check_install_token(node: Node, token: str | None) -> None:
    if not node.install_token:
        raise Forbidden(f"the install token of {node.hostname} has ended: it reported installed "
                        "already. If this machine did not, something else on the install network "
                        "did; rebuild it to install again", "token")
    # constant time, so the token cannot be guessed byte by byte from response times
    if token is None or not hmac.compare_digest(token.encode(), node.install_token.encode()):
        raise Forbidden(f"wrong or missing install token for {node.hostname}", "token")


def check_firstboot_token(node: Node, token: str | None) -> None:
    if not node.firstboot_hash:
        raise Forbidden(f"{node.hostname} holds no first-boot credential ({node.state}): it is handed out "
                        "at `installed` and ends at `deployed` or a rebuild", "token")
    if token is None or not hmac.compare_digest(token_hash(token).encode(), node.firstboot_hash.encode()):
        raise Forbidden(f"wrong or missing first-boot credential for {node.hostname}", "token")


# a node's events after its last `installed` report (first-boot step reports); the MAC twice
_SINCE_INSTALL = ("SELECT * FROM events WHERE mac = ? AND id > coalesce((SELECT max(id) FROM events"
                  " WHERE mac = ? AND type = 'installed'), 0) ORDER BY id")


def _row_to_node(row: sqlite3.Row, last: Event | None,
                 unseal: Callable[[str], str | None] | None = None) -> Node:
    spec = NodeSpec(
        mac=row["mac"], hostname=row["hostname"], ip=row["ip"], roles=tuple(json.loads(row["roles"])),
        interface=row["interface"], aliases=tuple(json.loads(row["aliases"])),
        nics=tuple(Nic(**n) for n in json.loads(row["nics"])), disk_bytes=row["disk_bytes"],
        firmware=row["firmware"], bmc=_bmc_from(row["bmc"], unseal))
    inventory = row["inventory"]
    return Node(row["id"], spec, row["state"], bool(row["netboot"]), row["install_token"],
                row["firstboot_hash"], row["source"], row["created_at"], row["updated_at"], last, row["version"],
                None if inventory is None else json.loads(inventory))


def _bmc_from(text: str | None, unseal: Callable[[str], str | None] | None) -> Bmc | None:
    if not text:
        return None
    d = json.loads(text)
    sealed = d.get("password")
    return Bmc(d["url"], d["username"], unseal(sealed) if sealed and unseal else None)


def _nics_json(nics: tuple[Nic, ...]) -> str:
    return json.dumps([asdict(n) for n in nics])


def _diff(old: NodeSpec, new: NodeSpec) -> list[str]:
    return [f for f in NodeSpec.__dataclass_fields__ if getattr(old, f) != getattr(new, f)]
