"""Files holding secrets: what `regenerate` writes, the state directory, the registry and the
secrets file are owner-only, and a planted symlink is never written through."""

import os
import stat
from pathlib import Path

import pytest

from provisioner.render import regenerate as regen
from provisioner.credentials import SECRETS_FILE, ensure_state_dir, load_or_create
from provisioner.registry.db import DB_FILE, Registry

FIRST = "52-54-00-0c-00-01.ks"      # compute1's kickstart
OTHER_UID = 54321


def _mode(path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def _run(app, out: Path):
    ctx = app.extensions["provisioner"]
    return regen.regenerate(ctx.registry, ctx.renderer, out)


@pytest.fixture
def victim(tmp_path) -> Path:
    """A file a planted symlink points at: it must come through every run untouched."""
    path = tmp_path / "victim"
    path.write_text("not yours\n")
    os.chmod(path, 0o644)
    return path


def _untouched(victim: Path):
    assert victim.read_text() == "not yours\n" and _mode(victim) == 0o644


def test_every_file_written_is_0600_whatever_the_umask(app, tmp_path):
    out = tmp_path / "out"
    old = os.umask(0)
    try:
        result = _run(app, out)
    finally:
        os.umask(old)
    files = sorted(os.listdir(out))
    assert result.written == 5 and FIRST in files and "index.json" in files
    assert {f: _mode(out / f) for f in files} == {f: 0o600 for f in files}
    assert not [f for f in files if f.endswith(".tmp")]


def test_files_that_exist_already_end_at_0600_written_again_or_not(app, tmp_path):
    out = tmp_path / "out"
    _run(app, out)
    for f in os.listdir(out):
        os.chmod(out / f, 0o644)            # as an older version left them
    result = _run(app, out)
    assert result.unchanged == 5 and result.written == 0
    assert {_mode(out / f) for f in os.listdir(out)} == {0o600}


def test_a_symlink_planted_at_a_kickstarts_path_is_replaced_not_followed(app, tmp_path, victim):
    out = tmp_path / "out"
    out.mkdir()
    (out / FIRST).symlink_to(victim)
    (out / "index.json").symlink_to(victim)
    _run(app, out)
    _untouched(victim)
    for name in (FIRST, "index.json"):
        assert stat.S_ISREG(os.lstat(out / name).st_mode) and _mode(out / name) == 0o600
    assert "install" in (out / FIRST).read_text()


def test_a_symlink_planted_where_an_unchanged_kickstart_was_is_replaced(app, tmp_path, victim):
    out = tmp_path / "out"
    _run(app, out)
    (out / FIRST).unlink()
    (out / FIRST).symlink_to(victim)        # the index still says it is written and unchanged
    result = _run(app, out)
    _untouched(victim)
    assert result.written == 1 and not (out / FIRST).is_symlink() and _mode(out / FIRST) == 0o600


def test_a_symlink_planted_at_the_temporarys_name_is_not_followed(app, tmp_path, victim, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    planted = []
    fresh = regen._temp_name

    def temp_name(path):
        # the first name asked for is one an attacker holds already (a symlink), as a fixed
        # temporary name always would be
        if not planted:
            name = path.with_name(f".{path.name}.tmp")
            name.symlink_to(victim)
            planted.append(name)
            return name
        return fresh(path)

    monkeypatch.setattr(regen, "_temp_name", temp_name)
    _run(app, out)
    _untouched(victim)
    assert planted[0].is_symlink()          # left alone: skipped, not opened
    written = sorted(f for f in os.listdir(out) if not f.startswith("."))
    assert len(written) == 6 and {_mode(out / f) for f in written} == {0o600}


def test_a_write_that_fails_leaves_no_temporary(tmp_path, monkeypatch):
    def fail(src, dst):
        raise OSError("disk full")
    monkeypatch.setattr(regen.os, "replace", fail)
    with pytest.raises(OSError):
        regen._write(tmp_path / "x.ks", "text")
    assert os.listdir(tmp_path) == []


# -- the state directory, the registry, the secrets ----------------------------------------------

def test_an_existing_state_directory_is_tightened_to_0700(tmp_path):
    state = tmp_path / "state"
    state.mkdir(mode=0o755)
    os.chmod(state, 0o755)
    assert ensure_state_dir(state) == state and _mode(state) == 0o700


def test_a_state_directory_that_is_our_own_symlink_is_used(tmp_path):
    real = tmp_path / "real"
    real.mkdir(mode=0o750)
    (tmp_path / "state").symlink_to(real)
    ensure_state_dir(tmp_path / "state")
    assert _mode(real) == 0o700


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another user needs root")


@needs_root
def test_a_state_directory_symlink_owned_by_someone_else_is_refused(tmp_path):
    real = tmp_path / "real"
    real.mkdir(mode=0o755)
    os.chmod(real, 0o755)
    link = tmp_path / "state"
    link.symlink_to(real)
    os.lchown(link, OTHER_UID, OTHER_UID)
    with pytest.raises(ValueError, match="symlink owned by uid 54321"):
        ensure_state_dir(link)
    with pytest.raises(ValueError, match="symlink owned by uid 54321"):
        load_or_create(link)
    assert _mode(real) == 0o755 and os.listdir(real) == []      # nothing done through it


@needs_root
def test_a_state_directory_owned_by_someone_else_is_refused(tmp_path):
    state = tmp_path / "state"
    state.mkdir(mode=0o755)
    os.chmod(state, 0o755)
    os.chown(state, OTHER_UID, OTHER_UID)
    with pytest.raises(ValueError, match="owned by uid 54321"):
        load_or_create(state)
    assert _mode(state) == 0o755 and os.listdir(state) == []


def test_a_state_directory_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "state").write_text("")
    with pytest.raises((ValueError, FileExistsError)):
        ensure_state_dir(tmp_path / "state")


def test_the_registry_and_the_secrets_file_are_0600_at_every_start(tmp_path):
    state = tmp_path / "state"
    load_or_create(state)
    Registry.in_state_dir(state).close()
    for name in (DB_FILE, SECRETS_FILE):
        os.chmod(state / name, 0o644)       # a restore from backup, or an older version
    os.chmod(state, 0o755)
    load_or_create(state)
    Registry.in_state_dir(state).close()
    assert _mode(state) == 0o700
    assert _mode(state / DB_FILE) == 0o600 and _mode(state / SECRETS_FILE) == 0o600
