"""The registry: site sync, the append-only event log, and the state directory's permissions."""

import sqlite3
import stat

import pytest

from provisioner.app import open_context
from provisioner.config import ConfigError, parse_node
from provisioner.registry.db import Conflict, NotFound, Registry
from tests.conftest import new_node


def _mode(path):
    return stat.S_IMODE(path.stat().st_mode)


def test_state_dir_and_secret_files_are_owner_only(app, state_dir):
    assert _mode(state_dir) == 0o700
    assert _mode(state_dir / "secrets.yaml") == 0o600
    assert _mode(state_dir / "registry.sqlite3") == 0o600


def test_secrets_survive_a_restart_and_the_hash_follows_a_new_root_password(state_dir, site):
    from provisioner.credentials import _crypt, load_or_create
    first = load_or_create(state_dir)
    assert load_or_create(state_dir).values == first.values
    text = (state_dir / "secrets.yaml").read_text().replace(first.values["root_password"], "Operator-Chosen-1")
    (state_dir / "secrets.yaml").write_text(text)
    again = load_or_create(state_dir)
    assert again.root_password_hash != first.root_password_hash
    assert _crypt.crypt("Operator-Chosen-1", again.root_password_hash) == again.root_password_hash
    assert "Credentials(<" in repr(again) and "Operator" not in repr(again)


def test_events_are_append_only(registry):
    registry.add_event("52:54:00:0c:00:01", "note", {"x": 1})
    db = registry._conn()
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        db.execute("UPDATE events SET type = 'forged'")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        db.execute("DELETE FROM events")


def test_site_sync_keeps_state_and_tokens_and_follows_the_file(state_dir, site):
    ctx = open_context(state_dir, site)
    token = ctx.registry.get("52:54:00:0c:00:02").install_token
    changed = dict(vars(site))
    spec = site.nodes[1]
    moved = parse_node({"mac": spec.mac, "hostname": "compute2", "ip": "192.168.0.22", "roles": ["compute"],
                        "interface": "eth1"}, site)
    changed["nodes"] = (site.nodes[0], moved) + site.nodes[2:4]  # controller left the file
    new_site = type(site)(**changed)
    report = ctx.registry.sync_site(new_site)
    assert any("updated compute2" in line and "ip" in line for line in report)
    assert any("kept controller" in line for line in report)
    node = ctx.registry.get("52:54:00:0c:00:02")
    assert node.spec.ip == "192.168.0.22" and node.install_token == token and node.source == "site"
    assert ctx.registry.get("52:54:00:0c:00:05").source == "api"   # kept, now API-managed
    assert ctx.registry.sync_site(new_site) == []                  # nothing left to do


def test_a_site_node_clashing_with_an_api_node_stops_the_start(state_dir, site):
    ctx = open_context(state_dir, site)
    ctx.registry.add(parse_node(new_node(), site))
    changed = dict(vars(site))
    clash = parse_node({**new_node(mac="52:54:00:aa:00:11", hostname="compute11")}, site)
    changed["nodes"] = site.nodes + (clash,)
    with pytest.raises(Exception, match=r"site file: IP 192\.168\.0\.10 already belongs to compute10"):
        ctx.registry.sync_site(type(site)(**changed))
    assert ctx.registry.find("52:54:00:aa:00:11") is None


def test_the_registry_reopens_with_its_data(state_dir, site):
    ctx = open_context(state_dir, site)
    ctx.registry.add(parse_node(new_node(), site))
    ctx.registry.close()
    again = Registry.in_state_dir(state_dir)
    assert again.get("52:54:00:aa:00:10").hostname == "compute10"
    assert again.count() == 6


def test_node_validation_is_the_sites(site):
    with pytest.raises(ConfigError, match=r"node\.roles\[0\]: unknown role"):
        parse_node(new_node(roles=["nope"]), site, "node")


# -- kickstart fetches are written with the next transaction ---------------------------------------

MAC = "52:54:00:0c:00:03"


def _states(registry, mac):
    node = registry.get(mac)
    return node.state, node.netboot, [e.type for e in registry.events(mac)]


def test_a_noted_fetch_is_written_by_flush_or_by_the_next_write(registry):
    registry.kickstart_fetched(registry.install_view(MAC))
    assert _states(registry, MAC)[0] == "registered"        # noted, not yet written
    registry.flush()
    assert _states(registry, MAC)[0] == "installing"
    registry.kickstart_fetched(registry.install_view("52:54:00:0c:00:04"))
    token = registry.get(MAC).install_token
    registry.callback(MAC, token, "installed", None)        # this transaction writes the other fetch too
    assert _states(registry, "52:54:00:0c:00:04")[0] == "installing"
    assert _states(registry, MAC)[:2] == ("installed", False)


def test_an_installed_report_from_another_process_wins_over_a_late_fetch(registry, state_dir):
    view = registry.install_view(MAC)
    registry.kickstart_fetched(view)
    other = Registry.in_state_dir(state_dir)        # e.g. the API's process, with its own connection
    other.callback(MAC, view.node().install_token, "installed", None)
    registry.flush()
    state, netboot, events = _states(registry, MAC)
    assert (state, netboot) == ("installed", False)           # not dragged back to installing
    assert events[-1] == "installed"           # and the late fetch changed nothing, so wrote nothing
    other.close()


def test_a_disarmed_node_is_refused_and_nothing_is_noted(registry):
    token = registry.get(MAC).install_token
    registry.callback(MAC, token, "installed", None)
    before = _states(registry, MAC)
    with pytest.raises(Conflict):
        registry.kickstart_fetched(registry.install_view(MAC))
    registry.flush()
    assert _states(registry, MAC) == before


def test_a_failed_transaction_keeps_the_noted_fetches_for_the_next(registry):
    registry.kickstart_fetched(registry.install_view(MAC))
    with pytest.raises(NotFound):
        registry.callback("52:54:00:99:99:99", "x", "installed", None)
    assert _states(registry, MAC)[0] == "registered"
    registry.flush()
    assert _states(registry, MAC)[0] == "installing"
