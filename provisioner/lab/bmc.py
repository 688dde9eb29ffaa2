"""The lab's BMCs: the emulators that make its VMs answer Redfish and IPMI like the rack's
machines, so the service drives them through the same power code as real hardware.

  - sushy-tools' Redfish emulator (sushy-emulator) over the lab's libvirt connection: one
    endpoint, each lab VM a system at /redfish/v1/Systems/<its UUID>. Limited to the lab's
    domains (SUSHY_EMULATOR_ALLOWED_INSTANCES): on qemu:///system the emulator would otherwise
    hand out every VM of the host.
  - VirtualBMC's vbmcd: an IPMI 2.0 BMC per lab VM, each on its own UDP port, with one change
    (vbmc_boot.py): a network boot set over IPMI leaves the disk after it, as a real BMC's does.

Both listen on a loopback address of the lab's network namespace (127.0.0.1 unless told
otherwise), never on a host interface and never on the install network: the VMs there (anyone
on the install network is treated as hostile) cannot reach them, as the kernel drops packets for
127/8 that arrive on any other interface. The service, in the same namespace, reaches them as it
reaches a rack's management network.

Credentials: one user and a random password per lab, kept sealed with the state directory's
bmc.key (provisioner/power/bmc.py's Sealer) in <work dir>/bmc/password.sealed. The Redfish
emulator holds only its bcrypt hash; vbmcd needs it in clear, in its per-domain configuration
files, in a 0700 directory, and written there rather than passed to `vbmc add`, whose command
line any user on the host could read with ps.

Each emulator runs in its own session (so its process group is it and the children it forks),
with a pid file; `stop` kills exactly those groups, after checking that each pid is still the
process started here, and removes the directory.
"""

from __future__ import annotations

import configparser
import ipaddress
import os
import secrets
import shutil
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from provisioner.power.bmc import Sealer

USER = "admin"
REDFISH_PORT = 8000
IPMI_BASE_PORT = 6230
VBMCD_CONTROL_PORT = 50891      # vbmcd's own control socket (ZeroMQ), always on 127.0.0.1
READY_WAIT = 60.0


class BmcError(RuntimeError):
    pass


@dataclass(frozen=True)
class Machine:
    """A lab VM as its BMCs know it."""
    hostname: str
    domain: str         # libvirt name
    uuid: str


@dataclass(frozen=True)
class Endpoints:
    redfish: str        # redfish://host:port/redfish/v1/Systems/<uuid>
    ipmi: str           # ipmi://host:port


