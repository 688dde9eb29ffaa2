"""Write every node's kickstart to a directory and say what changed since the last run.

Files are named by MAC (`52-54-00-0c-00-01.ks`), the one thing about a node that does not
change when it is renamed. `index.json` records what this command wrote, so a file it did not
write is never deleted, and a node that left the registry is reported as removed.
"""

from __future__ import annotations

import difflib
import errno
import hashlib
import json
import os
import secrets
import stat
from dataclasses import dataclass, field
from pathlib import Path

from provisioner.macaddr import InvalidMAC, canonical_mac, dashed
from provisioner.registry.db import Registry
from provisioner.render.renderer import Renderer

INDEX = "index.json"


@dataclass
class Change:
    mac: str
    hostname: str
    kind: str               # new | changed | removed
    added: int = 0
    removed: int = 0
    diff: list[str] = field(default_factory=list)

    def describe(self) -> str:
        if self.kind == "changed":
            return f"changed {self.hostname} ({self.mac}): +{self.added} -{self.removed} lines"
        return f"{self.kind} {self.hostname} ({self.mac})"


@dataclass
class Result:
    changes: list[Change]
    unchanged: int
    written: int

    def summary(self) -> str:
        counts = {k: sum(c.kind == k for c in self.changes) for k in ("new", "changed", "removed")}
        return (f"{counts['new']} new, {counts['changed']} changed, {counts['removed']} removed, "
                f"{self.unchanged} unchanged")


def regenerate(registry: Registry, renderer: Renderer, out: Path, *, with_diff: bool = False,
               progress=None) -> Result:
    out.mkdir(parents=True, exist_ok=True)
    index_path = out / INDEX
    index_text = _read_own(index_path)
    old_index: dict = json.loads(index_text) if index_text is not None else {}
    new_index: dict = {}
    changes: list[Change] = []
    unchanged = written = 0
    nodes = registry.list()
    for i, node in enumerate(nodes, 1):
        name = f"{dashed(node.mac)}.ks"
        text = renderer.kickstart(node)
        digest = hashlib.sha256(text.encode()).hexdigest()
        new_index[node.mac] = {"file": name, "hostname": node.hostname, "sha256": digest}
        before = old_index.get(node.mac)
        path = out / name
        if before and before.get("sha256") == digest and _own_file(path):
            unchanged += 1
        else:
            old_text = _read_own(path) if before else None
            if old_text is not None:
                old_lines = old_text.splitlines(keepends=True)
                new_lines = text.splitlines(keepends=True)
                diff = list(difflib.unified_diff(old_lines, new_lines, f"a/{name}", f"b/{name}", n=1))
                added = sum(1 for d in diff if d.startswith("+") and not d.startswith("+++"))
                removed = sum(1 for d in diff if d.startswith("-") and not d.startswith("---"))
                changes.append(Change(node.mac, node.hostname, "changed", added, removed,
                                      diff if with_diff else []))
            else:
                changes.append(Change(node.mac, node.hostname, "new"))
            _write(path, text)
            written += 1
        if progress and (i % 500 == 0 or i == len(nodes)):
            progress(i, len(nodes))
    for mac, entry in old_index.items():
        if mac not in new_index:
            changes.append(Change(mac, entry.get("hostname", "?"), "removed"))
            # the name is rebuilt from the MAC, never taken from the index, so a doctored
            # index.json cannot make this delete anything outside `out`
            try:
                stale = out / f"{dashed(canonical_mac(mac))}.ks"
            except InvalidMAC:
                continue
            if os.path.lexists(stale):     # a symlink there goes too, not what it points to
                stale.unlink()
    _write(index_path, json.dumps(new_index, indent=1, sort_keys=True) + "\n")
    return Result(changes, unchanged, written)


# The kickstarts carry install tokens, and whoever else can write to `out` may plant symlinks
# there. So nothing here follows one: files are opened O_NOFOLLOW, a new file is a temporary of a
# fresh name made O_EXCL (a name someone holds already is skipped, never opened) and renamed into
# place, which replaces a symlink at the target rather than writing where it points.
_OWN = os.O_NOFOLLOW | os.O_NONBLOCK     # NONBLOCK: a FIFO planted at a name must not hang us


def _write(path: Path, text: str) -> None:
    for _ in range(100):
        tmp = _temp_name(path)
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        except FileExistsError:
            continue
        break
    else:
        raise FileExistsError(errno.EEXIST, "no free temporary name next to it", str(path))
    try:
        os.fchmod(fd, 0o600)            # whatever the umask
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _temp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")


def _open_own(path: Path) -> int | None:
    """A read descriptor of `path` if it is a regular file of ours (not a symlink, a FIFO or
    someone else's), made owner-only; None otherwise, and the caller writes it anew."""
    try:
        fd = os.open(path, os.O_RDONLY | _OWN)
    except OSError:                 # missing, a symlink (ELOOP), unreadable
        return None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
        os.close(fd)
        return None
    if stat.S_IMODE(st.st_mode) != 0o600:
        os.fchmod(fd, 0o600)        # left by an older version, or by hand
    return fd


def _own_file(path: Path) -> bool:
    fd = _open_own(path)
    if fd is None:
        return False
    os.close(fd)
    return True


def _read_own(path: Path) -> str | None:
    fd = _open_own(path)
    if fd is None:
        return None
    with os.fdopen(fd, "rb") as f:
        return f.read().decode(errors="replace")
