"""distro import from a directory and over HTTP, checksums enforced; kernel/initrd served with ranges."""

import functools
import http.server
import threading

import pytest

from provisioner.boot.distros import DistroError, import_tree, list_distros
from tests.conftest import make_tree


@pytest.fixture
def http_tree(tmp_path):
    """The tree served by a plain HTTP server on loopback, as a mirror would serve it."""
    root = make_tree(tmp_path / "mirror" / "9-stream" / "BaseOS" / "x86_64" / "os")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path / "mirror"))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/9-stream/BaseOS/x86_64/os/", root
    server.shutdown()
    server.server_close()


def test_import_from_a_directory(state_dir, tmp_path):
    tree = make_tree(tmp_path / "t")
    seen = []
    result = import_tree(state_dir, str(tree), lambda name, done, total: seen.append((name, done, total)))
    assert result.name == "centos-stream-9-x86_64"
    dest = state_dir / "distros" / "centos-stream-9-x86_64"
    assert (dest / "vmlinuz").read_bytes() == (tree / "images/pxeboot/vmlinuz").read_bytes()
    assert (dest / "initrd.img").read_bytes() == (tree / "images/pxeboot/initrd.img").read_bytes()
    assert seen[-1] == ("images/pxeboot/initrd.img", 300_000, 300_000)
    assert list_distros(state_dir) == ["centos-stream-9-x86_64"]


def test_import_over_http(state_dir, http_tree):
    url, root = http_tree
    import_tree(state_dir, url)
    got = (state_dir / "distros" / "centos-stream-9-x86_64" / "initrd.img").read_bytes()
    assert got == (root / "images/pxeboot/initrd.img").read_bytes()


@pytest.mark.parametrize("corrupt", ["images/pxeboot/vmlinuz", "images/pxeboot/initrd.img"])
def test_a_checksum_mismatch_imports_nothing(state_dir, tmp_path, corrupt):
    tree = make_tree(tmp_path / "t", corrupt=corrupt)
    with pytest.raises(DistroError, match=f"{corrupt}: sha256 is .* .treeinfo says 0+; not imported"):
        import_tree(state_dir, str(tree))
    assert list_distros(state_dir) == []
    assert [p.name for p in (state_dir / "distros").iterdir()] == []


def test_a_mismatch_leaves_the_previous_import_in_place(state_dir, tmp_path):
    good = make_tree(tmp_path / "good")
    import_tree(state_dir, str(good))
    bad = make_tree(tmp_path / "bad", kernel=b"other", corrupt="images/pxeboot/vmlinuz")
    with pytest.raises(DistroError):
        import_tree(state_dir, str(bad))
    assert (state_dir / "distros/centos-stream-9-x86_64/vmlinuz").read_bytes() == b"K" * 5000


@pytest.mark.parametrize("treeinfo, message", [
    ("not ini at all", "not readable"),
    ("[release]\nname = X\nversion = 1\n[tree]\narch = x86_64\n", r"no \[images-x86_64\] kernel"),
    ("[release]\nname = X\nversion = 1\n[tree]\narch = x86_64\n[images-x86_64]\nkernel = k\ninitrd = i\n",
     "no checksum for k"),
    ("[release]\nname = X\nversion = 1\n[tree]\narch = x86_64\n[images-x86_64]\nkernel = ../../k\ninitrd = i\n"
     "[checksums]\n../../k = sha256:00\ni = sha256:00\n", "outside the tree"),
])
def test_bad_treeinfo_is_refused(state_dir, tmp_path, treeinfo, message):
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / ".treeinfo").write_text(treeinfo)
    with pytest.raises(DistroError, match=message):
        import_tree(state_dir, str(tmp_path / "t"))


def test_a_missing_tree_is_refused(state_dir, tmp_path, http_tree):
    with pytest.raises(DistroError, match="no such file"):
        import_tree(state_dir, str(tmp_path / "nowhere"))
    url, _ = http_tree
    with pytest.raises(DistroError, match="HTTP 404"):
        import_tree(state_dir, url.replace("BaseOS", "NoSuchRepo"))


def test_http_serves_kernel_and_initrd_with_length_and_ranges(client, imported):
    initrd = (imported / "images/pxeboot/initrd.img").read_bytes()
    resp = client.get("/boot/centos-stream-9-x86_64/initrd.img")
    assert resp.status_code == 200 and int(resp.headers["Content-Length"]) == len(initrd)
    assert resp.headers["Accept-Ranges"] == "bytes" and resp.data == initrd
    resp.close()
    part = client.get("/boot/centos-stream-9-x86_64/initrd.img", headers={"Range": "bytes=1000-1999"})
    assert part.status_code == 206 and part.data == initrd[1000:2000]
    assert part.headers["Content-Range"] == f"bytes 1000-1999/{len(initrd)}"
    part.close()
    for bad in ("/boot/centos-stream-9-x86_64/treeinfo", "/boot/..%2Fsecrets.yaml/vmlinuz", "/boot/other/vmlinuz"):
        assert client.get(bad).status_code == 404
