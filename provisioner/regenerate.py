"""Write every node's kickstart to a directory and say what changed since the last run.

Files are named by MAC (`52-54-00-0c-00-01.ks`), the one thing about a node that does not
change when it is renamed. `index.json` records what this command wrote, so a file it did not
write is never deleted, and a node that left the registry is reported as removed.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from provisioner.macaddr import InvalidMAC, canonical_mac, dashed
from provisioner.registry import Registry
from provisioner.render import Renderer

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
    old_index: dict = json.loads(index_path.read_text()) if index_path.exists() else {}
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
        if before and before.get("sha256") == digest and path.exists():
            unchanged += 1
        else:
            if before and path.exists():
                old_lines = path.read_text().splitlines(keepends=True)
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
            if stale.exists():
                stale.unlink()
    _write(index_path, json.dumps(new_index, indent=1, sort_keys=True) + "\n")
    return Result(changes, unchanged, written)


def _write(path: Path, text: str) -> None:
    # the kickstarts carry install tokens: owner-only, and never half-written
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)
