"""The roles lab's root: debootstrap plus apt, built once per recipe and cached.

The cache holds one directory per key (a hash of the recipe), made under a temporary name and
renamed into place only when complete, so an interrupted build is never booted. A lock per key
lets two processes ask for the same root at once: the second waits and reuses the first's.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from provisioner.lab.roles.recipe import Recipe

DEFAULT_MIRROR = "http://deb.debian.org/debian"
# Bump when the build steps change what ends up in the root for the same recipe.
BUILD_FORMAT = 1
ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8",
       "DEBIAN_FRONTEND": "noninteractive", "HOME": "/root"}


class BuildError(RuntimeError):
    pass


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return Path(base) / "provisioner" / "lab-roles"


def host_mirrors(apt_dir: Path = Path("/etc/apt")) -> tuple[str, str | None]:
    """The Debian archive and security archive this host's apt uses (the only way out we have)."""
    uris = []
    for path in sorted(apt_dir.glob("sources.list.d/*.sources")):
        for line in path.read_text().splitlines():
            if line.startswith("URIs:"):
                uris += line.split()[1:]
    for path in [apt_dir / "sources.list", *sorted(apt_dir.glob("sources.list.d/*.list"))]:
        if path.exists():
            for line in path.read_text().splitlines():
                m = re.match(r"deb\s+(?:\[[^]]*\]\s+)?(\S+)", line)
                if m:
                    uris.append(m.group(1))
    main = next((u.rstrip("/") for u in uris if u.rstrip("/").endswith("/debian")), DEFAULT_MIRROR)
    security = next((u.rstrip("/") for u in uris if u.rstrip("/").endswith("/debian-security")), None)
    return main, security


def cache_key(recipe: Recipe) -> str:
    # the mirror is left out: any Debian mirror serves the same suite
    doc = json.dumps({"format": BUILD_FORMAT, "suite": recipe.suite, "boot": sorted(recipe.boot),
                      "common": sorted(recipe.common), "roles": sorted(recipe.roles),
                      "preseed": recipe.preseed}, sort_keys=True)
    return f"{recipe.suite}-{recipe.name}-{hashlib.sha256(doc.encode()).hexdigest()[:16]}"


def cached_root(recipe: Recipe, cache_dir: Path) -> Path | None:
    root = Path(cache_dir) / cache_key(recipe) / "root"
    return root if root.is_dir() else None


