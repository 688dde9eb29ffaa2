"""Credentials as an attacker on the install network meets them: what each one opens, for how
long, and that the secrets a node is sent are the ones its own steps read."""

import re
import shutil
import subprocess
from dataclasses import replace

import pytest
import requests

from provisioner.app import create_app
from provisioner.config import load_site
from provisioner.credentials import load_or_create
from provisioner.plan import HOOKS_DIR, STEP_SECRETS, load_plan
from tests.conftest import db_dump

COMPUTE2, CONTROLLER, GATEWAY = "52:54:00:0c:00:02", "52:54:00:0c:00:05", "52:54:00:0c:00:01"
DB_PASSWORDS = [k for k in STEP_SECRETS if k.endswith("_db_password")]


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


def install(client, registry, mac):
    """The node's installer reports installed; the answer's first-boot credential."""
    r = client.post(f"/api/v1/nodes/{mac}/events", json={"type": "installed"},
                    headers=bearer(registry.get(mac).install_token))
    assert r.status_code == 200
    return r.get_json()["firstboot_token"]


def env_of(text):
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#"))


# -- reads --------------------------------------------------------------------------------------

READS = ["/api/v1/nodes", f"/api/v1/nodes/{COMPUTE2}", f"/api/v1/nodes/{COMPUTE2}/events",
         f"/api/v1/nodes/{COMPUTE2}/plan", "/api/v1/barriers/gluster-bricks"]


def test_reads_need_a_token_and_the_read_token_writes_nothing(client, registry, state_dir, new_node_body):
    creds = load_or_create(state_dir)
    anonymous = {"Authorization": ""}
    for path in READS:
        for headers in (anonymous, bearer("guess"), bearer(registry.get(COMPUTE2).install_token)):
            r = client.get(path, headers=headers)
            assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Bearer"), (path, headers)
        assert client.get(path, headers=bearer(creds.reader_token)).status_code == 200, path
        assert client.get(path, headers=bearer(creds.admin_token)).status_code == 200, path
    before = db_dump(registry)
    reader = bearer(creds.reader_token)
    assert client.post("/api/v1/nodes", json=new_node_body, headers=reader).status_code == 401
    assert client.patch(f"/api/v1/nodes/{COMPUTE2}", json={"ip": "192.168.0.99"}, headers=reader).status_code == 401
    assert client.post(f"/api/v1/nodes/{COMPUTE2}/rebuild", headers=reader).status_code == 401
    assert client.delete(f"/api/v1/nodes/{COMPUTE2}", headers=reader).status_code == 401
    assert db_dump(registry) == before
    assert creds.reader_token != creds.admin_token and len(creds.reader_token) >= 40


def test_the_site_can_open_reads(state_dir):
    app = create_app(state_dir, replace(load_site(), open_reads=True))
    try:
        anonymous = app.test_client()
        for path in READS:
            assert anonymous.get(path).status_code == 200, path
        assert anonymous.post(f"/api/v1/nodes/{COMPUTE2}/rebuild").status_code == 401   # writes stay shut
    finally:
        app.extensions["provisioner"].registry.close()


@pytest.fixture
def new_node_body():
    from tests.conftest import new_node
    return new_node()


# -- kickstarts only to their machine -----------------------------------------------------------

def test_a_kickstart_is_served_only_to_the_nodes_own_address(state_dir):
    site = load_site()
    assert site.kickstart_node_address_only        # the default
    app = create_app(state_dir, site)
    try:
        registry = app.extensions["provisioner"].registry
        client = app.test_client()
        before = db_dump(registry)
        for addr in ("192.168.0.66", "192.168.0.3", "127.0.0.1"):      # a stranger, another node, loopback
            r = client.get(f"/ks/{COMPUTE2}", environ_base={"REMOTE_ADDR": addr})
            assert r.status_code == 403 and registry.get(COMPUTE2).install_token not in r.get_data(as_text=True)
        assert db_dump(registry) == before          # nothing noted, no state change
        r = client.get(f"/ks/{COMPUTE2}", environ_base={"REMOTE_ADDR": "192.168.0.2"})
        assert r.status_code == 200 and registry.get(COMPUTE2).install_token in r.get_data(as_text=True)
    finally:
        app.extensions["provisioner"].registry.close()


# -- the two credentials of an install ----------------------------------------------------------

