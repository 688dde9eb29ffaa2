"""One node as a booted systemd-nspawn container: the shared root read-only under the node's
own overlay, its network namespace handed in, systemd as PID 1.

Processes are tracked by PID (nspawn's, and the container's init) so that a later process,
`provisioner lab roles down` say, can stop what an earlier `up --keep` started.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

CONTAINER_ENV = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root",
                 "LANG=C.UTF-8", "USER=root", "LOGNAME=root"]

# Devices the role steps use: FUSE for the Gluster client's mounts, tun for libvirt and
# Neutron, KVM for nova-compute where the host has it. Bound only where the host has them.
DEVICES = ("/dev/fuse", "/dev/net/tun", "/dev/kvm")
# Beyond nspawn's defaults. CAP_NET_ADMIN: nspawn grants it only with networks it makes itself,
# not with --network-namespace-path, and firewalld, Neutron and the gateway's NAT need it (it
# reaches no further than the node's own namespace). CAP_IPC_LOCK: memlock for MariaDB and
# RabbitMQ. Deliberately not CAP_SYS_TIME (chrony would set the host's clock) nor
# CAP_SYS_MODULE (the steps would load modules into the host's kernel).
CAPABILITIES = ("CAP_NET_ADMIN", "CAP_IPC_LOCK")


class ContainerError(RuntimeError):
    pass


@dataclass(frozen=True)
class NodeDirs:
    base: Path

    @property
    def upper(self) -> Path:
        return self.base / "upper"

    @property
    def work(self) -> Path:
        return self.base / "work"

    @property
    def root(self) -> Path:
        return self.base / "root"

    @property
    def console(self) -> Path:
        return self.base / "console.log"

    @property
    def brick_image(self) -> Path:
        return self.base / "gluster.img"

    @property
    def brick(self) -> Path:
        return self.base / "brick"


# lv_gluster (Table 1: XFS at /export/gluster on every compute host) as an XFS file system on a
# sparse file, loop-mounted on the host and bound into the container: the containers have no
# loop devices and the host no device-mapper. 512 MiB: mkfs.xfs refuses less than 300 MiB.
BRICK_MOUNT = "/export/gluster"
BRICK_SIZE = 512 << 20


def make_brick(dirs: NodeDirs, size: int = BRICK_SIZE) -> None:
    dirs.brick.mkdir(parents=True, exist_ok=True)
    with open(dirs.brick_image, "wb") as f:
        f.truncate(size)
    _run(["mkfs.xfs", "-q", "-f", str(dirs.brick_image)])
    _run(["mount", "-t", "xfs", "-o", "loop", str(dirs.brick_image), str(dirs.brick)])


def remove_brick(dirs: NodeDirs) -> bool:
    """Unmount the brick (its loop device goes with it: mount -o loop sets autoclear) and delete it."""
    done = unmount(dirs.brick)
    if dirs.brick_image.exists():
        # a loop device the autoclear missed (the mount was detached lazily, say)
        r = subprocess.run(["losetup", "-j", str(dirs.brick_image), "-O", "NAME", "-n"],
                           capture_output=True, text=True)
        for dev in r.stdout.split():
            subprocess.run(["losetup", "-d", dev], capture_output=True)
        dirs.brick_image.unlink()
    return done


def mount_overlay(lower: Path, dirs: NodeDirs) -> None:
    for d in (dirs.upper, dirs.work, dirs.root):
        d.mkdir(parents=True, exist_ok=True)
    _run(["mount", "-t", "overlay", "overlay", "-o",
          f"lowerdir={lower},upperdir={dirs.upper},workdir={dirs.work}", str(dirs.root)])


def unmount(path: Path) -> bool:
    if not is_mounted(path):
        return False
    r = subprocess.run(["umount", str(path)], capture_output=True, text=True)
    if r.returncode != 0:
        # something still holds it open (a shell in the container's old cwd): detach it now,
        # the kernel frees it when the last user goes
        subprocess.run(["umount", "-l", str(path)], capture_output=True, text=True)
    return True


def is_mounted(path: Path) -> bool:
    target = str(Path(path).resolve())
    with open("/proc/mounts") as f:
        return any(line.split()[1] == target for line in f)


def mounts_under(path: Path) -> list[str]:
    prefix = str(Path(path).resolve()) + "/"
    with open("/proc/mounts") as f:
        return [line.split()[1] for line in f if line.split()[1].startswith(prefix)]


def seed_identity(root: Path, hostname: str, hosts: str, machine_id: str,
                  nameservers: tuple[str, ...] = ()) -> None:
    """Write what the installer would have: hostname, hosts, resolver; and a machine id of its own."""
    etc = root / "etc"
    (etc / "hostname").write_text(hostname + "\n")
    (etc / "hosts").write_text(hosts)
    (etc / "machine-id").write_text(machine_id + "\n")
    (etc / "resolv.conf").unlink(missing_ok=True)
    (etc / "resolv.conf").write_text("".join(f"nameserver {n}\n" for n in nameservers))


def nspawn_argv(dirs: NodeDirs, hostname: str, netns_path: str, brick: bool = False) -> list[str]:
    argv = ["systemd-nspawn", "-D", str(dirs.root), "-b", "--keep-unit", "--register=no",
            f"--machine=pvr-{hostname}", f"--hostname={hostname}",
            f"--network-namespace-path={netns_path}",
            # the namespace is the container's own: with this nspawn also mounts its
            # /proc/sys/net writable (per namespace: the gateway's ip_forward), else read-only
            "--private-network",
            # the node's identity is in its overlay; nothing from the host leaks in
            "--resolv-conf=off", "--timezone=off", "--link-journal=no",
            "--console=read-only"]
    argv += [f"--capability={c}" for c in CAPABILITIES]
    argv += [f"--bind={d}" for d in DEVICES if os.path.exists(d)]
    if brick:
        argv.append(f"--bind={dirs.brick}:{BRICK_MOUNT}")
    return argv


def start(dirs: NodeDirs, hostname: str, netns_path: str, brick: bool = False) -> subprocess.Popen:
    """Boot the container; returns nspawn's process. Its console goes to dirs.console."""
    with open(dirs.console, "ab") as log:
        # a session of its own: `up --keep` returns and the containers stay
        proc = subprocess.Popen(nspawn_argv(dirs, hostname, netns_path, brick), stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    return proc


def leader(nspawn_pid: int, timeout: float = 30.0) -> int:
    """The container's PID 1, as the host sees it (nspawn's child in a PID namespace of its own)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(nspawn_pid):
            raise ContainerError(f"systemd-nspawn (pid {nspawn_pid}) exited before the container started")
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            status = _status(int(name))
            if status.get("PPid") == str(nspawn_pid) and status.get("NSpid", "").split()[-1:] == ["1"]:
                return int(name)
        time.sleep(0.1)
    raise ContainerError(f"no container init under systemd-nspawn (pid {nspawn_pid}) after {timeout:.0f}s")


def exec_argv(leader_pid: int, argv: list[str], env: list[str] | None = None) -> list[str]:
    # all the container's namespaces, its root and cwd, and a clean environment: nothing of
    # the caller's (virtualenv, PYTHONPATH) should change what runs inside
    return ["nsenter", "-t", str(leader_pid), "-a", "-r", "-w", "--",
            "/usr/bin/env", "-i", *CONTAINER_ENV, *(env or []), *argv]


def wait_booted(leader_pid: int, timeout: float) -> str:
    """systemd's verdict on the boot (running, degraded, ...) once it has one."""
    deadline = time.monotonic() + timeout
    state = "unknown"
    while time.monotonic() < deadline:
        left = max(1.0, deadline - time.monotonic())
        try:
            r = subprocess.run(exec_argv(leader_pid, ["systemctl", "is-system-running", "--wait"]),
                               capture_output=True, text=True, timeout=left)
        except subprocess.TimeoutExpired:
            break
        state = r.stdout.strip() or state
        if state in ("running", "degraded", "maintenance", "stopping"):
            return state
        # no bus yet, or still "initializing"/"starting"
        time.sleep(0.5)
    raise ContainerError(f"container (init pid {leader_pid}) not booted after {timeout:.0f}s (last state {state})")


def stop(nspawn_pid: int | None, leader_pid: int | None, timeout: float = 60.0) -> None:
    """Power the container off cleanly (nspawn turns SIGTERM into a shutdown), else kill it."""
    pids = [p for p in (nspawn_pid, leader_pid) if p and alive(p)]
    if nspawn_pid in pids and _is_nspawn(nspawn_pid):
        os.kill(nspawn_pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        _reap(nspawn_pid)
        time.sleep(0.2)
    for p in pids:
        # SIGKILL to a PID namespace's init takes every process in it along
        if alive(p):
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
    while any(alive(p) for p in pids):
        _reap(nspawn_pid)
        time.sleep(0.1)


def alive(pid: int) -> bool:
    state = _status(pid).get("State", "")
    return bool(state) and not state.startswith(("Z", "X"))


def _is_nspawn(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip() == "systemd-nspawn"
    except OSError:
        return False


def _reap(pid: int | None) -> None:
    # only our own child can be reaped here; an `up --keep` from another process is init's
    if pid:
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass


def _status(pid: int) -> dict[str, str]:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {}
    return dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)


def _run(cmd: list[str]) -> None:
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise ContainerError(f"{' '.join(cmd)}: {r.stderr.strip()}")