class LabBmcs:
    def __init__(self, work_dir: Path, state_dir: Path, libvirt_uri: str, *, address: str = "127.0.0.1",
                 redfish_port: int = REDFISH_PORT, ipmi_base_port: int = IPMI_BASE_PORT,
                 control_port: int = VBMCD_CONTROL_PORT):
        if not ipaddress.ip_address(address).is_loopback:
            raise BmcError(f"the lab's BMCs listen on a loopback address only, not {address}: anything else is "
                           "reachable from a host interface or from the VMs")
        self.dir = Path(work_dir) / "bmc"
        self.sealer = Sealer(Path(state_dir))
        self.uri = libvirt_uri
        self.address = address
        self.redfish_port = redfish_port
        self.ipmi_base_port = ipmi_base_port
        self.control_port = control_port

    # -- what the registry is told ---------------------------------------------------------------

    def endpoints(self, machines: list[Machine]) -> dict[str, Endpoints]:
        """Each machine's Redfish system and IPMI BMC, by host name. IPMI ports follow the host
        names' order, so the same lab gets the same ports every time."""
        out = {}
        for i, m in enumerate(sorted(machines, key=lambda m: m.hostname)):
            out[m.hostname] = Endpoints(
                f"redfish://{self._host()}:{self.redfish_port}/redfish/v1/Systems/{m.uuid}",
                f"ipmi://{self._host()}:{self.ipmi_base_port + i}")
        return out

    def credentials(self) -> tuple[str, str]:
        """The lab's BMC user and password: made on first use and kept sealed."""
        sealed = self.dir / "password.sealed"
        if sealed.exists():
            password = self.sealer.unseal(sealed.read_text().strip())
            if password is not None:
                return USER, password
        # none yet, or sealed with a bmc.key this state directory no longer has: a new one
        self._private_dir()
        password = secrets.token_urlsafe(18)
        _write_private(sealed, self.sealer.seal(password) + "\n")
        return USER, password

    # -- running them ----------------------------------------------------------------------------

    def start(self, machines: list[Machine], progress=lambda line: None) -> dict[str, Endpoints]:
        """(Re)start both emulators for exactly these machines; their endpoints once they listen."""
        self.stop(remove=False)
        self._private_dir()
        user, password = self.credentials()
        endpoints = self.endpoints(machines)
        self._start_redfish(machines, user, password)
        self._start_ipmi(machines, endpoints, user, password)
        self._wait_listening("tcp", self.redfish_port, "sushy-emulator", self.dir / "sushy.log")
        for m in machines:
            self._wait_listening("udp", _port(endpoints[m.hostname].ipmi), "vbmcd", self.dir / "vbmcd.log")
        progress(f"BMCs: Redfish at http://{self._host()}:{self.redfish_port}/redfish/v1 "
                 f"(sushy-emulator), IPMI on {self._host()} ports "
                 f"{self.ipmi_base_port}-{self.ipmi_base_port + len(machines) - 1} (vbmcd), user {user}")
        return endpoints

    def running(self) -> list[str]:
        return [name for name in ("sushy", "vbmcd") if self._pid(name) is not None]

    def stop(self, remove: bool = True, progress=lambda line: None) -> None:
        for name in ("sushy", "vbmcd"):
            pid = self._pid(name)
            if pid is not None:
                _kill_group(pid)
                progress(f"stopped {'sushy-emulator' if name == 'sushy' else 'vbmcd'} (pid {pid})")
            (self.dir / f"{name}.pid").unlink(missing_ok=True)
        if remove and self.dir.exists():
            shutil.rmtree(self.dir)

    def _start_redfish(self, machines: list[Machine], user: str, password: str) -> None:
        import bcrypt
        htpasswd = self.dir / "htpasswd"
        _write_private(htpasswd, f"{user}:{bcrypt.hashpw(password.encode(), bcrypt.gensalt()).decode()}\n")
        conf = self.dir / "emulator.conf"
        _write_private(conf, "".join(f"{k} = {v!r}\n" for k, v in {
            "SUSHY_EMULATOR_LISTEN_IP": self.address,
            "SUSHY_EMULATOR_LISTEN_PORT": self.redfish_port,
            "SUSHY_EMULATOR_AUTH_FILE": str(htpasswd),
            "SUSHY_EMULATOR_LIBVIRT_URI": self.uri,
            "SUSHY_EMULATOR_ALLOWED_INSTANCES": sorted(m.uuid for m in machines),
        }.items()))
        # TMPDIR: its persistent state (memoize.py: indicators, virtual media) goes to
        # $TMPDIR/sushy-emulator, by default shared by every emulator on the host
        self._spawn("sushy", [_tool("sushy-emulator"), "--config", str(conf)], self.dir / "sushy.log",
                    {"SUSHY_EMULATOR_CONFIG": str(conf), "TMPDIR": str(self.dir)})

    def _start_ipmi(self, machines: list[Machine], endpoints: dict[str, Endpoints], user: str,
                    password: str) -> None:
        vdir = self.dir / "vbmc"
        domains = vdir / "domains"
        domains.mkdir(parents=True, mode=0o700, exist_ok=True)
        conf = vdir / "virtualbmc.conf"
        _write_private(conf, f"[default]\nconfig_dir = {domains}\npid_file = {vdir / 'vbmcd.pid'}\n"
                             f"server_port = {self.control_port}\nshow_passwords = false\n"
                             f"[log]\nlogfile = {self.dir / 'vbmcd.log'}\n")
        for m in machines:
            # what `vbmc add` would write (virtualbmc/manager.py, _store_config), with active on:
            # vbmcd starts every active BMC it finds when it starts
            cfg = configparser.ConfigParser()
            cfg["VirtualBMC"] = {"username": user, "password": password, "address": self.address,
                                 "port": str(_port(endpoints[m.hostname].ipmi)), "domain_name": m.domain,
                                 "libvirt_uri": self.uri, "active": "True"}
            (domains / m.domain).mkdir(mode=0o700, exist_ok=True)
            with _open_private(domains / m.domain / "config") as f:
                cfg.write(f)
        # vbmc_boot.py, loaded into vbmcd and the BMC processes it forks: a network boot set over
        # IPMI leaves the disk after it (that module says why)
        site = vdir / "site"
        site.mkdir(exist_ok=True)
        (site / "sitecustomize.py").write_text("import provisioner.lab.vbmc_boot  # noqa: F401\n")
        package_root = str(Path(__file__).resolve().parents[2])
        path = os.pathsep.join(p for p in (str(site), package_root, os.environ.get("PYTHONPATH", "")) if p)
        self._spawn("vbmcd", [_tool("vbmcd"), "--foreground"], self.dir / "vbmcd.out",
                    {"VIRTUALBMC_CONFIG": str(conf), "PYTHONPATH": path})

    def _spawn(self, name: str, argv: list[str], log: Path, env: dict) -> None:
        # posix_spawn, not Popen: the emulator outlives this process (`lab down` stops it), and a
        # Popen object dropped while its process runs is a ResourceWarning. Its own session: its
        # process group is it and the children it forks. Python's own descriptors are not
        # inherited (PEP 446); only these three are.
        clean = {k: v for k, v in os.environ.items() if not k.startswith(("SUSHY_EMULATOR_", "VIRTUALBMC_"))}
        pid = os.posix_spawn(argv[0], argv, {**clean, **env}, setsid=True, file_actions=[
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_OPEN, 1, str(log), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600),
            (os.POSIX_SPAWN_DUP2, 1, 2)])
        (self.dir / f"{name}.pid").write_text(f"{pid}\n")

    def _wait_listening(self, proto: str, port: int, what: str, log: Path) -> None:
        deadline = time.monotonic() + READY_WAIT
        while not _listening(proto, self.address, port):
            dead = [n for n in ("sushy", "vbmcd") if (self.dir / f"{n}.pid").exists() and self._pid(n) is None]
            if dead or time.monotonic() > deadline:
                tail = log.read_text(errors="replace")[-1500:] if log.exists() else ""
                self.stop(remove=False)
                raise BmcError(f"{what} is not listening on {self.address}:{port}/{proto}"
                               f"{' (it exited)' if dead else f' after {READY_WAIT:.0f}s'}:\n{tail}")
            time.sleep(0.2)

    def _pid(self, name: str) -> int | None:
        """The pid in the pid file if that process is still the one started here."""
        try:
            pid = int((self.dir / f"{name}.pid").read_text())
        except (OSError, ValueError):
            return None
        mark = str(self.dir).encode()
        try:
            if _state(pid) == "Z":
                return None
            seen = Path(f"/proc/{pid}/cmdline").read_bytes() + Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            return None
        return pid if mark in seen else None

    def _private_dir(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o700)

    def _host(self) -> str:
        return f"[{self.address}]" if ":" in self.address else self.address


