import threading
from pathlib import Path

import pytest

from provisioner.app import create_app
from provisioner.config import load_site
from provisioner.credentials import load_or_create

REPORT_COMPUTE_DISK = 250_059_350_016     # WD 250 GB, report 5.1
REPORT_CONTROLLER_DISK = 80_026_361_856   # Seagate 80 GB, report 5.1


@pytest.fixture
def state_dir(tmp_path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def site():
    return load_site()


@pytest.fixture
def app(state_dir, site):
    app = create_app(state_dir, site)
    app.config["TESTING"] = True
    yield app
    app.extensions["provisioner"].registry.close()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def admin(state_dir, app):
    return {"Authorization": f"Bearer {load_or_create(state_dir).admin_token}"}


@pytest.fixture
def registry(app):
    return app.extensions["provisioner"].registry


@pytest.fixture
def live_server(state_dir, site):
    """The real server (waitress) on a loopback port the kernel picks."""
    from provisioner.server import make_server
    server = make_server(state_dir, site, "127.0.0.1", 0, threads=4)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.effective_port}"
    server.close()
    thread.join(timeout=5)


def new_node(**over):
    body = {"mac": "52:54:00:aa:00:10", "hostname": "compute10", "ip": "192.168.0.10",
            "roles": ["compute"], "interface": "eth1"}
    body.update(over)
    return body


def db_dump(registry) -> list[str]:
    """Every row of every table, to prove a rejected request changed nothing."""
    return list(registry._conn().iterdump())