def test_the_install_token_ends_at_installed_and_the_first_boot_credential_is_handed_out_once(client, registry):
    token = registry.get(COMPUTE2).install_token
    firstboot = install(client, registry, COMPUTE2)
    # the install token opens nothing any more; the credential is not in anything served again
    for type_ in ("installing", "installed", "failed"):
        r = client.post(f"/api/v1/nodes/{COMPUTE2}/events", json={"type": type_}, headers=bearer(token))
        assert r.status_code == 403 and "firstboot_token" not in r.get_data(as_text=True)
    assert client.get(f"/api/v1/nodes/{COMPUTE2}/config", headers=bearer(token)).status_code == 403
    assert firstboot not in client.get("/api/v1/nodes").get_data(as_text=True)
    assert firstboot not in client.get(f"/api/v1/nodes/{COMPUTE2}/events").get_data(as_text=True)
    # kept as a hash only: a copy of the registry does not hold it
    dump = "\n".join(db_dump(registry))
    assert firstboot not in dump
    # it opens this node's configuration and plan, and barriers; not another node's
    assert client.get(f"/api/v1/nodes/{COMPUTE2}/config", headers=bearer(firstboot)).status_code == 200
    assert client.get(f"/api/v1/nodes/{COMPUTE2}/plan", headers=bearer(firstboot)).status_code == 200
    assert client.get("/api/v1/barriers/gluster-bricks", headers=bearer(firstboot)).status_code == 200
    assert client.get(f"/api/v1/nodes/{CONTROLLER}/config", headers=bearer(firstboot)).status_code == 403
    r = client.post(f"/api/v1/nodes/{CONTROLLER}/events", headers=bearer(firstboot),
                    json={"type": "step", "detail": {"step": "01-network-gateway/03-hosts", "status": "ok"}})
    assert r.status_code == 403


def test_the_first_boot_credential_ends_at_deployed_and_at_rebuild(client, registry, admin):
    firstboot = install(client, registry, COMPUTE2)
    steps = [s.id for s in load_plan().for_roles(["compute"])]
    for step in steps:
        r = client.post(f"/api/v1/nodes/{COMPUTE2}/events", headers=bearer(firstboot),
                        json={"type": "step", "detail": {"step": step, "status": "ok"}})
        assert r.status_code == 200
    assert r.get_json()["state"] == "deployed"
    assert client.get(f"/api/v1/nodes/{COMPUTE2}/config", headers=bearer(firstboot)).status_code == 403
    assert client.get("/api/v1/barriers/gluster-bricks", headers=bearer(firstboot)).status_code == 401

    other = install(client, registry, CONTROLLER)
    assert client.post(f"/api/v1/nodes/{CONTROLLER}/rebuild", headers=admin).status_code == 200
    assert client.get(f"/api/v1/nodes/{CONTROLLER}/config", headers=bearer(other)).status_code == 403


def test_a_skipped_step_lets_the_plan_go_on_but_is_never_shown_as_ok(client, registry, admin):
    """A step that cannot run on its node (SELinux on Debian, Cinder's iSCSI target without LIO)
    reports `skipped` with its reason: barriers open on it and the node deploys, while its plan
    and events still say skipped, not ok."""
    firstboot = install(client, registry, COMPUTE2)
    steps = [s.id for s in load_plan().for_roles(["compute"])]
    barrier_step = load_plan().barriers["gluster-bricks"].after
    assert barrier_step in steps
    for step in steps:
        status = "skipped" if step == barrier_step else "ok"
        r = client.post(f"/api/v1/nodes/{COMPUTE2}/events", headers=bearer(firstboot),
                        json={"type": "step", "detail": {"step": step, "status": status,
                                                          "output": "skipped: no such thing here\n" if status == "skipped" else ""}})
        assert r.status_code == 200
        if step == barrier_step:
            # skipped counts as done for the barrier: compute2 is no longer waited for
            waiting = client.get("/api/v1/barriers/gluster-bricks", headers=bearer(firstboot)).get_json()["waiting_for"]
            assert "compute2" not in waiting
    assert r.get_json()["state"] == "deployed"
    plan = client.get(f"/api/v1/nodes/{COMPUTE2}/plan").get_json()
    assert {s["id"]: s["state"] for s in plan["steps"]}[barrier_step] == "skipped"
    r = client.post(f"/api/v1/nodes/{CONTROLLER}/events", headers=admin,
                    json={"type": "step", "detail": {"step": steps[0], "status": "done"}})
    assert r.status_code in (400, 403)