def ensure_root(recipe: Recipe, cache_dir: Path, progress=lambda line: None,
                mirrors: tuple[str, str | None] | None = None) -> Path:
    """The root for `recipe`, built if the cache has none. Returns the root directory."""
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    key = cache_key(recipe)
    final = cache_dir / key
    with open(cache_dir / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (final / "root").is_dir():
            progress(f"root {key}: cached in {final}")
            return final / "root"
        # builds that died under this key: we hold its lock, so nobody is still writing them
        for stale in cache_dir.glob(f".build-{key}-*"):
            _discard(stale)
        build = Path(tempfile.mkdtemp(prefix=f".build-{key}-", dir=cache_dir))
        build.chmod(0o755)      # mkdtemp's 0700 would outlive the rename
        try:
            manifest = _build(recipe, build, mirrors or host_mirrors(), progress)
            manifest["key"] = key
            (build / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
            os.rename(build, final)
        except BaseException:
            _discard(build)
            raise
        progress(f"root {key}: built in {manifest['seconds']['total']:.0f}s")
        return final / "root"


def manifest(root: Path) -> dict:
    return json.loads((Path(root).parent / "manifest.json").read_text())


def _build(recipe: Recipe, build: Path, mirrors: tuple[str, str | None], progress) -> dict:
    root = build / "root"
    log = build / "build.log"
    mirror, security = mirrors
    t0 = time.monotonic()
    seconds = {}

    progress(f"debootstrap {recipe.suite} (minbase) from {mirror}")
    _run(["debootstrap", "--variant=minbase", f"--include={','.join(recipe.boot)}",
          recipe.suite, str(root), mirror], log)
    seconds["debootstrap"] = time.monotonic() - t0

    sources = f"deb {mirror} {recipe.suite} main\ndeb {mirror} {recipe.suite}-updates main\n"
    if security:
        sources += f"deb {security} {recipe.suite}-security main\n"
    (root / "etc/apt/sources.list").write_text(sources)
    # packages' maintainer scripts must not start daemons in the build (on the host's network,
    # with the host's view of /proc); the nodes start them when they boot
    policy = root / "usr/sbin/policy-rc.d"
    policy.write_text("#!/bin/sh\nexit 101\n")
    policy.chmod(0o755)
    (root / "tmp/preseed").write_text(recipe.preseed)
    _in_root(root, ["debconf-set-selections", "/tmp/preseed"], log)

    t = time.monotonic()
    progress(f"apt: {len(recipe.common)} common packages")
    _in_root(root, ["apt-get", "update", "-q"], log)
    missing = _install(root, list(recipe.common), log)
    before = _wanted_links(root)
    disabled: list[str] = []
    if recipe.roles:
        progress(f"apt: {len(recipe.roles)} role packages (this is the long part)")
        missing.update(_install(root, list(recipe.roles), log))
        disabled = sorted({p.name for p in _wanted_links(root) - before})
        if disabled:
            _in_root(root, ["systemctl", "--root=/", "disable", *disabled], log)
    seconds["apt"] = time.monotonic() - t

    _in_root(root, ["apt-get", "clean"], log)
    policy.unlink()
    (root / "tmp/preseed").unlink()
    # each node writes its own identity into its overlay; the shared root must not carry
    # the build host's
    (root / "etc/machine-id").write_text("")
    (root / "etc/resolv.conf").unlink(missing_ok=True)
    (root / "etc/resolv.conf").write_text("")
    (root / "etc/hostname").unlink(missing_ok=True)
    versions = _in_root(root, ["dpkg-query", "-W", "-f", "${Package} ${Version}\\n"], log).stdout
    seconds["total"] = time.monotonic() - t0
    return {"suite": recipe.suite, "recipe": recipe.name, "mirror": mirror, "security": security,
            "packages": {"boot": list(recipe.boot), "common": list(recipe.common), "roles": list(recipe.roles)},
            "missing": missing, "disabled_units": disabled, "seconds": seconds,
            "installed": len(versions.splitlines()), "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def _discard(build: Path) -> None:
    """Delete a build that did not finish, never what is mounted inside it."""
    # debootstrap killed halfway leaves /proc (and maybe /sys, a /dev bind) mounted in the
    # root, and rmtree would walk straight into them
    prefix = str(build.resolve()) + "/"
    with open("/proc/mounts") as f:
        inside = [line.split()[1] for line in f if line.split()[1].startswith(prefix)]
    for mount in sorted(inside, key=len, reverse=True):
        subprocess.run(["umount", "-l", mount], capture_output=True)
    with open("/proc/mounts") as f:
        if any(line.split()[1].startswith(prefix) for line in f):
            return          # leave it; the next build under this key tries again
    shutil.rmtree(build, ignore_errors=True)


def _install(root: Path, packages: list[str], log: Path) -> dict[str, str]:
    """Install `packages`; returns the ones that would not install, each with apt's reason."""
    args = ["apt-get", "install", "-y", "-q", "--no-install-recommends"]
    if _in_root(root, args + packages, log, check=False).returncode == 0:
        return {}
    # one at a time, to name the culprits; the rest still go in
    _in_root(root, ["dpkg", "--configure", "-a"], log, check=False)
    missing = {}
    for pkg in packages:
        if _installed(root, pkg):
            continue
        r = _in_root(root, args + [pkg], log, check=False)
        if r.returncode != 0 or not _installed(root, pkg):
            reason = [ln for ln in r.stdout.splitlines() if ln.startswith(("E:", "dpkg:"))]
            missing[pkg] = " | ".join(reason[-3:]) or f"apt-get exited {r.returncode}"
            _in_root(root, ["apt-get", "purge", "-y", "-q", pkg], log, check=False)
            _in_root(root, ["dpkg", "--configure", "-a"], log, check=False)
    return missing


def _installed(root: Path, pkg: str) -> bool:
    r = subprocess.run(["dpkg-query", f"--admindir={root}/var/lib/dpkg", "-W", "-f", "${Status}", pkg],
                       capture_output=True, text=True)
    return r.stdout.strip() == "install ok installed"


def _wanted_links(root: Path) -> set[Path]:
    # what `systemctl enable` leaves: symlinks in *.wants / *.requires directories
    etc = root / "etc/systemd/system"
    return {p.relative_to(root) for d in etc.glob("*.[wr]*s") if d.is_dir() and d.suffix in (".wants", ".requires")
            for p in d.iterdir() if p.is_symlink()}


def _in_root(root: Path, argv: list[str], log: Path, check: bool = True) -> subprocess.CompletedProcess:
    # nspawn as a chroot: it mounts /proc, /sys and /dev for the maintainer scripts and takes
    # them (and anything a script left running) away when the command ends. It shares the
    # host's network, which apt needs; --resolv-conf copies the host's resolver for the build.
    cmd = ["systemd-nspawn", "-q", "-D", str(root), "--register=no", "--keep-unit", "--pipe",
           "--resolv-conf=copy-host", "--timezone=off", "--link-journal=no"]
    for k, v in ENV.items():
        cmd.append(f"--setenv={k}={v}")
    return _run(cmd + ["--", *argv], log, check=check)


def _run(cmd: list[str], log: Path, check: bool = True) -> subprocess.CompletedProcess:
    with open(log, "a") as out:
        out.write(f"\n$ {' '.join(cmd)}\n")
        out.flush()
        r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           stdin=subprocess.DEVNULL, env={**os.environ, **ENV})
        out.write(r.stdout)
    if check and r.returncode != 0:
        tail = "\n".join(r.stdout.splitlines()[-15:])
        raise BuildError(f"{cmd[0]} failed ({r.returncode}); log {log}:\n{tail}")
    return r
