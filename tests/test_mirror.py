"""The local mirror: sync from an upstream the test builds and serves on loopback (real RPMs from
rpmbuild, real repodata from createrepo_c, a .treeinfo tree), verified, resumable; served by the
boot server's table; and the kickstarts and loader configs then name only the service.

Nothing here talks to any address but 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import http.server
import os
import re
import shutil
import subprocess
import threading
from dataclasses import replace
from importlib import resources
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from conftest import make_tree
from provisioner.app import create_app
from provisioner.cli import main
from provisioner.config import ConfigError, parse_site
from provisioner.render.kscheck import check_kickstart
from provisioner.mirror import served_file, sync
from provisioner.mirror import layout

pytestmark = pytest.mark.skipif(not (shutil.which("rpmbuild") and shutil.which("createrepo_c")),
                                reason="needs rpmbuild and createrepo_c (scripts/bootstrap installs them)")

TREE = "9-stream/BaseOS/x86_64/os/"
APPSTREAM = "9-stream/AppStream/x86_64/os/"
SIG = "SIGs/9-stream/cloud/x86_64/openstack-epoxy/"
PACKAGES = {TREE: ["tiny-base-a", "tiny-base-b"], APPSTREAM: ["tiny-app-a", "tiny-app-b", "tiny-app-c"],
            SIG: ["tiny-cloud-a"]}


# -- the upstream ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def rpms(tmp_path_factory) -> dict[str, Path]:
    """One small real RPM per name, with 256 KiB of random payload each (so a cut download has
    something to resume)."""
    top = tmp_path_factory.mktemp("rpmbuild")
    out = {}
    for name in sum(PACKAGES.values(), []):
        spec = top / f"{name}.spec"
        spec.write_text(f"""Name: {name}
Version: 1.0
Release: 1
Summary: a test package
License: MIT
BuildArch: noarch
%description
A test package for the mirror tests.
%install
mkdir -p %{{buildroot}}/usr/share/{name}
head -c 262144 /dev/urandom > %{{buildroot}}/usr/share/{name}/blob
%files
/usr/share/{name}/blob
""")
        subprocess.run(["rpmbuild", "-bb", "--quiet", "--define", f"_topdir {top}",
                        "--define", "_binary_payload w0.ufdio", str(spec)],
                       check=True, capture_output=True)
        out[name] = next((top / "RPMS" / "noarch").glob(f"{name}-1.0-1*.rpm"))
    return out


def build_upstream(root: Path, rpms: dict[str, Path]) -> Path:
    """os.mirror's layout: the BaseOS tree (.treeinfo naming itself and AppStream as variants,
    the PXE images and install.img), AppStream, one SIG repo; each with createrepo_c's repodata."""
    tree = make_tree(root / TREE)
    install_img = b"stage2" * 50_000
    (tree / "images" / "install.img").write_bytes(install_img)
    with open(tree / ".treeinfo", "a") as f:
        f.write(f"images/install.img = sha256:{hashlib.sha256(install_img).hexdigest()}\n\n"
                "[variant-AppStream]\nid = AppStream\nrepository = ../../../AppStream/x86_64/os\n\n"
                "[variant-BaseOS]\nid = BaseOS\nrepository = .\n")
    for repo, names in PACKAGES.items():
        pkgs = root / repo / "Packages"
        pkgs.mkdir(parents=True, exist_ok=True)
        for n in names:
            shutil.copy(rpms[n], pkgs / rpms[n].name)
        subprocess.run(["createrepo_c", "--quiet", str(root / repo)], check=True, capture_output=True)
    return root