def _tool(name: str) -> str:
    # the one installed beside this interpreter (the venv's), else whatever PATH has
    here = Path(sys.executable).parent / name
    found = str(here) if here.exists() else shutil.which(name)
    if not found:
        raise BmcError(f"{name} is not installed: the lab's BMCs need sushy-tools and virtualbmc "
                       "(pip install 'provisioner[lab]'), or run `lab up --no-bmc`")
    return found


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def _listening(proto: str, address: str, port: int) -> bool:
    """Whether this network namespace has a socket bound to address:port (read from /proc, so
    nothing is sent to the emulator and its port is never taken, even for a moment)."""
    ip = ipaddress.ip_address(address)
    table = f"/proc/net/{proto}{'6' if ip.version == 6 else ''}"
    want = f"{_proc_hex(ip)}:{port:04X}"
    try:
        lines = Path(table).read_text().splitlines()[1:]
    except OSError:
        return False
    for line in lines:
        fields = line.split()
        # TCP: state 0A is LISTEN; UDP: a bound socket is state 07
        if fields[1] == want and (proto == "udp" or fields[3] == "0A"):
            return True
    return False


def _proc_hex(ip) -> str:
    packed = ip.packed
    # /proc/net prints each 32-bit word of the address in host (little-endian) order
    return "".join(packed[i:i + 4][::-1].hex().upper() for i in range(0, len(packed), 4))


def _state(pid: int) -> str:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0]


def _kill_group(pid: int, wait: float = 15.0) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            _reap(pid)
            if not _group_alive(pid):
                break
            time.sleep(0.1)
        else:
            continue
        break
    _reap(pid)


def _reap(pid: int) -> None:
    """Collect it if this process started it (the same `lab up`, or a test)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def _group_alive(pgid: int) -> bool:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = Path(entry, "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[0] != "Z" and int(fields[2]) == pgid:
                return True
    return False


def _open_private(path: Path):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    return os.fdopen(fd, "w")


def _write_private(path: Path, text: str) -> None:
    with _open_private(path) as f:
        f.write(text)
