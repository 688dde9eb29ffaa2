"""The API's input handling, the registry's schema migration, and PATCH without lost updates."""

import json
import sqlite3
import threading

import pytest

from provisioner.registry import Registry
from tests.conftest import db_dump, new_node

# `nodes` as the first release created it, before `version` and any later column
OLD_NODES_TABLE = """
CREATE TABLE nodes (
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
CREATE TABLE macs (mac TEXT PRIMARY KEY, node_id INTEGER NOT NULL REFERENCES nodes(id) ON DELETE CASCADE);
CREATE TABLE names (name TEXT PRIMARY KEY, node_id INTEGER NOT NULL REFERENCES nodes(id) ON DELETE CASCADE);
INSERT INTO nodes VALUES (1, '52:54:00:aa:00:10', 'compute10', '192.168.0.10', 'eth1', '[]', '["compute"]',
    '[]', NULL, 'installed', 0, 'tok', 'api', '2024-01-01T00:00:00Z', '2024-01-01T00:00:00Z');
INSERT INTO macs VALUES ('52:54:00:aa:00:10', 1);
INSERT INTO names VALUES ('compute10', 1);
"""


def _columns(path) -> dict[str, str]:
    with sqlite3.connect(path) as db:
        return {r[1]: r[2] for r in db.execute("PRAGMA table_info(nodes)")}


def test_a_registry_made_by_an_older_version_opens_and_gains_the_version_column(tmp_path):
    path = tmp_path / "registry.sqlite3"
    with sqlite3.connect(path) as db:
        db.executescript(OLD_NODES_TABLE)
    assert "version" not in _columns(path)

    reg = Registry(path)
    assert _columns(path)["version"] == "INTEGER"
    node = reg.get("52:54:00:aa:00:10")
    assert (node.hostname, node.state, node.version) == ("compute10", "installed", 1)
    spec = node.spec.__class__(**{**node.spec.__dict__, "interface": "eth0"})
    assert reg.update(node.mac, spec).version == 2
    reg.close()

    again = Registry(path)          # a second start migrates nothing and loses nothing
    assert again.get(node.mac).version == 2 and again.get(node.mac).spec.interface == "eth0"
    again.close()


def test_every_update_of_a_nodes_row_bumps_its_version_whoever_writes_it(registry):
    mac = "52:54:00:0c:00:02"
    v = registry.get(mac).version
    names = registry.names_version()
    db = registry._conn()
    db.execute("UPDATE nodes SET state = 'failed' WHERE mac = ?", (mac,))      # any code path
    assert registry.get(mac).version == v + 1
    db.execute("UPDATE nodes SET version = 40 WHERE mac = ?", (mac,))          # set on purpose: kept
    assert registry.get(mac).version == 40
    assert registry.names_version() == names        # the bump is not a name change
    registry.rebuild(mac)
    assert registry.get(mac).version == 41