class Upstream:
    """A static server with Range, recording what is asked; it can serve a package corrupted,
    or cut the connection half-way through a package after `cut_after` whole ones."""

    def __init__(self, root: Path):
        self.root = root
        self.requests: list[tuple[str, str | None]] = []
        self.corrupt: set[str] = set()
        self.cut_after: int | None = None
        self.rpms_served = 0
        self.lock = threading.Lock()
        upstream = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_GET(self):
                path = self.path.split("?")[0]
                rng = self.headers.get("Range")
                with upstream.lock:
                    upstream.requests.append((path, rng))
                    cut = False
                    if path.endswith(".rpm") and upstream.cut_after is not None:
                        if upstream.rpms_served >= upstream.cut_after + 1:
                            self.send_error(503)
                            return
                        upstream.rpms_served += 1
                        cut = upstream.rpms_served == upstream.cut_after + 1
                from urllib.parse import unquote
                file = (upstream.root / unquote(path).lstrip("/")).resolve()
                if not file.is_relative_to(upstream.root.resolve()) or not file.is_file():
                    self.send_error(404)
                    return
                data = file.read_bytes()
                if path in upstream.corrupt:
                    data = data[:-1] + bytes([data[-1] ^ 0xFF])
                status, start = 200, 0
                m = re.fullmatch(r"bytes=(\d+)-", rng or "")
                if m and int(m.group(1)) < len(data):
                    status, start = 206, int(m.group(1))
                self.send_response(status)
                self.send_header("Content-Length", str(len(data) - start))
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.end_headers()
                body = data[start:]
                if cut:     # half the body, then the connection drops
                    self.wfile.write(body[:len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                self.wfile.write(body)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def rpm_requests(self) -> list[tuple[str, str | None]]:
        return [r for r in self.requests if r[0].endswith(".rpm")]


@pytest.fixture
def upstream(tmp_path, rpms):
    up = Upstream(build_upstream(tmp_path / "upstream", rpms))
    yield up
    up.server.shutdown()
    up.server.server_close()


def site_data(mirror: str, **mirror_section) -> dict:
    data = yaml.safe_load(resources.files("provisioner").joinpath("site.yaml").read_text())
    data["os"]["mirror"] = mirror
    data["os"]["repos"] = [{"name": "AppStream", "baseurl": "{mirror}/{version}-stream/AppStream/{arch}/os/"},
                           {"name": "openstack", "baseurl": "{mirror}/SIGs/{version}-stream/cloud/{arch}/"
                                                            "openstack-{openstack_release}/"}]
    data["mirror"] = {"enabled": True, **mirror_section}
    return data


@pytest.fixture
def mirror_site(upstream):
    return parse_site(site_data(upstream.url, concurrency=3))


def every_upstream_file(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def run_cli(state_dir: Path, site_path: Path) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["--state-dir", str(state_dir), "--site", str(site_path),
                                       "mirror", "sync"])
    return result.exit_code, result.output


# -- sync --------------------------------------------------------------------------------------

def test_sync_copies_and_verifies_the_tree_and_every_repo(upstream, mirror_site, state_dir):
    lines = []
    result = sync(mirror_site, state_dir, echo=lines.append)
    assert result.ok, result.failures
    pub = layout.pub_dir(state_dir)
    want = every_upstream_file(upstream.root)
    assert every_upstream_file(pub) == want        # byte for byte, the layout kept
    assert result.fetched == len(want) - 3 - 1      # less the three repomd.xml and the .treeinfo
    assert not any(layout.partial_dir(state_dir).rglob("*.rpm"))
    # a line per source, each ending with its counts
    for label in ("install tree", "BaseOS", "AppStream", "openstack"):
        assert any(line.startswith(f"{label}: ") for line in lines), lines
    assert any(re.fullmatch(r"AppStream: \d+/\d+ files, \d+ fetched \(.*\), 0 already here, 0 failed", line)
               for line in lines), lines

    # a second run asks only for the indexes: everything they name is here and verified
    upstream.requests.clear()
    again = sync(mirror_site, state_dir, echo=lambda _: None)
    assert again.ok and again.fetched == 0 and again.present == result.fetched
    assert sorted(p for p, _ in upstream.requests) == sorted(
        ["/" + TREE + ".treeinfo"] + [f"/{r}repodata/repomd.xml" for r in PACKAGES])


def test_a_corrupted_package_is_refused_not_kept_and_named(upstream, mirror_site, state_dir, tmp_path, rpms):
    bad = f"/{APPSTREAM}Packages/{rpms['tiny-app-b'].name}"
    upstream.corrupt.add(bad)
    site_path = tmp_path / "site.yaml"
    site_path.write_text(yaml.safe_dump(site_data(upstream.url)))
    code, output = run_cli(state_dir, site_path)
    assert code == 1
    assert f"failed: AppStream: {bad[1:]}: verification failed: sha256" in output
    assert "not kept" in output
    name = rpms["tiny-app-b"].name
    assert not any(layout.root(state_dir).rglob(name))          # neither served nor partial
    # the repo whose package failed keeps no repomd.xml (no node is told of a missing package);
    # the others are complete
    pub = layout.pub_dir(state_dir)
    assert not (pub / APPSTREAM / "repodata" / "repomd.xml").exists()
    assert (pub / SIG / "repodata" / "repomd.xml").is_file()
    assert (pub / TREE / ".treeinfo").is_file()
    # fixed upstream: the next run fetches that one package and commits the repo
    upstream.corrupt.clear()
    upstream.requests.clear()
    code, output = run_cli(state_dir, site_path)
    assert code == 0, output
    assert [p for p, _ in upstream.rpm_requests()] == [bad]
    assert (pub / APPSTREAM / "repodata" / "repomd.xml").is_file()


def test_an_interrupted_sync_is_resumed_fetching_only_the_rest(upstream, mirror_site, state_dir):
    upstream.cut_after = 2          # two packages whole, the third cut half-way, then 503s
    first = sync(mirror_site, state_dir, echo=lambda _: None)
    assert not first.ok
    got_first = [p for p, _ in upstream.rpm_requests()]
    whole, cut = got_first[:2], got_first[2]
    part = layout.partial_dir(state_dir) / cut.lstrip("/")
    assert 0 < part.stat().st_size < (upstream.root / cut.lstrip("/")).stat().st_size
    assert not (layout.pub_dir(state_dir) / cut.lstrip("/")).exists()
    # as if the first run had been killed: its record of what it verified is gone too
    layout.manifest_path(state_dir).unlink()

    upstream.cut_after = None
    upstream.requests.clear()
    second = sync(mirror_site, state_dir, echo=lambda _: None)
    assert second.ok, second.failures
    asked = upstream.rpm_requests()
    all_rpms = {f"/{repo}Packages/{p.name}" for repo in PACKAGES for p in (upstream.root / repo / "Packages").iterdir()}
    assert {p for p, _ in asked} == all_rpms - set(whole)       # nothing fetched twice
    assert len(asked) == len(all_rpms) - 2
    resumed = [r for p, r in asked if p == cut]
    assert resumed and resumed[0] and resumed[0].startswith("bytes=") and resumed[0] != "bytes=0-"
    assert every_upstream_file(layout.pub_dir(state_dir)) == every_upstream_file(upstream.root)


def test_a_partial_that_does_not_match_is_dropped_not_served(upstream, mirror_site, state_dir, rpms):
    rel = f"{SIG}Packages/{rpms['tiny-cloud-a'].name}"
    part = layout.partial_dir(state_dir) / rel
    part.parent.mkdir(parents=True)
    part.write_bytes(b"garbage from an earlier upstream")
    result = sync(mirror_site, state_dir, echo=lambda _: None)
    # the resumed download hashes wrong: dropped; the next run starts it afresh
    assert [f.path for f in result.failures] == [rel]
    assert not part.exists()
    assert sync(mirror_site, state_dir, echo=lambda _: None).ok
    assert (layout.pub_dir(state_dir) / rel).read_bytes() == (upstream.root / rel).read_bytes()


# -- serving -----------------------------------------------------------------------------------

def test_the_boot_server_serves_the_mirror_and_nothing_beside_it(upstream, mirror_site, state_dir, rpms):
    assert sync(mirror_site, state_dir, echo=lambda _: None).ok
    app = create_app(state_dir, mirror_site)
    node_http = app.extensions["provisioner"].node_http
    rel = f"{APPSTREAM}Packages/{rpms['tiny-app-a'].name}"
    reply = node_http.answer("GET", f"/mirror/{rel}")
    assert reply.status == 200 and reply.path.read_bytes() == (upstream.root / rel).read_bytes()
    assert node_http.answer("GET", f"/mirror/{TREE}images/install.img").path is not None
    (layout.partial_dir(state_dir) / "x.rpm").write_bytes(b"x")
    (state_dir / "outside").write_text("secret")
    for path in ("/mirror/../partial/x.rpm", "/mirror/../../outside", "/mirror//etc/passwd",
                 f"/mirror/{TREE}", "/mirror/../verified.json", "/mirror/%2e%2e/partial/x.rpm"):
        assert node_http.answer("GET", path).status == 404, path
    os.symlink(state_dir / "outside", layout.pub_dir(state_dir) / "link")
    assert node_http.answer("GET", "/mirror/link").status == 404
    assert served_file(state_dir, "/mirror/link") is None
    app.extensions["provisioner"].registry.close()

    off = create_app(state_dir / "off", replace(mirror_site, mirror=replace(mirror_site.mirror, enabled=False)))
    assert off.extensions["provisioner"].node_http.answer("GET", f"/mirror/{rel}").status == 404
    off.extensions["provisioner"].registry.close()


# -- what the nodes are told -------------------------------------------------------------------

NODES = ["52:54:00:0c:00:01", "52:54:00:0c:00:02", "52:54:00:0c:00:05"]


def test_kickstarts_and_loader_configs_name_only_the_service(app, client, site, imported):
    """The embedded site has the mirror on: every URL a node is given is the boot server's."""
    assert site.mirror.enabled and "mirror.stream.centos.org" in site.install_tree
    service_hosts = {"192.168.0.254"}
    ctx = app.extensions["provisioner"]
    mirror = f"{site.boot_url}/mirror/"
    for mac in NODES:
        ks = client.get(f"/ks/{mac}").get_data(as_text=True)
        h = check_kickstart(ks).handler
        assert h.url.url == mirror + TREE
        assert {r.name: r.baseurl for r in h.repo.dataList()} == {
            r.name: mirror + r.baseurl.split("mirror.stream.centos.org/", 1)[1] for r in site.repos}
        # the installed system's repos: the same copies, dnf told to read only them
        assert "cat > /etc/provisioner/yum.repos.d/provisioner-mirror.repo <<'REPOS'" in ks
        assert f"[install-tree]\nname=CentOS Stream 9 install tree (mirror)\nbaseurl={mirror}{TREE}\n" in ks
        for r in site.repos:
            assert f"[{r.name}]\n" in ks
        assert "reposdir=/etc/provisioner/yum.repos.d" in ks
        configs = [ctx.boot.render(kind, mac, "test", "test").text for kind in ("pxelinux", "grub", "ipxe")]
        for text in [ks] + configs:
            assert "mirror.stream.centos.org" not in text
            hosts = set(re.findall(r"https?://([^/:\s'\"]+)", text))
            assert hosts <= service_hosts, hosts
        for text in configs:
            assert f"inst.repo={mirror}{TREE}" in text


def test_mirror_repos_is_the_context_for_post(app, site):
    ctx = app.extensions["provisioner"]
    node = ctx.registry.find("52:54:00:0c:00:02")
    context = ctx.renderer.kickstart_context(node)
    assert context["mirror_url"] == f"{site.boot_url}/mirror"
    assert [r["id"] for r in context["mirror_repos"]] == ["install-tree"] + [r.name for r in site.repos]
    assert all(r["baseurl"].startswith(context["mirror_url"] + "/") for r in context["mirror_repos"])


def test_with_the_mirror_off_the_nodes_go_upstream(state_dir):
    data = site_data("http://mirror.stream.centos.org", enabled=False)
    data["network"]["nameservers"] = ["192.168.0.254"]
    off = replace(parse_site(data), kickstart_node_address_only=False)
    app = create_app(state_dir, off)
    ctx = app.extensions["provisioner"]
    node = ctx.registry.find("52:54:00:0c:00:02")
    ks = ctx.renderer.kickstart(node)
    assert check_kickstart(ks).handler.url.url == off.install_tree
    assert "provisioner-mirror.repo" not in ks and "reposdir" not in ks
    assert f"inst.repo={off.install_tree}" in ctx.boot.kernel_args(node)
    ctx.registry.close()


# -- site validation ---------------------------------------------------------------------------

def test_a_host_name_source_without_nameservers_is_refused_unless_the_mirror_is_on():
    data = site_data("http://mirror.stream.centos.org", enabled=False)
    with pytest.raises(ConfigError, match=r"^os\.install_tree: http://mirror\.stream\.centos\.org/9-stream/"
                                          r"BaseOS/x86_64/os/ names the host mirror\.stream\.centos\.org.*"
                                          r"network\.nameservers is empty"):
        parse_site(data)
    data["os"]["install_tree"] = "http://192.0.2.10/BaseOS/"
    with pytest.raises(ConfigError, match=r"^os\.repos\[0\]\.baseurl: http://mirror\.stream\.centos\.org/"
                                          r"9-stream/AppStream/x86_64/os/ names the host"):
        parse_site(data)
    data["network"]["nameservers"] = ["192.168.0.254"]
    assert not parse_site(data).mirror.enabled
    on = site_data("http://mirror.stream.centos.org")
    assert parse_site(on).mirror.enabled            # no nameservers needed: nodes ask the service


def test_with_the_mirror_on_every_source_lies_under_os_mirror_and_the_service_needs_no_resolver():
    data = site_data("http://mirror.stream.centos.org")
    data["os"]["repos"].append({"name": "elsewhere", "baseurl": "http://192.0.2.9/repo/"})
    with pytest.raises(ConfigError, match=r"^os\.repos\[2\]\.baseurl: http://192\.0\.2\.9/repo/ is not under os\.mirror"):
        parse_site(data)
    data = site_data("http://mirror.stream.centos.org")
    data["service"]["url"] = "http://provisioner.example:8080"
    with pytest.raises(ConfigError, match=r"^service\.boot_url: http://provisioner\.example:8081 names the host"):
        parse_site(data)
    for bad in ({"enabled": "yes"}, {"concurrency": 0}, {"concurrency": 33}, {"speed": 1}):
        data = site_data("http://mirror.stream.centos.org")
        data["mirror"] = bad
        with pytest.raises(ConfigError, match=r"^mirror\."):
            parse_site(data)