def test_whoever_reports_installed_first_wins_and_the_other_is_refused(client, registry):
    """Someone on the install network read the kickstart and raced the real machine to
    `installed`: the real machine's report is refused, so its install fails loudly, and the
    node's history shows one `installed`."""
    token = registry.get(COMPUTE2).install_token
    assert client.post(f"/api/v1/nodes/{COMPUTE2}/events", json={"type": "installed"},
                       headers=bearer(token)).status_code == 200        # the attacker
    real = client.post(f"/api/v1/nodes/{COMPUTE2}/events", json={"type": "installed"}, headers=bearer(token))
    assert real.status_code == 403 and "rebuild" in real.get_json()["detail"]
    types = [e["type"] for e in client.get(f"/api/v1/nodes/{COMPUTE2}/events").get_json()["events"]]
    assert types.count("installed") == 1


# -- secrets by need ------------------------------------------------------------------------------

def test_a_node_is_sent_only_the_secrets_its_steps_read(client, registry, state_dir):
    secrets = load_or_create(state_dir).values
    configs = {}
    for mac in (COMPUTE2, GATEWAY, CONTROLLER):
        token = install(client, registry, mac)
        configs[mac] = client.get(f"/api/v1/nodes/{mac}/config", headers=bearer(token)).get_data(as_text=True)

    def held(text):
        return {k for k in STEP_SECRETS if secrets[k] in text}
    compute, gateway, controller = held(configs[COMPUTE2]), held(configs[GATEWAY]), held(configs[CONTROLLER])
    assert compute == {"libvirt_migration_password", "rabbitmq_password", "placement_password",
                       "nova_password", "neutron_password"}
    assert gateway == compute | {"metadata_secret", "keystone_admin_password"}
    assert set(DB_PASSWORDS) <= controller and "libvirt_migration_password" not in controller
    assert not (set(DB_PASSWORDS) & (compute | gateway))
    for text in configs.values():      # never the root password, the tokens, MariaDB's root
        for key in ("root_password", "mariadb_root_password", "admin_token", "reader_token"):
            assert secrets[key] not in text


def _functions(text):
    return {m.group(1): m.group(2) for m in re.finditer(r"^(\w+)\(\) \{\n(.*?)^\}", text, re.M | re.S)}


def _names(text):
    return {k for k in STEP_SECRETS if re.search(r"\$\{?" + k.upper() + r"\b", text)}


def test_every_step_declares_exactly_the_secrets_its_script_reads():
    """The plan's `secrets:` lists against the scripts: a step that reads a secret it does not
    declare would find it empty on the node; one that declares more is sent more than it needs.
    The helpers in lib/common.sh count for the steps that call them."""
    lib = _functions((HOOKS_DIR / "lib" / "common.sh").read_text())
    for step in load_plan().steps:
        text = (HOOKS_DIR / f"{step.id}.sh").read_text()
        assert "${!" not in text, f"{step.id}: an indirect expansion hides which secret it reads"
        reads = _names(text)
        for name, body in lib.items():
            if re.search(rf"(^|[\s;&|(]){name}\b", text, re.M):
                reads |= _names(body)
        assert set(step.secrets) == reads, step.id


# -- what an anonymous fetch can write ------------------------------------------------------------

def test_repeated_fetches_and_reports_write_once(client, registry):
    for _ in range(50):
        assert client.get(f"/ks/{COMPUTE2}").status_code == 200
    token = bearer(registry.get(COMPUTE2).install_token)
    for _ in range(50):
        assert client.post(f"/api/v1/nodes/{COMPUTE2}/events", json={"type": "installing"},
                           headers=token).status_code == 200
    types = [e["type"] for e in client.get(f"/api/v1/nodes/{COMPUTE2}/events").get_json()["events"]]
    assert types == ["registered", "kickstart"]


# -- durability -----------------------------------------------------------------------------------

