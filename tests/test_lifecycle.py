"""registered -> installing -> installed -> rebuild -> installing, with wrong tokens refused at each step."""

import pytest

from tests.conftest import db_dump

MAC = "52:54:00:0c:00:04"
EVENTS = f"/api/v1/nodes/{MAC}/events"


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


def state(client):
    node = client.get(f"/api/v1/nodes/{MAC}").get_json()
    return node["state"], node["netboot"]


def refused_everywhere(client, registry, *tokens):
    """Every callback without the node's current token is 403 and changes nothing."""
    before = db_dump(registry)
    for headers in [{}, bearer("guess"), {"Authorization": "Basic eDp5"}, *(bearer(t) for t in tokens)]:
        for type_ in ("installing", "installed", "failed"):
            resp = client.post(EVENTS, json={"type": type_, "detail": "forged"}, headers=headers)
            assert resp.status_code == 403, (headers, type_)
            assert resp.get_json()["error"] == "forbidden"
    assert db_dump(registry) == before


def test_one_node_through_its_whole_lifecycle(client, admin, registry):
    admin_token = admin["Authorization"].split()[1]
    other_token = registry.get("52:54:00:0c:00:02").install_token
    token = registry.get(MAC).install_token

    # registered: armed, the boot config says install
    assert state(client) == ("registered", True)
    assert "kernel " in client.get(f"/ipxe/{MAC}").get_data(as_text=True)
    refused_everywhere(client, registry, admin_token, other_token)

    # the installer fetches its kickstart: installing
    assert client.get(f"/ks/{MAC}").status_code == 200
    assert state(client) == ("installing", True)
    refused_everywhere(client, registry, admin_token, other_token)
    assert client.post(EVENTS, json={"type": "installing", "detail": "pre"}, headers=bearer(token)).status_code == 200

    # %post reports installed: disarmed, local boot everywhere, the kickstart refused
    # and its answer hands over the first-boot credential, once; the install token ends
    resp = client.post(EVENTS, json={"type": "installed", "detail": "done"}, headers=bearer(token))
    assert resp.status_code == 200 and resp.get_json()["state"] == "installed"
    firstboot = resp.get_json()["firstboot_token"]
    assert len(firstboot) >= 40 and firstboot != token
    assert state(client) == ("installed", False)
    again = client.post(EVENTS, json={"type": "installed"}, headers=bearer(token))   # retried, or raced
    assert again.status_code == 403 and "ended" in again.get_json()["detail"]
    assert "firstboot_token" not in again.get_data(as_text=True)
    refused_everywhere(client, registry, admin_token, other_token, token, firstboot)
    ks = client.get(f"/ks/{MAC}")
    assert ks.status_code == 409 and "rebuild" in ks.get_data(as_text=True)
    assert "exit" in client.get(f"/ipxe/{MAC}").get_data(as_text=True)
    assert "LOCALBOOT 0" in client.get(f"/pxelinux.cfg/01-{MAC.replace(':', '-')}").get_data(as_text=True)
    late = client.post(EVENTS, json={"type": "installing"}, headers=bearer(token))
    assert late.status_code == 403 and state(client) == ("installed", False)
    config = client.get(f"/api/v1/nodes/{MAC}/config", headers=bearer(firstboot))
    assert config.status_code == 200 and "NOVA_PASSWORD=" in config.get_data(as_text=True)

    # rebuild needs the admin token and re-arms with a new install token
    assert client.post(f"/api/v1/nodes/{MAC}/rebuild").status_code == 401
    assert client.post(f"/api/v1/nodes/{MAC}/rebuild", headers=bearer(token)).status_code == 401
    resp = client.post(f"/api/v1/nodes/{MAC}/rebuild", headers=admin)
    assert resp.status_code == 200 and resp.get_json()["state"] == "registered"
    new_token = registry.get(MAC).install_token
    assert new_token != token
    assert new_token in client.get(f"/ks/{MAC}").get_data(as_text=True)
    assert state(client) == ("installing", True)
    refused_everywhere(client, registry, token, admin_token, other_token)   # the old token is dead
    assert client.get(f"/api/v1/nodes/{MAC}/config", headers=bearer(firstboot)).status_code == 403  # and so is that

    types = [e["type"] for e in client.get(f"/api/v1/nodes/{MAC}/events").get_json()["events"]]
    # %pre's `installing` said what the kickstart fetch had said already: nothing written;
    # the pxelinux config asked for after `installed` told the service the machine is BIOS
    assert types == ["registered", "kickstart", "installed", "firmware", "rebuild", "kickstart"]


def test_a_failed_install_keeps_the_log_tail_and_stays_armed(client, registry):
    token = registry.get(MAC).install_token
    client.get(f"/ks/{MAC}")
    tail = "anaconda: storage failed\n" * 10
    resp = client.post(EVENTS, json={"type": "failed", "detail": tail}, headers=bearer(token))
    assert resp.status_code == 200
    assert state(client) == ("failed", True)
    assert client.get(f"/api/v1/nodes/{MAC}").get_json()["last_event"]["detail"] == tail
    # booting again reinstalls: nothing usable is on the disk
    assert client.get(f"/ks/{MAC}").status_code == 200 and state(client) == ("installing", True)


def test_a_huge_log_tail_is_kept_but_bounded(client, registry):
    token = registry.get(MAC).install_token
    resp = client.post(EVENTS, json={"type": "failed", "detail": "x" * 200_000}, headers=bearer(token))
    assert resp.status_code == 200
    assert len(resp.get_json()["last_event"]["detail"]) == 64 * 1024 + len("[...]")


@pytest.mark.parametrize("body, field", [
    ({"type": "deployed"}, "type"), ({}, "type"), ({"type": "installed", "extra": 1}, "extra"), ([], None),
])
def test_bad_callbacks_are_400_and_change_nothing(client, registry, body, field):
    token = registry.get(MAC).install_token
    before = db_dump(registry)
    resp = client.post(EVENTS, json=body, headers=bearer(token))
    assert resp.status_code == 400 and resp.get_json().get("field") == field
    assert db_dump(registry) == before


def test_unknown_macs_boot_locally_over_http(client):
    text = client.get("/ipxe/52-54-00-99-99-99").get_data(as_text=True)
    assert "exit" in text and "not registered" in text
    assert "${mac:hexhyp}" in client.get("/boot.ipxe").get_data(as_text=True)
