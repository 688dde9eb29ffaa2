"""Kickstarts rendered ahead: never stale, whatever changed since they were rendered."""

import os
import shutil

import pytest

from provisioner.app import open_context
from provisioner.render.renderer import TEMPLATES_DIR

MAC = "52:54:00:0c:00:02"


@pytest.fixture
def ctx(state_dir, site):
    ctx = open_context(state_dir, site)
    yield ctx
    ctx.registry.close()


def test_a_cached_kickstart_is_the_rendered_one(ctx):
    cache = ctx.node_http.kickstarts
    assert cache.warm() == 5                    # the embedded site's five armed nodes
    assert cache.warm() == 0                    # nothing changed: nothing rendered again
    view = ctx.registry.install_view(MAC)
    assert cache.get(view) == ctx.renderer.kickstart(ctx.registry.get(MAC)).encode()


def test_a_new_install_token_or_description_renders_again(ctx):
    cache = ctx.node_http.kickstarts
    cache.warm()
    before = cache.get(ctx.registry.install_view(MAC))
    ctx.registry.callback(MAC, ctx.registry.get(MAC).install_token, "installed", None)
    ctx.registry.rebuild(MAC)                   # a new token
    after = cache.get(ctx.registry.install_view(MAC))
    assert after != before and ctx.registry.get(MAC).install_token in after.decode()
    assert after == ctx.renderer.kickstart(ctx.registry.get(MAC)).encode()


def test_an_edited_template_renders_again(state_dir, site, tmp_path, monkeypatch):
    override = tmp_path / "templates"
    override.mkdir()
    shutil.copy(TEMPLATES_DIR / "kickstarts" / "_packages.ks.j2", override / "_packages.ks.j2")
    monkeypatch.setenv("PROVISIONER_TEMPLATES", str(override))
    ctx = open_context(state_dir, site)
    cache = ctx.node_http.kickstarts
    cache.warm()
    assert b"operator-added-package" not in cache.get(ctx.registry.install_view(MAC))
    text = (override / "_packages.ks.j2").read_text()
    (override / "_packages.ks.j2").write_text(text.replace("%packages", "%packages\noperator-added-package", 1))
    st = (override / "_packages.ks.j2").stat()
    os.utime(override / "_packages.ks.j2", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    ctx.renderer._version_at = -1.0             # skip the once-a-second wait
    assert b"operator-added-package" in cache.get(ctx.registry.install_view(MAC))
    ctx.registry.close()


def test_warm_forgets_nodes_that_are_no_longer_armed(ctx):
    cache = ctx.node_http.kickstarts
    cache.warm()
    ctx.registry.callback(MAC, ctx.registry.get(MAC).install_token, "installed", None)
    cache.warm()
    assert MAC not in cache._entries and len(cache._entries) == 4