def test_arming_and_disarming_commits_are_synchronous_full(client, registry, admin):
    """`installed` (disarms) and rebuild (arms) are fsynced before they are answered: in WAL
    mode with synchronous=NORMAL a power cut can undo the last commits. Watched through SQLite's
    own statement trace on the connection that writes them."""
    seen = []
    db = registry._conn()
    db.set_trace_callback(seen.append)
    try:
        install(client, registry, COMPUTE2)
        assert client.post(f"/api/v1/nodes/{COMPUTE2}/rebuild", headers=admin).status_code == 200
        client.post(f"/api/v1/nodes/{COMPUTE2}/events", json={"type": "installing"},
                    headers=bearer(registry.get(COMPUTE2).install_token))
    finally:
        db.set_trace_callback(None)
    commits = [i for i, s in enumerate(seen) if s == "COMMIT"]
    assert len(commits) == 3
    level = None
    modes = []
    for i, stmt in enumerate(seen):
        if stmt.startswith("PRAGMA synchronous="):
            level = stmt.split("=")[1]
        if i in commits:
            modes.append(level)
    assert modes == ["FULL", "FULL", "NORMAL"]      # installed, rebuild: FULL; a progress report: not
    assert db.execute("PRAGMA synchronous").fetchone()[0] == 1      # back to NORMAL for the rest


# -- the kickstart's own %post against a real service ---------------------------------------------

