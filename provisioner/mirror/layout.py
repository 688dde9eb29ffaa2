"""Where the mirror keeps things on disk and what URL the nodes are given for them.

<state>/mirror/pub/       what the boot server serves, under /mirror/: the upstream's paths below
                          os.mirror, so a tree's relative links (.treeinfo's variant repositories,
                          ../../../AppStream/x86_64/os) still land on the copy
<state>/mirror/partial/   downloads not yet verified, same paths; never served, resumed by the
                          next sync, renamed into pub/ only once their checksum matches
<state>/mirror/verified.json  what pub/ holds and the checksum it was verified against, so a
                          second sync need not read every package again
"""

from __future__ import annotations

from pathlib import Path

from provisioner.config import Site
from provisioner.boot.tftp import safe_static_path

URL_PREFIX = "/mirror/"


def root(state_dir: Path) -> Path:
    return Path(state_dir) / "mirror"


def pub_dir(state_dir: Path) -> Path:
    return root(state_dir) / "pub"


def partial_dir(state_dir: Path) -> Path:
    return root(state_dir) / "partial"


def manifest_path(state_dir: Path) -> Path:
    return root(state_dir) / "verified.json"


def upstream_rel(site: Site, url: str) -> str:
    """The path of an upstream URL below os.mirror (config refuses, with the mirror on, a
    source outside it)."""
    base = site.os_mirror.rstrip("/") + "/"
    if not url.startswith(base):
        raise ValueError(f"{url} is not under os.mirror {site.os_mirror}")
    return url[len(base):]


def mirror_base(site: Site) -> str:
    return site.boot_url.rstrip("/") + URL_PREFIX.rstrip("/")


def served_url(site: Site, url: str) -> str:
    """What a node is told to fetch for an upstream URL: the service's copy when the mirror is
    on, the upstream itself when it is off."""
    if not site.mirror.enabled:
        return url
    return f"{mirror_base(site)}/{upstream_rel(site, url)}"


def served_file(state_dir: Path, url_path: str) -> Path | None:
    """The file under pub/ for a request path /mirror/..., or None (outside it, a directory,
    a symlink out, or not there)."""
    if not url_path.startswith(URL_PREFIX):
        return None
    return safe_static_path(pub_dir(state_dir), url_path[len(URL_PREFIX):])
