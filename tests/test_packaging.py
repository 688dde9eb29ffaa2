"""The package as its users get it: a wheel that carries everything the service reads, installed
and run far from this tree; and scripts/bootstrap on a stock Debian, whose python3 refuses
`pip install` outside a virtual environment (PEP 668)."""

import gzip
import hashlib
import io
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import tomllib
import zipfile
from pathlib import Path

import pytest
import requests
import yaml

REPO = Path(__file__).resolve().parent.parent
STOCK_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
DEBIAN_PYTHON = "/usr/bin/python3"
# kept between runs so that a rerun builds no dependency again (libvirt-python is C)
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "provisioner-tests"
CONTROLLER = "52:54:00:0c:00:05"


def _clean_env(**extra) -> dict:
    """This environment without what would let a Python find this tree or another interpreter's
    packages: what runs must find everything in what was installed."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PYTHON", "PROVISIONER_", "PYENV", "VIRTUAL_ENV", "CONDA"))}
    env.update(PATH=STOCK_PATH, **extra)
    return env


def _source_files(*under: str) -> list[str]:
    """The work tree's files as they are now, new ones included (not HEAD: a change to the
    packaging or to bootstrap is tested before it is committed), and none that git ignores: no
    .venv, egg-info, build/."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", "--", *under],
                         cwd=REPO, check=True, capture_output=True).stdout
    # a tracked file someone has just deleted is listed but not there
    return sorted({rel for rel in out.decode().split("\0") if rel and (REPO / rel).is_file()})


def _copy_tree(dest: Path) -> Path:
    for rel in _source_files():
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, dest / rel)
    return dest


