"""Secrets generated on first run into the state directory, readable by the owner only.

Nothing here is ever logged or returned by a listing. The root password reaches a kickstart
only as its SHA-512 crypt hash, computed once and kept, so re-rendering a kickstart does not
change it (a fresh salt every render would make every kickstart "changed").
"""

from __future__ import annotations

import os
import secrets
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path

import yaml

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    try:
        import crypt as _crypt
    except ImportError:  # Python 3.13+
        import crypt_r as _crypt  # type: ignore[no-redef]

SECRETS_FILE = "secrets.yaml"
# The passwords the report's configrc held in clear text, generated instead.
PASSWORD_KEYS = ("root_password", "mariadb_root_password", "rabbitmq_password",
                 "keystone_admin_password", "glance_password", "placement_password",
                 "nova_password", "neutron_password", "cinder_password", "metadata_secret",
                 "keystone_db_password", "glance_db_password", "placement_db_password",
                 "nova_db_password", "neutron_db_password", "cinder_db_password",
                 "libvirt_migration_password")


@dataclass(frozen=True)
class Credentials:
    values: dict[str, str]

    @property
    def admin_token(self) -> str:
        return self.values["admin_token"]

    @property
    def reader_token(self) -> str:
        return self.values["reader_token"]

    @property
    def root_password_hash(self) -> str:
        return self.values["root_password_hash"]

    def __repr__(self) -> str:  # a stray log line must not print a secret
        return f"Credentials(<{len(self.values)} secrets>)"


def sha512_crypt(password: str) -> str:
    return _crypt.crypt(password, _crypt.mksalt(_crypt.METHOD_SHA512))


def _hash_matches(password: str, hashed: str) -> bool:
    return bool(hashed) and hashed.startswith("$6$") and _crypt.crypt(password, hashed) == hashed


def ensure_state_dir(state_dir: Path) -> Path:
    """The state directory, owner-only. It holds the registry's install tokens and the secrets,
    so one made by an older version (or by hand) is tightened, and one that someone else owns or
    could repoint (a symlink that is not ours) is refused: they could read or swap everything."""
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    uid = os.geteuid()
    link = os.lstat(state_dir)
    if stat.S_ISLNK(link.st_mode) and link.st_uid != uid:
        raise ValueError(f"state directory {state_dir} is a symlink owned by uid {link.st_uid}, not by "
                         f"this user (uid {uid}); refusing it: point --state-dir at the real directory")
    st = os.stat(state_dir)
    if not stat.S_ISDIR(st.st_mode):
        raise ValueError(f"state directory {state_dir} is not a directory")
    if st.st_uid != uid:
        raise ValueError(f"state directory {state_dir} is owned by uid {st.st_uid}, not by this user "
                         f"(uid {uid}); refusing it: run as its owner, or chown it")
    if stat.S_IMODE(st.st_mode) != 0o700:
        os.chmod(state_dir, 0o700)
    return state_dir


def load_or_create(state_dir: Path) -> Credentials:
    """Read the secrets file, filling in (and saving) any secret it lacks."""
    ensure_state_dir(state_dir)
    path = state_dir / SECRETS_FILE
    values: dict[str, str] = {}
    if path.exists():
        loaded = yaml.safe_load(path.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"{path}: must be a mapping of secret names to values")
        values = {str(k): str(v) for k, v in loaded.items()}
    changed = False
    for key in ("admin_token", "reader_token"):
        if not values.get(key):
            values[key] = secrets.token_urlsafe(32)
            changed = True
    for key in PASSWORD_KEYS:
        if not values.get(key):
            values[key] = secrets.token_urlsafe(18)
            changed = True
    # An operator may set root_password by hand: the hash follows it.
    if not _hash_matches(values["root_password"], values.get("root_password_hash", "")):
        values["root_password_hash"] = sha512_crypt(values["root_password"])
        changed = True
    if changed:
        _write_private(path, yaml.safe_dump(values, sort_keys=True))
    elif path.stat().st_mode & 0o077:
        os.chmod(path, 0o600)
    return Credentials(values)


def _write_private(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
