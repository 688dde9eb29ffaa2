"""The installer's part, for a node that is a container: the lab stands in for Anaconda only.

Inside the node's container, from the node's own address (the boot server hands a kickstart only
to it): fetch the node's kickstart, then run the parts of it that concern the first boot, as the
installer would, with /bin/sh:

  - %pre's `installing` callback, with the install token the kickstart carries;
  - %post's helpers (report, the failure trap, step, run) and its first-boot hand-over
    (templates/kickstarts/_firstboot.sh.j2): the CA when the API is HTTPS, the role steps and the
    runner from the boot server's /hooks.tar.gz, the unit installed and enabled, `installed`
    reported, and the first-boot credential from its answer written to /etc/provisioner/node.env.

Nothing of it is rewritten here: what runs is the kickstart's own text. What the rest of %pre and
%post do (partitioning, /etc/hosts, NetworkManager, dnf's repos, SSH keys) belongs to an
install on CentOS, not to these containers, whose root and identity the substrate gave them.
The lab never holds a node's first-boot credential: it stays in the container.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from provisioner.render.kscheck import check_kickstart

HANDOVER_MARKER = "# -- first-boot hand-over --"
SCRIPT = "/root/ks-script-firstboot"           # Anaconda runs its scripts from files, too
POST_LOG = "/root/provisioner-post.log"        # %post's --log, which its failure trap reads
UNIT = "provisioner-firstboot.service"
TRANSIENT = (7, 28, 52, 55, 56)      # curl: cannot connect, timed out, empty reply, send/receive failed
DROP_IN = f"/etc/systemd/system/{UNIT}.d/rehearsal.conf"


class InstallError(RuntimeError):
    pass


@dataclass(frozen=True)
class Handover:
    script: str       # the shell text run in the container


def handover_script(kickstart: str) -> Handover:
    """From a rendered kickstart: %post's helpers, %pre's `installing` callback, then %post's
    first-boot hand-over, under `set -e` as in %post."""
    check = check_kickstart(kickstart)
    if check.handler is None:
        raise InstallError(f"the kickstart does not parse: {'; '.join(check.errors)}")
    scripts = check.handler.scripts
    post = next((s.script for s in scripts if HANDOVER_MARKER in s.script), None)
    if post is None:
        raise InstallError(f"no %post in the kickstart holds the first-boot hand-over ({HANDOVER_MARKER!r})")
    head, sep, _ = post.partition("\nset -e\n")
    if not sep:
        raise InstallError("the hand-over's %post has no `set -e` line after its helpers")
    installing = next((line for s in scripts for line in s.script.splitlines()
                       if line.startswith("report installing ")), None)
    if installing is None:
        raise InstallError("no `report installing` callback in the kickstart's %pre")
    body = post[post.index(HANDOVER_MARKER):]
    return Handover(f"{head}\n{installing}\nset -e\n{body}")


def install(sub, hostname: str, mac: str, boot_url: str) -> None:
    """Fetch the node's kickstart from inside its container and run the hand-over there."""
    for attempt in range(3):
        r = sub.exec(hostname, ["curl", "-fsS", "-m", "60", "--retry", "5", "--retry-connrefused",
                                f"{boot_url}/ks/{mac}"])
        # curl's --retry leaves a reset or an empty reply alone (seen once, not again, right
        # after a container's boot); an answer (a 403, a 409) is never asked again
        if r.returncode not in TRANSIENT:
            break
        time.sleep(1 + attempt)
    if r.returncode != 0:
        raise InstallError(f"{hostname}: fetching its kickstart failed: {r.stderr.strip()}")
    script = handover_script(r.stdout).script
    # root-only, as the kickstart holds the install token; removed once run, as Anaconda does
    r = sub.exec(hostname, ["sh", "-c", f"umask 077 && cat > {SCRIPT}"], input=script)
    if r.returncode != 0:
        raise InstallError(f"{hostname}: cannot write {SCRIPT}: {r.stderr.strip()}")
    r = sub.exec(hostname, ["sh", "-c", f"/bin/sh {SCRIPT} > {POST_LOG} 2>&1; rc=$?; rm -f {SCRIPT}; exit $rc"])
    if r.returncode != 0:
        log = sub.exec(hostname, ["tail", "-n", "15", POST_LOG]).stdout.strip()
        raise InstallError(f"{hostname}: the kickstart's first-boot hand-over failed (exit {r.returncode}); "
                           f"{POST_LOG}:\n{log}")
    r = sub.exec(hostname, ["stat", "-c", "%a", "/etc/provisioner/node.env"])
    if r.stdout.strip() != "600":
        raise InstallError(f"{hostname}: /etc/provisioner/node.env is not there, owner-only ({r.stdout.strip()})")


def drop_in(settings: dict[str, str]) -> str:
    lines = ["# The roles lab's rehearsal settings (provisioner lab roles up); a real node has none.",
             "[Service]"]
    lines += [f"Environment={k}={v}" for k, v in settings.items()]
    return "\n".join(lines) + "\n"


def start_runner(sub, hostname: str, settings: dict[str, str], timeout: float = 60.0) -> None:
    """The unit %post enabled, started now (the container has booted already), with the
    rehearsal's settings in a drop-in; --no-block: it runs for as long as the plan takes."""
    if settings:
        r = sub.exec(hostname, ["sh", "-c", f"mkdir -p $(dirname {DROP_IN}) && cat > {DROP_IN}"],
                     input=drop_in(settings))
        if r.returncode != 0:
            raise InstallError(f"{hostname}: cannot write {DROP_IN}: {r.stderr.strip()}")
    before = _invocation(sub, hostname)
    r = sub.exec(hostname, ["systemctl", "daemon-reload"])
    if r.returncode == 0:
        r = sub.exec(hostname, ["systemctl", "start", "--no-block", UNIT])
    if r.returncode != 0:
        raise InstallError(f"{hostname}: cannot start {UNIT}: {r.stderr.strip()}")
    # until the job has run: before that the unit still shows how its last run ended, and a
    # watcher would take a rerun for the failure it is meant to fix
    deadline = time.monotonic() + timeout
    while _invocation(sub, hostname) == before:
        if time.monotonic() > deadline:
            raise InstallError(f"{hostname}: {UNIT} not started after {timeout:.0f}s")
        time.sleep(0.2)


def _invocation(sub, hostname: str) -> str:
    """The unit's InvocationID: a new one each time it starts."""
    return sub.exec(hostname, ["systemctl", "show", "-p", "InvocationID", "--value", UNIT]).stdout.strip()


def unit_state(sub, hostname: str) -> dict[str, str]:
    """The runner unit's ActiveState, SubState, Result and ExecMainStatus."""
    r = sub.exec(hostname, ["systemctl", "show", "-p", "ActiveState,SubState,Result,ExecMainStatus", UNIT],
                 timeout=30)
    return dict(line.split("=", 1) for line in r.stdout.splitlines() if "=" in line)


def journal_tail(sub, hostname: str, lines: int = 5) -> list[str]:
    r = sub.exec(hostname, ["journalctl", "-u", UNIT, "-n", str(lines), "-o", "cat", "--no-pager"], timeout=30)
    return [line for line in r.stdout.splitlines() if line.strip()]