def _run(cmd, timeout=600, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    assert proc.returncode == 0, f"{cmd}: status {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """One snapshot of the work tree for the whole module: others edit it while these tests run."""
    return _copy_tree(tmp_path_factory.mktemp("src"))


@pytest.fixture(scope="module")
def wheel(source, tmp_path_factory) -> Path:
    # setuptools writes build/ and egg-info where it builds: in the snapshot, not in the work tree
    out = tmp_path_factory.mktemp("dist")
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(source)])
    [whl] = out.glob("provisioner-*.whl")
    return whl


@pytest.fixture(scope="module")
def wheelhouse(source, wheel) -> Path:
    """Wheels of every dependency, the test extras' and the build backend's too, kept between runs
    and keyed by pyproject.toml and this interpreter: a rerun builds no libvirt-python and asks no
    index."""
    pyproject = (source / "pyproject.toml").read_bytes()
    key = hashlib.sha256(pyproject + sys.version.encode()).hexdigest()[:16]
    house = CACHE / f"wheelhouse-{key}"
    if house.is_dir():
        return house
    CACHE.mkdir(parents=True, exist_ok=True)
    for old in CACHE.glob("wheelhouse-*"):     # pyproject.toml changes: drop what no run wants now
        if time.time() - old.stat().st_mtime > 86400:
            shutil.rmtree(old, ignore_errors=True)
    # built aside and renamed, so that a run cut short, or one beside it, never sees half of it
    part = CACHE / f"wheelhouse-{key}.{os.getpid()}"
    shutil.rmtree(part, ignore_errors=True)
    backend = tomllib.loads(pyproject.decode())["build-system"]["requires"]
    _run([sys.executable, "-m", "pip", "wheel", "-q", "-w", str(part), f"{wheel}[test]", *backend])
    for own in part.glob("provisioner-*.whl"):
        own.unlink()
    try:
        part.rename(house)
    except OSError:
        shutil.rmtree(part)     # another run got there first
    return house


@pytest.fixture(scope="module")
def installed(wheel, wheelhouse, tmp_path_factory) -> Path:
    """A fresh virtual environment holding the wheel and its dependencies, and nothing else:
    not this tree, not the packages of the interpreter running the tests."""
    venv = tmp_path_factory.mktemp("installed") / "venv"
    _run([sys.executable, "-m", "venv", str(venv)])
    _run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-index",
          "--find-links", str(wheelhouse), str(wheel)], env=_clean_env(), cwd=venv)
    return venv


def test_the_wheel_carries_every_file_of_the_package(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert set(_source_files("provisioner")) - names == set()
    assert {"provisioner/site.yaml", "provisioner/hooks/runner.sh", "provisioner/hooks/plan.yaml"} <= names


def test_the_installed_wheel_renders_and_serves_from_outside_the_tree(installed, tmp_path):
    work = tmp_path / "elsewhere"        # the cwd: nothing of the source tree is found from it
    work.mkdir()
    env = _clean_env()
    py = str(installed / "bin" / "python")
    where = _run([py, "-c", "import provisioner; print(provisioner.__file__)"], cwd=work, env=env).stdout
    assert Path(where.strip()).is_relative_to(installed), where

    state = tmp_path / "state"
    ks = _run([str(installed / "bin" / "provisioner"), "--state-dir", str(state), "render", CONTROLLER],
              cwd=work, env=env).stdout
    assert ks.startswith("# Kickstart for controller.cluster.local")
    assert "--vgname=vg_images --name=lv_images" in ks

    # the embedded site, but kickstarts for any address: this test fetches from loopback
    site = yaml.safe_load(_run([py, "-c", "from importlib import resources; "
                                "print(resources.files('provisioner').joinpath('site.yaml').read_text())"],
                               cwd=work, env=env).stdout)
    site.setdefault("security", {})["kickstart_node_address_only"] = False
    site_file = work / "site.yaml"
    site_file.write_text(yaml.safe_dump(site))

    port, boot = _free_port(), _free_port()
    log = open(tmp_path / "serve.log", "w+")
    proc = subprocess.Popen([str(installed / "bin" / "provisioner"), "--state-dir", str(state), "--site",
                             str(site_file), "serve", "--http", f"127.0.0.1:{port}", "--boot",
                             f"127.0.0.1:{boot}", "--no-tftp"],
                            cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{boot}"
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, log.seek(0) or log.read()
            try:
                if requests.get(f"{base}/hosts", timeout=2).ok:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, "the boot server never answered"
            time.sleep(0.2)

        served = requests.get(f"{base}/ks/{CONTROLLER}", timeout=10)
        assert served.status_code == 200, served.text
        assert served.text.startswith("# Kickstart for controller.cluster.local")
        pxe = requests.get(f"{base}/pxelinux.cfg/01-{CONTROLLER.replace(':', '-')}", timeout=10)
        assert pxe.status_code == 200 and pxe.text.strip()
        hooks = requests.get(f"{base}/hooks.tar.gz", timeout=10)
        assert hooks.status_code == 200
        with tarfile.open(fileobj=io.BytesIO(gzip.decompress(hooks.content))) as tar:
            names = set(tar.getnames())
        assert {"runner.sh", "plan.yaml"} <= names, sorted(names)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture(scope="module")
def stock(source, wheelhouse):
    """A snapshot of the work tree bootstrapped as a stock Debian would (PATH without pyenv or any
    venv), in a directory others may enter (for the unprivileged run), and that run's environment."""
    top = Path(tempfile.mkdtemp(prefix="provisioner-bootstrap-"))
    top.chmod(0o755)
    repo = top / "repo"
    shutil.copytree(source, repo, ignore=shutil.ignore_patterns("build", "*.egg-info"))
    # where pip gets packages is no part of what is tested: the wheelhouse when its wheels are for
    # Debian's Python, else the machine's own pip configuration (index, certificates)
    debian = _run([DEBIAN_PYTHON, "-c", "import sys; print(*sys.version_info[:2])"]).stdout.split()
    same = debian == [str(n) for n in sys.version_info[:2]]
    env = _clean_env(**({"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(wheelhouse)} if same else {}))
    first = subprocess.run(["bash", "scripts/bootstrap"], cwd=repo, env=env, capture_output=True, text=True,
                           timeout=900)
    yield repo, env, first
    shutil.rmtree(top, ignore_errors=True)


def test_bootstrap_works_on_stock_debian(stock, tmp_path):
    repo, env, first = stock
    # the premise: in a stock PATH python3 is Debian's, and Debian's refuses pip installs
    assert shutil.which("python3", path=STOCK_PATH) == DEBIAN_PYTHON
    stdlib = _run([DEBIAN_PYTHON, "-c", "import sysconfig; print(sysconfig.get_path('stdlib'))"]).stdout
    assert (Path(stdlib.strip()) / "EXTERNALLY-MANAGED").is_file()
    # pip as Debian ships it, no configuration; --dry-run so that, were it not refused, nothing
    # would land in the system's site-packages
    refused = subprocess.run([DEBIAN_PYTHON, "-m", "pip", "install", "--dry-run", "--no-deps", "."],
                             cwd=repo, capture_output=True, text=True, timeout=300,
                             env=_clean_env(PIP_CONFIG_FILE=os.devnull))
    assert refused.returncode != 0 and "externally-managed-environment" in refused.stderr, refused.stderr

    assert first.returncode == 0, first.stdout + first.stderr
    venv = repo / ".venv"
    base = _run([str(venv / "bin" / "python"), "-c", "import sys; print(sys.base_prefix)"], env=env).stdout
    assert base.strip() == "/usr"
    assert "Usage: provisioner" in _run([str(venv / "bin" / "provisioner"), "--help"],
                                        cwd=tmp_path, env=env).stdout
    where = _run([str(venv / "bin" / "python"), "-c", "import provisioner; print(provisioner.__file__)"],
                 cwd=tmp_path, env=env).stdout
    assert Path(where.strip()) == repo / "provisioner" / "__init__.py"   # editable: the copy's code

    # again: nothing to do, and it does nothing
    stamp = venv / ".bootstrap-stamp"
    before = stamp.stat().st_mtime_ns
    again = _run(["bash", "scripts/bootstrap"], cwd=repo, env=env, timeout=120)
    assert again.stderr == "" and stamp.stat().st_mtime_ns == before
    # pyproject.toml changed: installed again
    with open(repo / "pyproject.toml", "a") as f:
        f.write("# changed\n")
    _run(["bash", "scripts/bootstrap"], cwd=repo, env=env, timeout=300)
    assert stamp.stat().st_mtime_ns != before
    assert hashlib.sha256((repo / "pyproject.toml").read_bytes()).hexdigest() in stamp.read_text()


def test_bootstrap_as_a_user_asks_sudo_for_what_is_missing(stock):
    """As a user, not root: apt-get through sudo (with the environment it needs passed through
    sudo's reset), a clear error without sudo, and the user's venv left as it is."""
    repo, env, first = stock
    assert first.returncode == 0, first.stdout + first.stderr
    if os.geteuid() != 0:
        pytest.skip("needs root to run the script as another user")
    top = repo.parent
    shims = {name: top / "shims" / name for name in ("dpkg", "sudo")}
    for d in shims.values():
        d.mkdir(parents=True)
    # python3-venv "missing", so that the script has something to install; the rest as it is
    (shims["dpkg"] / "dpkg-query").write_text(
        '#!/bin/sh\nfor a; do last=$a; done\n[ "$last" = python3-venv ] && exit 1\nexec /usr/bin/dpkg-query "$@"\n')
    # a sudo that only notes what it was asked: no test installs Debian packages
    home = top / "home"
    (shims["sudo"] / "sudo").write_text(f'#!/bin/sh\necho "$*" >>{home}/sudo.log\n')
    for d in shims.values():
        next(d.iterdir()).chmod(0o755)
    nobody = 65534
    home.mkdir()
    subprocess.run(["chown", "-R", f"{nobody}:{nobody}", str(repo), str(home)], check=True)
    as_user = ["setpriv", f"--reuid={nobody}", f"--regid={nobody}", "--clear-groups", "bash", "scripts/bootstrap"]
    user_env = {**env, "HOME": str(home)}

    if not shutil.which("sudo", path=STOCK_PATH):
        no_sudo = subprocess.run(as_user, cwd=repo, capture_output=True, text=True, timeout=120,
                                 env={**user_env, "PATH": f"{shims['dpkg']}:{STOCK_PATH}"})
        assert no_sudo.returncode == 1
        assert "bootstrap: missing python3-venv; run me as root or install sudo" in no_sudo.stderr

    stamp = repo / ".venv" / ".bootstrap-stamp"
    before = stamp.stat().st_mtime_ns
    _run(as_user, cwd=repo, timeout=120, env={**user_env, "PATH": f"{shims['sudo']}:{shims['dpkg']}:{STOCK_PATH}"})
    asked = (home / "sudo.log").read_text().splitlines()
    assert asked == ["apt-get update -qq",
                     "env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv"]
    assert stamp.stat().st_mtime_ns == before