def _post_tail(live_server, mac, tmp_path):
    """The kickstart's %post, its callback helpers and the `installed` hand-over, pointed at the
    test's directory instead of /etc and at the live server's boot port."""
    from provisioner.render.kscheck import check_kickstart
    ks = requests.get(f"{live_server.boot}/ks/{mac}", timeout=10).text
    post = next(s.script for s in check_kickstart(ks).handler.scripts if "report installed" in s.script)
    callback = post.split("set -e", 1)[0]
    tail = post[post.index("# The service disarms"):]
    script = callback + "set -e\nmkdir -p /etc/provisioner\n" + tail
    script = re.sub(r"PROVISIONER_EVENTS='[^']*'", f"PROVISIONER_EVENTS='{live_server.boot}/api/v1/nodes/{mac}/events'",
                    script)
    script = script.replace("/etc/provisioner", str(tmp_path / "etc")).replace("/tmp/provisioner-", str(tmp_path / "p-"))
    path = tmp_path / "post.sh"
    path.write_text(script)
    return path


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
def test_post_keeps_the_credential_and_fails_loudly_when_raced(live_server, state_dir, tmp_path):
    from provisioner.registry.db import Registry
    reg = Registry.in_state_dir(state_dir)
    # the machine itself: %post reports installed and keeps the credential, owner-only
    (tmp_path / "a").mkdir()
    post = _post_tail(live_server, COMPUTE2, tmp_path / "a")
    run = subprocess.run(["sh", str(post)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    env_file = tmp_path / "a" / "etc" / "node.env"
    assert env_file.stat().st_mode & 0o777 == 0o600
    token = env_of(env_file.read_text())["PROVISIONER_TOKEN"]
    assert token != reg.get(COMPUTE2).install_token
    r = requests.get(f"{live_server}/api/v1/nodes/{COMPUTE2}/config", headers=bearer(token), timeout=10)
    assert r.status_code == 200 and "NOVA_PASSWORD=" in r.text
    assert not (tmp_path / "a" / "p-answer.json").exists()      # no copy of it left behind

    # another machine: someone else reported installed with the sniffed install token first
    (tmp_path / "b").mkdir()
    post = _post_tail(live_server, CONTROLLER, tmp_path / "b")
    stolen = reg.get(CONTROLLER).install_token
    assert requests.post(f"{live_server.boot}/api/v1/nodes/{CONTROLLER}/events", json={"type": "installed"},
                         headers=bearer(stolen), timeout=10).status_code == 200
    run = subprocess.run(["sh", str(post)], capture_output=True, text=True, timeout=120)
    assert run.returncode != 0 and "refused" in run.stderr
    assert not (tmp_path / "b" / "etc" / "node.env").exists()
    reg.close()


# -- TLS where secrets travel -------------------------------------------------------------------

@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
def test_the_runner_talks_https_with_the_services_ca_pinned(state_dir, tmp_path):
    """service.url https: serve makes its CA and a certificate, the kickstart carries the CA,
    and the real first-boot runner fetches its configuration and reports over HTTPS with it
    pinned; without the CA, or over plain HTTP, nothing is read. Its barrier wait then times out
    naming the host it waits for."""
    import os
    import socket
    import sys
    import time
    from importlib import resources

    from provisioner.render.kscheck import check_kickstart
    from tests.test_hooks_runner import stub_hooks

    def free_port():
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]
    port, boot = free_port(), free_port()
    text = resources.files("provisioner").joinpath("site.yaml").read_text()
    text = text.replace("  url: http://192.168.0.254:8080\n", f"  url: https://127.0.0.1:{port}\n"
                                                               f"  boot_url: http://127.0.0.1:{boot}\n")
    text = text.replace("  kickstart_node_address_only: true\n", "  kickstart_node_address_only: false\n")
    site = tmp_path / "site.yaml"
    site.write_text(text)
    log = tmp_path / "serve.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "provisioner", "--state-dir", str(state_dir), "--site",
                                 str(site), "serve", "--http", f"127.0.0.1:{port}", "--boot", f"127.0.0.1:{boot}",
                                 "--no-tftp"], stdout=out, stderr=subprocess.STDOUT)
    try:
        ca = state_dir / "tls" / "ca.pem"
        deadline = time.monotonic() + 30
        while True:
            try:
                requests.get(f"https://127.0.0.1:{port}/api/v1/openapi.json", verify=str(ca), timeout=2)
                break
            except (requests.ConnectionError, OSError):
                assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
        assert (state_dir / "tls" / "ca.key").stat().st_mode & 0o777 == 0o600
        assert (state_dir / "tls" / "server.key").stat().st_mode & 0o777 == 0o600
        ks = requests.get(f"http://127.0.0.1:{boot}/ks/{COMPUTE2}", timeout=10).text
        post = next(s.script for s in check_kickstart(ks).handler.scripts if "report installed" in s.script)
        assert ca.read_text() in post and "--cacert /etc/provisioner/ca.pem" in post
        assert f"PROVISIONER_EVENTS='https://127.0.0.1:{port}/api/v1/nodes/{COMPUTE2}/events'" in post
        with pytest.raises(requests.ConnectionError):
            requests.get(f"http://127.0.0.1:{port}/api/v1/openapi.json", timeout=5)      # no plain HTTP here
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(f"https://127.0.0.1:{port}/api/v1/openapi.json", timeout=5)     # not a public CA

        install_token = ks.split("PROVISIONER_TOKEN='", 1)[1].split("'", 1)[0]
        r = requests.post(f"https://127.0.0.1:{port}/api/v1/nodes/{COMPUTE2}/events", json={"type": "installed"},
                          headers=bearer(install_token), verify=str(ca), timeout=10)
        token = r.json()["firstboot_token"]

        stub_hooks(tmp_path)
        etc = tmp_path / "etc"
        etc.mkdir()
        (etc / "ca.pem").write_text(ca.read_text())
        (etc / "node.env").write_text(f"PROVISIONER_URL='https://127.0.0.1:{port}'\nPROVISIONER_MAC='{COMPUTE2}'\n"
                                      f"PROVISIONER_TOKEN='{token}'\n")
        env = {**os.environ, "HOOKS": str(tmp_path / "hooks"), "PROVISIONER_ETC": str(etc),
               "PROVISIONER_STATE": str(tmp_path / "state"), "BARRIER_POLL": "0.2", "BARRIER_TIMEOUT": "2",
               "STEP_LOG": str(tmp_path / "steps.log"), "FAIL_DIR": str(tmp_path / "fail")}
        run = subprocess.run(["bash", str(tmp_path / "hooks" / "runner.sh")], env=env, capture_output=True,
                             text=True, timeout=120)
        assert run.returncode == 1
        assert "04-glusterfs-all/01-glusterfs-mount" in run.stderr and "controller" in run.stderr
        assert "NOVA_PASSWORD=" in (etc / "config.env").read_text()
        reader = bearer(load_or_create(state_dir).reader_token)
        plan = requests.get(f"https://127.0.0.1:{port}/api/v1/nodes/{COMPUTE2}/plan", headers=reader,
                            verify=str(ca), timeout=10).json()
        steps = {s["id"]: s for s in plan["steps"]}
        assert steps["02-glusterfs-all/05-glusterfs-brick"]["state"] == "ok"
        mount = steps["04-glusterfs-all/01-glusterfs-mount"]
        assert mount["state"] == "failed" and "still waits for: controller" in mount["output"]

        (etc / "ca.pem").unlink()     # the same runner without the CA: curl refuses the service
        (etc / "config.env").unlink()
        run = subprocess.run(["bash", str(tmp_path / "hooks" / "runner.sh")], env=env, capture_output=True,
                             text=True, timeout=120)
        assert run.returncode == 1 and "cannot fetch this node's configuration" in run.stderr
        assert not (etc / "config.env").exists()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
