"""A node's BMC as the registry keeps it: its URL, user name and password, and how the password
is kept at rest.

The password is sealed (Fernet: AES-128-CBC and HMAC-SHA256) into the registry row with a key
that lives in the state directory (`bmc.key`, 0600), rather than in a second secrets file: it
changes in the same transaction as the node's URL and user name (no second file to keep in step
across worker processes, MAC changes and removals), and a copy of registry.sqlite3 alone (a
backup, a bug report) does not give every BMC in the rack away.

Nothing here imports the registry or the site parser, which both import it.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

KEY_FILE = "bmc.key"
SCHEMES = ("redfish", "redfish+https", "ipmi", "libvirt")
KEYS = ("url", "username", "password")
MAX_PASSWORD = 256          # IPMI 2.0 takes 20 bytes, Redfish BMCs rarely more than 64
_SYSTEM_PATH = re.compile(r"/redfish/v1/Systems/[A-Za-z0-9._~%-]+/?")
_HOST = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*")
_DOMAIN = re.compile(r"[A-Za-z0-9_.+-]{1,200}")


class InvalidBmc(ValueError):
    """The message names the part of the BMC description that is wrong (never the password)."""


@dataclass(frozen=True)
class Bmc:
    url: str
    username: str
    # None when the registry holds a password it cannot unseal (bmc.key lost or replaced)
    password: str | None = field(default=None, repr=False)

    @property
    def scheme(self) -> str:
        return self.url.split("://", 1)[0]

    def public(self) -> dict:
        return {"url": self.url, "username": self.username, "password_set": self.password is not None}


def parse_bmc(value: object, where: str = "bmc") -> Bmc | None:
    """A BMC description from the API or the site file, or None for `null` (no BMC)."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidBmc(f"{where}: must be an object with url, username and password")
    unknown = sorted(set(value) - set(KEYS))
    if unknown:
        raise InvalidBmc(f"{where}.{unknown[0][:40]}: unknown key (expected one of {', '.join(KEYS)})")
    for key in KEYS:
        if key not in value:
            raise InvalidBmc(f"{where}.{key}: required")
        if not isinstance(value[key], str):
            raise InvalidBmc(f"{where}.{key}: must be a string")
    url = check_url(value["url"], f"{where}.url")
    username = value["username"]
    if not 0 < len(username) <= 64 or any(ord(c) < 32 for c in username):
        raise InvalidBmc(f"{where}.username: 1 to 64 printable characters")
    password = value["password"]
    # no length in the message: even that says something about a secret
    if not password or len(password) > MAX_PASSWORD or "\n" in password or "\0" in password:
        raise InvalidBmc(f"{where}.password: must be 1 to {MAX_PASSWORD} characters, one line")
    return Bmc(url, username, password)


def check_url(url: str, where: str = "bmc.url") -> str:
    """redfish://host[:port]/redfish/v1/Systems/<id> (plain HTTP), redfish+https://... (TLS),
    ipmi://host[:port] (IPMI 2.0 over UDP, 623 by default), libvirt://<domain> (a lab VM)."""
    if len(url) > 512:
        raise InvalidBmc(f"{where}: over 512 characters")
    scheme, sep, _ = url.partition("://")
    if not sep or scheme not in SCHEMES:
        raise InvalidBmc(f"{where}: {url[:80]!r} is not one of redfish://host[:port]/redfish/v1/Systems/<id>, "
                         "redfish+https://..., ipmi://host[:port], libvirt://<domain>")
    parts = urlsplit(url)
    # a password in the URL would be shown by every listing and kept in every event
    if "@" in parts.netloc:
        raise InvalidBmc(f"{where}: no user name or password in the URL; give them as username and password")
    if parts.query or parts.fragment:
        raise InvalidBmc(f"{where}: no query or fragment")
    if scheme == "libvirt":
        if parts.path or not _DOMAIN.fullmatch(parts.netloc):
            raise InvalidBmc(f"{where}: libvirt://<domain>, the domain's name (letters, digits, _ . + -)")
        return url
    host = parts.hostname or ""
    try:
        port = parts.port
    except ValueError:
        raise InvalidBmc(f"{where}: the port is not a number from 1 to 65535") from None
    if port == 0:
        raise InvalidBmc(f"{where}: the port is not a number from 1 to 65535")
    if not _is_host(host):
        raise InvalidBmc(f"{where}: {host[:80]!r} is not a host name or IP address")
    if scheme == "ipmi":
        if parts.path not in ("", "/"):
            raise InvalidBmc(f"{where}: ipmi://host[:port], no path")
    elif not _SYSTEM_PATH.fullmatch(parts.path):
        raise InvalidBmc(f"{where}: the path must be /redfish/v1/Systems/<id> (the system this node is)")
    return url


def _is_host(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return bool(_HOST.fullmatch(host)) and len(host) <= 253


class Sealer:
    """Seals and unseals BMC passwords with the state directory's key, made on first use."""

    def __init__(self, state_dir: Path):
        self.path = Path(state_dir) / KEY_FILE
        self._fernet = None

    def _key(self):
        if self._fernet is None:
            from cryptography.fernet import Fernet
            self._fernet = Fernet(_load_or_create_key(self.path, Fernet.generate_key))
        return self._fernet

    def seal(self, password: str) -> str:
        return self._key().encrypt(password.encode()).decode()

    def unseal(self, token: str) -> str | None:
        from cryptography.fernet import InvalidToken
        if not self.path.exists():
            return None     # no key: nothing was ever sealed here; do not make one just to read
        try:
            return self._key().decrypt(token.encode()).decode()
        except (InvalidToken, ValueError):
            return None


def _load_or_create_key(path: Path, generate) -> bytes:
    try:
        return path.read_bytes().strip()
    except FileNotFoundError:
        pass
    # written whole to a private temporary file and linked into place: link(2) fails if another
    # process got there first, and then its key is the one (never two keys, never a half-written one)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, generate() + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        os.unlink(tmp)
    return path.read_bytes().strip()
