"""`provisioner mirror sync`: copy the install tree and the site's repos from os.mirror, verified.

Sync ahead, not pull-through (README, "Mirror"): the nodes have no route out while they install,
so a cache that fetches on a miss would fail exactly when a node first asks.

What is checked, in order: .treeinfo's [checksums] for the images; repomd.xml's checksum of each
metadata file it lists; primary's checksum of each package. A file is downloaded to
partial/<path>, hashed, and renamed into pub/ only if it matches; a mismatch is deleted there and
then. A download cut short stays in partial/ and the next run asks for the rest (Range), or starts
it again if the server will not resume. A repo's repomd.xml (a tree's .treeinfo) goes into pub/
last, and only when every file it names is there: the nodes see the old consistent copy, or the
new one, never a repomd.xml naming a package that is not there yet.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable
from urllib.parse import urljoin

import requests

from provisioner.config import Site
from provisioner.mirror import layout
from provisioner.mirror.repodata import RepodataError, Wanted, iter_packages, parse_repomd, parse_treeinfo, primary_href

CHUNK = 1024 * 1024                 # hashing
STREAM_CHUNK = 64 * 1024            # downloading: what a dropped connection loses of a partial
SMALL_MAX = 16 * 1024 * 1024       # repomd.xml, .treeinfo: read whole, so bounded
TIMEOUT = (10, 60)                  # connect, and silence between bytes
PROGRESS_EVERY = 0.5                # seconds between progress lines


class SyncError(Exception):
    """The sync could not start (the mirror is off, or the state directory is not writable)."""


@dataclass
class Failure:
    source: str
    path: str       # below os.mirror
    reason: str

    def __str__(self) -> str:
        return f"{self.source}: {self.path}: {self.reason}"


@dataclass
class SyncResult:
    failures: list[Failure] = field(default_factory=list)
    fetched: int = 0            # files downloaded and verified this run
    present: int = 0            # files already in the mirror, verified earlier
    bytes: int = 0
    sources: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures


class _Failed(Exception):
    pass


class _Transient(_Failed):
    """Worth one more try in this run (the connection dropped, the server said 5xx)."""


class _Progress:
    """Counts for the source being synced; prints a line at most every PROGRESS_EVERY seconds
    from whichever thread is there, and always one at the end."""

    def __init__(self, echo: Callable[[str], None]):
        self.echo = echo
        self.lock = threading.Lock()
        self.last = 0.0
        self.start("")

    def start(self, label: str, total: int = 0) -> None:
        self.label, self.total, self.fetched, self.present, self.failed, self.bytes = label, total, 0, 0, 0, 0

    def add(self, total: int) -> None:
        with self.lock:
            self.total += total

    def count(self, what: str) -> None:
        with self.lock:
            setattr(self, what, getattr(self, what) + 1)
        self.tick()

    def add_bytes(self, n: int) -> None:
        with self.lock:
            self.bytes += n
        self.tick()

    def tick(self, force: bool = False) -> None:
        with self.lock:
            now = time.monotonic()
            if not force and now - self.last < PROGRESS_EVERY:
                return
            self.last = now
            line = (f"{self.label}: {self.fetched + self.present + self.failed}/{self.total} files, "
                    f"{self.fetched} fetched ({_size(self.bytes)}), {self.present} already here, "
                    f"{self.failed} failed")
        self.echo(line)


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _hash_file(path: Path, algo: str) -> str:
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


class Syncer:
    def __init__(self, site: Site, state_dir: Path, echo: Callable[[str], None] = print,
                 verify: bool = False, concurrency: int | None = None):
        self.site = site
        self.pub = layout.pub_dir(state_dir)
        self.partial = layout.partial_dir(state_dir)
        self.manifest_path = layout.manifest_path(state_dir)
        self.verify = verify        # hash every file already here, not only the unrecorded ones
        self.concurrency = concurrency or site.mirror.concurrency
        self.progress = _Progress(echo)
        self.echo = echo
        self.result = SyncResult()
        self._local = threading.local()
        self._lock = threading.Lock()
        self.manifest: dict[str, str] = {}

    # -- the whole run ---------------------------------------------------------------------------

    def run(self) -> SyncResult:
        for d in (self.pub, self.partial):
            try:
                d.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise SyncError(f"{d}: {e.strerror}") from None
        self.manifest = self._load_manifest()
        session = self._session()
        try:
            with ThreadPoolExecutor(self.concurrency, thread_name_prefix="mirror") as pool:
                self.pool = pool
                repos = self._tree(self.site.install_tree, session)
                seen = {url for _, url in repos}
                for r in self.site.repos:
                    if r.baseurl not in seen:
                        repos.append((r.name, r.baseurl))
                        seen.add(r.baseurl)
                for label, url in repos:
                    self._repo(label, url, session)
        finally:
            self._save_manifest()
        return self.result

    # -- a tree and a repo -----------------------------------------------------------------------

    def _tree(self, url: str, session: requests.Session) -> list[tuple[str, str]]:
        """The tree's images; answers the repos it names (BaseOS itself, AppStream next to it)."""
        label = "install tree"
        self.progress.start(label)
        self.result.sources.append(label)
        rel_root = layout.upstream_rel(self.site, url)
        try:
            text = self._small(session, url + ".treeinfo")
            info = parse_treeinfo(text.decode())
        except (_Failed, RepodataError, UnicodeDecodeError) as e:
            self._fail(label, rel_root + ".treeinfo", str(e))
            return [(label, url)]
        ok = self._files(label, url, rel_root, info.files)
        if ok:
            self._commit(rel_root + ".treeinfo", text)
        repos = []
        for variant, path in info.repositories:
            repo_url = url if path.strip("/") == "." else urljoin(url, path.rstrip("/") + "/")
            try:
                layout.upstream_rel(self.site, repo_url)
            except ValueError:
                self.echo(f"{label}: variant {variant} at {repo_url} is outside os.mirror; not mirrored")
                continue
            repos.append((variant, repo_url))
        self.progress.tick(force=True)
        return repos or [("install tree", url)]

    def _repo(self, label: str, url: str, session: requests.Session) -> None:
        self.progress.start(label)
        self.result.sources.append(label)
        rel_root = layout.upstream_rel(self.site, url)
        try:
            repomd = self._small(session, url + "repodata/repomd.xml")
            metadata = parse_repomd(repomd)
            primary = primary_href(repomd)
        except (_Failed, RepodataError) as e:
            self._fail(label, rel_root + "repodata/repomd.xml", str(e))
            self.progress.tick(force=True)
            return
        ok = self._files(label, url, rel_root, metadata)
        if ok:
            try:
                packages = list(iter_packages(self.pub / (rel_root + primary)))
            except RepodataError as e:
                self._fail(label, rel_root + primary, str(e))
                ok = False
            else:
                ok = self._files(label, url, rel_root, packages)
        if ok:
            self._commit(rel_root + "repodata/repomd.xml", repomd)
        self.progress.tick(force=True)

    def _files(self, label: str, base_url: str, rel_root: str, wanted: list[Wanted]) -> bool:
        """Every file in place and verified, `concurrency` at a time; False if any failed."""
        self.progress.add(len(wanted))
        futures = {self.pool.submit(self._ensure, base_url, rel_root, w): w for w in wanted}
        ok = True
        for f in as_completed(futures):
            w = futures[f]
            try:
                what = f.result()
            except _Failed as e:
                self._fail(label, rel_root + w.rel, str(e))
                ok = False
            except OSError as e:
                self._fail(label, rel_root + w.rel, f"{e.strerror or e}")
                ok = False
            else:
                self.progress.count(what)
                with self._lock:
                    if what == "fetched":
                        self.result.fetched += 1
                    else:
                        self.result.present += 1
        return ok

    def _fail(self, label: str, path: str, reason: str) -> None:
        with self._lock:
            self.result.failures.append(Failure(label, path, reason))
        self.progress.count("failed")

    # -- one file --------------------------------------------------------------------------------

    def _ensure(self, base_url: str, rel_root: str, w: Wanted) -> str:
        rel = rel_root + w.rel
        final = self.pub / rel
        if final.is_file():
            with self._lock:
                recorded = self.manifest.get(rel)
            if (not self.verify and recorded == w.key
                    and (w.size is None or final.stat().st_size == w.size)):
                return "present"
            # not recorded (a run killed before it wrote verified.json) or changed upstream
            if _hash_file(final, w.algo) == w.digest:
                self._record(rel, w.key)
                return "present"
        part = self.partial / rel
        part.parent.mkdir(parents=True, exist_ok=True)
        url = base_url + w.rel
        for attempt in (1, 2):
            try:
                self._download(url, part, w.size)
                break
            except _Transient:
                if attempt == 2:
                    raise
        got = _hash_file(part, w.algo)
        size = part.stat().st_size
        if got != w.digest or (w.size is not None and size != w.size):
            part.unlink()
            said = f"{w.algo} {w.digest}" + (f", {w.size} bytes" if w.size is not None else "")
            raise _Failed(f"verification failed: {w.algo} {got}, {size} bytes; the repository says "
                          f"{said}; not kept")
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(part, final)
        self._record(rel, w.key)
        return "fetched"

    def _download(self, url: str, part: Path, size: int | None, again: bool = False) -> None:
        offset = part.stat().st_size if part.exists() else 0
        if size is not None and offset >= size:
            if offset == size:
                return          # whole already (a run stopped before it verified it)
            part.unlink()
            offset = 0
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        session = self._session()
        try:
            with session.get(url, headers=headers, stream=True, timeout=TIMEOUT) as r:
                if r.status_code == 206 and offset and r.headers.get("Content-Range", "").startswith(f"bytes {offset}-"):
                    mode = "ab"
                elif r.status_code == 200:
                    mode, offset = "wb", 0      # no resume from this server: from the start
                elif r.status_code == 416 and offset and not again:
                    part.unlink()               # the partial is not a prefix of what is there now
                    r.close()
                    return self._download(url, part, size, again=True)
                elif r.status_code >= 500:
                    raise _Transient(f"HTTP {r.status_code} from {url}")
                else:
                    raise _Failed(f"HTTP {r.status_code} from {url}")
                got = offset
                with open(part, mode) as f:
                    for chunk in r.iter_content(STREAM_CHUNK):
                        got += len(chunk)
                        if size is not None and got > size:
                            f.close()
                            part.unlink()
                            raise _Failed(f"more than the {size} bytes the repository says; not kept")
                        f.write(chunk)
                        self.progress.add_bytes(len(chunk))
                        with self._lock:
                            self.result.bytes += len(chunk)
        except requests.RequestException as e:
            have = part.stat().st_size if part.exists() else 0
            raise _Transient(f"download stopped at {have} bytes ({type(e).__name__}); "
                             "the next sync resumes it") from None

    def _small(self, session: requests.Session, url: str) -> bytes:
        try:
            with session.get(url, stream=True, timeout=TIMEOUT) as r:
                if r.status_code != 200:
                    raise _Failed(f"HTTP {r.status_code} from {url}")
                data = b""
                for chunk in r.iter_content(CHUNK):
                    data += chunk
                    if len(data) > SMALL_MAX:
                        raise _Failed(f"{url}: over {SMALL_MAX} bytes")
                return data
        except requests.RequestException as e:
            raise _Failed(f"{url}: {e}") from None

    def _commit(self, rel: str, data: bytes) -> None:
        part = self.partial / rel
        part.parent.mkdir(parents=True, exist_ok=True)
        part.write_bytes(data)
        final = self.pub / rel
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(part, final)

    # -- bookkeeping -----------------------------------------------------------------------------

    def _session(self) -> requests.Session:
        # requests does not promise a Session is safe across threads: one each
        s = getattr(self._local, "session", None)
        if s is None:
            s = self._local.session = requests.Session()
        return s

    def _record(self, rel: str, key: str) -> None:
        with self._lock:
            self.manifest[rel] = key

    def _load_manifest(self) -> dict[str, str]:
        try:
            data = json.loads(self.manifest_path.read_text())
            return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}       # only a shortcut: without it, files already here are hashed again

    def _save_manifest(self) -> None:
        tmp = self.manifest_path.with_name(self.manifest_path.name + ".tmp")
        with self._lock:
            tmp.write_text(json.dumps(self.manifest, sort_keys=True))
        os.replace(tmp, self.manifest_path)


def sync(site: Site, state_dir: Path, echo: Callable[[str], None] = print, verify: bool = False,
         concurrency: int | None = None) -> SyncResult:
    """Bring the mirror up to date with os.mirror; the result lists every file that failed."""
    if not site.mirror.enabled:
        raise SyncError("the site's mirror is off (mirror: {enabled: true} turns it on)")
    return Syncer(site, state_dir, echo, verify, concurrency).run()
