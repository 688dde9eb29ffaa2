"""OS trees for network installs: import kernel and initrd from a CentOS Stream tree, verified.

A tree (a mirror URL or a local directory) carries `.treeinfo`, which names the PXE kernel and
initrd and lists their checksums. Import fetches both, checks them against those sums, and
keeps them under <state>/distros/<name>/, where <name> is what the site expects
(centos-stream-9-x86_64). Nothing is kept unless every checksum matches.
"""

from __future__ import annotations

import configparser
import hashlib
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable
from urllib.parse import urljoin, urlparse

import requests

from provisioner.boot.bootfiles import DISTRO_LOADER_DIR, DISTRO_LOADERS
from provisioner.config import distro_name

DISTROS_DIR = "distros"
FILES = ("vmlinuz", "initrd.img")
CHUNK = 1024 * 1024


class DistroError(ValueError):
    pass


@dataclass(frozen=True)
class Tree:
    name: str
    kernel: str             # paths inside the tree
    initrd: str
    checksums: dict[str, str]
    treeinfo: str


def distro_dir(state_dir: Path) -> Path:
    return Path(state_dir) / DISTROS_DIR


def boot_file(state_dir: Path, distro: str, name: str) -> Path | None:
    """An imported kernel or initrd, or None."""
    if name not in FILES or "/" in distro or distro.startswith("."):
        return None
    path = distro_dir(state_dir) / distro / name
    return path if path.is_file() else None


def parse_treeinfo(text: str) -> Tree:
    cp = configparser.ConfigParser(interpolation=None)
    try:
        cp.read_string(text)
    except configparser.Error as e:
        raise DistroError(f".treeinfo is not readable: {e}") from None

    def get(section: str, key: str) -> str:
        try:
            return cp.get(section, key).strip()
        except (configparser.NoSectionError, configparser.NoOptionError):
            raise DistroError(f".treeinfo has no [{section}] {key}") from None

    if cp.has_section("release"):
        name, version = get("release", "name"), get("release", "version")
    else:
        name, version = get("general", "family"), get("general", "version")
    arch = get("tree", "arch") if cp.has_section("tree") else get("general", "arch")
    section = f"images-{arch}"
    kernel, initrd = get(section, "kernel"), get(section, "initrd")
    sums = dict(cp.items("checksums")) if cp.has_section("checksums") else {}
    for path in (kernel, initrd):
        if path not in sums:
            raise DistroError(f".treeinfo lists no checksum for {path}")
        if ".." in path.split("/") or path.startswith("/"):
            raise DistroError(f".treeinfo names {path!r}, outside the tree")
    return Tree(distro_name(name, version, arch), kernel, initrd, sums, text)


def _is_url(source: str) -> bool:
    return urlparse(source).scheme in ("http", "https")


def _open_source(source: str, rel: str, progress, session):
    """Yield the file's chunks from a URL or a directory, reporting (name, done, total)."""
    if _is_url(source):
        url = urljoin(source.rstrip("/") + "/", rel)
        with session.get(url, stream=True, timeout=60) as resp:
            if resp.status_code != 200:
                raise DistroError(f"{url}: HTTP {resp.status_code}")
            total = int(resp.headers.get("Content-Length") or 0)
            done = 0
            for chunk in resp.iter_content(CHUNK):
                done += len(chunk)
                progress(rel, done, total)
                yield chunk
    else:
        path = Path(source) / rel
        try:
            total = path.stat().st_size
            with open(path, "rb") as f:
                done = 0
                while chunk := f.read(CHUNK):
                    done += len(chunk)
                    progress(rel, done, total)
                    yield chunk
        except FileNotFoundError:
            raise DistroError(f"{path}: no such file") from None


def import_tree(state_dir: Path, source: str, progress: Callable[[str, int, int], None] | None = None) -> Tree:
    progress = progress or (lambda *a: None)
    session = requests.Session()
    try:
        treeinfo = b"".join(_open_source(source, ".treeinfo", lambda *a: None, session)).decode()
    except UnicodeDecodeError:
        raise DistroError(".treeinfo is not text") from None
    except requests.RequestException as e:
        raise DistroError(f"{source}: {e}") from None
    tree = parse_treeinfo(treeinfo)
    root = distro_dir(state_dir)
    root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{tree.name}.", dir=root))
    # the tree's own shim and GRUB, signed by the vendor that signed its kernel (bootfiles.py):
    # taken when .treeinfo vouches for both, as CentOS's does
    wanted = [(tree.kernel, "vmlinuz"), (tree.initrd, "initrd.img")]
    # (configparser lowers the keys of [checksums]; EFI/BOOT/BOOTX64.EFI is upper case)
    if all(rel.lower() in tree.checksums for rel in DISTRO_LOADERS.values()):
        (work / DISTRO_LOADER_DIR).mkdir()
        wanted += [(rel, f"{DISTRO_LOADER_DIR}/{name}") for name, rel in DISTRO_LOADERS.items()]
    try:
        for rel, dest in wanted:
            algo, _, want = tree.checksums[rel.lower()].partition(":")
            if algo not in hashlib.algorithms_guaranteed or not want:
                raise DistroError(f".treeinfo checksum for {rel} is not 'algorithm:hex' ({tree.checksums[rel.lower()]!r})")
            digest = hashlib.new(algo)
            with open(work / dest, "wb") as out:
                try:
                    for chunk in _open_source(source, rel, progress, session):
                        digest.update(chunk)
                        out.write(chunk)
                except requests.RequestException as e:
                    raise DistroError(f"{rel}: {e}") from None
            if digest.hexdigest() != want.lower():
                raise DistroError(f"{rel}: {algo} is {digest.hexdigest()}, .treeinfo says {want}; not imported")
        (work / "treeinfo").write_text(treeinfo)
        final = root / tree.name
        if final.exists():
            shutil.rmtree(final)
        work.rename(final)
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    return tree


def list_distros(state_dir: Path) -> list[str]:
    root = distro_dir(state_dir)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
