"""What a tree or a repo lists, and the checksum of each: .treeinfo, repomd.xml, primary.

Parsed with the standard library: configparser for .treeinfo (as distros.py), ElementTree's
iterparse for the XML, so AppStream's primary (tens of MB unpacked) is read as a stream and
never held whole. ElementTree resolves no external entities, and Python 3.11's expat (2.4+)
refuses entity-expansion bombs; upstream metadata is still treated as hostile in what it can
name: every path it gives must stay inside the repo (`safe_rel`).
"""

from __future__ import annotations

import bz2
import configparser
import gzip
import lzma
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterator

# createrepo's "sha" is SHA-1; the rest are hashlib's names
_ALGOS = {"sha": "sha1", "sha1": "sha1", "sha224": "sha224", "sha256": "sha256", "sha384": "sha384",
          "sha512": "sha512", "md5": "md5"}


class RepodataError(ValueError):
    pass


@dataclass(frozen=True)
class Wanted:
    """One file a tree or repo lists: its path inside the tree or repo and what it must hash to."""
    rel: str
    algo: str           # hashlib name
    digest: str         # lower-case hex
    size: int | None = None

    @property
    def key(self) -> str:
        return f"{self.algo}:{self.digest}"


def algo_name(text: str, where: str) -> str:
    algo = _ALGOS.get(text.strip().lower())
    if algo is None:
        raise RepodataError(f"{where}: unknown checksum type {text!r}")
    return algo


def safe_rel(path: str, where: str) -> str:
    """A relative path that stays inside its tree, or RepodataError: metadata from the upstream
    decides where files land on this disk."""
    p = path.strip()
    parts = p.split("/")
    if (not p or p.startswith("/") or "\\" in p or "\0" in p or "://" in p
            or any(part in ("", ".", "..") for part in parts)):
        raise RepodataError(f"{where}: {path!r} is not a path inside the repository")
    return p


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


@dataclass(frozen=True)
class Treeinfo:
    files: list[Wanted]         # the images its [checksums] lists (install.img, pxeboot, ...)
    repositories: list[tuple[str, str]]   # (variant, repository path relative to the tree: ".", ../../../AppStream/x86_64/os)


def parse_treeinfo(text: str) -> Treeinfo:
    cp = configparser.ConfigParser(interpolation=None)
    cp.optionxform = str        # paths are case-sensitive
    try:
        cp.read_string(text)
    except configparser.Error as e:
        raise RepodataError(f".treeinfo is not readable: {e}") from None
    files = []
    if cp.has_section("checksums"):
        for rel, value in cp.items("checksums"):
            algo, _, digest = value.partition(":")
            if not digest:
                raise RepodataError(f".treeinfo [checksums] {rel}: {value!r} is not 'algorithm:hex'")
            files.append(Wanted(safe_rel(rel, ".treeinfo [checksums]"), algo_name(algo, f".treeinfo {rel}"),
                                digest.strip().lower()))
    repositories = []
    for section in cp.sections():
        if section.startswith("variant-") and cp.has_option(section, "repository"):
            repo = cp.get(section, "repository").strip()
            if repo and repo not in [r for _, r in repositories]:
                repositories.append((section[len("variant-"):], repo))
    return Treeinfo(files, repositories)


def parse_repomd(data: bytes) -> list[Wanted]:
    """Every metadata file repomd.xml lists (primary, filelists, comps, modules, ...)."""
    try:
        root = ET.fromstring(data)
    except ET.ParseError as e:
        raise RepodataError(f"repomd.xml is not XML: {e}") from None
    if _local(root.tag) != "repomd":
        raise RepodataError("repomd.xml: the root element is not <repomd>")
    out = []
    for el in root:
        if _local(el.tag) != "data":
            continue
        kind = el.get("type", "?")
        href = checksum = algo = size = None
        for child in el:
            name = _local(child.tag)
            if name == "location":
                href = child.get("href")
            elif name == "checksum":
                algo, checksum = child.get("type", ""), (child.text or "").strip().lower()
            elif name == "size":
                size = int((child.text or "0").strip())
        if not href or not checksum:
            raise RepodataError(f"repomd.xml: <data type={kind!r}> has no location or checksum")
        out.append(Wanted(safe_rel(href, f"repomd.xml {kind}"), algo_name(algo, f"repomd.xml {kind}"),
                          checksum, size))
    return out


def primary_href(data: bytes) -> str:
    for el in ET.fromstring(data):
        if _local(el.tag) == "data" and el.get("type") == "primary":
            for child in el:
                if _local(child.tag) == "location":
                    return child.get("href")
    raise RepodataError("repomd.xml lists no primary metadata")


def _open(path: Path) -> IO[bytes]:
    name = path.name
    if name.endswith(".gz"):
        return gzip.open(path, "rb")
    if name.endswith(".xz"):
        return lzma.open(path, "rb")
    if name.endswith(".bz2"):
        return bz2.open(path, "rb")
    if name.endswith(".zst"):
        try:
            import zstandard
        except ImportError:
            raise RepodataError(f"{name}: zstd-compressed metadata needs the zstandard module") from None
        return zstandard.ZstdDecompressor().stream_reader(open(path, "rb"), closefd=True)
    return open(path, "rb")


def iter_packages(primary: Path) -> Iterator[Wanted]:
    """The packages primary metadata lists, with their checksums and sizes."""
    try:
        with _open(primary) as f:
            for _, el in ET.iterparse(f, events=("end",)):
                if _local(el.tag) != "package":
                    continue
                href = algo = digest = size = None
                for child in el:
                    name = _local(child.tag)
                    if name == "location":
                        href = child.get("href")
                        if child.get("{http://www.w3.org/XML/1998/namespace}base"):
                            raise RepodataError(f"primary: {href} lives elsewhere (xml:base); "
                                                "such repositories are not mirrored")
                    elif name == "checksum":
                        algo, digest = child.get("type", ""), (child.text or "").strip().lower()
                    elif name == "size":
                        size = int(child.get("package", "0"))
                el.clear()
                if not href or not digest:
                    raise RepodataError("primary: a package has no location or checksum")
                yield Wanted(safe_rel(href, "primary"), algo_name(algo, f"primary {href}"), digest, size)
    except (ET.ParseError, OSError, EOFError, lzma.LZMAError) as e:
        raise RepodataError(f"{primary.name}: not readable primary metadata: {e}") from None
