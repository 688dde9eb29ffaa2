"""The `provisioner` command line.

Every command takes --state-dir (or $PROVISIONER_STATE_DIR) and --site, before or after the
command's name. Exit status: 0 ok; 1 with a one-line reason on stderr otherwise.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
import time
from pathlib import Path

import click

from provisioner.registry import nodes as node_ops
from provisioner.config import DEFAULT_SITE, ConfigError
from provisioner.credentials import load_or_create
from provisioner.render.kscheck import check_kickstart
from provisioner.macaddr import InvalidMAC, canonical_mac
from provisioner.registry.db import STATES, RegistryError
from provisioner.render.storage import FIRMWARES


def default_state_dir() -> Path:
    if os.geteuid() == 0:
        return Path("/var/lib/provisioner")
    base = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return Path(base) / "provisioner"


def _remember(name):
    """Keep a value typed on the group or on the command for every command to read."""
    def callback(ctx, _param, value):
        if value is not None:
            ctx.find_root().ensure_object(dict)[name] = value
        return value
    return callback


def common_options(f):
    """--state-dir and --site, accepted on the group and on every command."""
    f = click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
                     expose_value=False, callback=_remember("state_dir"),
                     help="State directory (registry, secrets). Default: $PROVISIONER_STATE_DIR, else "
                          "/var/lib/provisioner as root, else ~/.local/state/provisioner.")(f)
    f = click.option("--site", "site", type=str, default=None,
                     expose_value=False, callback=_remember("site"),
                     help="Site file. Default: $PROVISIONER_SITE, else the embedded report testbed.")(f)
    return f


def fail_cleanly(f):
    """Turn expected errors into one line on stderr and exit status 1."""
    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        try:
            return f(*args, **kwargs)
        except RegistryError as e:
            raise click.ClickException(e.detail) from None
        except (ConfigError, InvalidMAC, ValueError, OSError) as e:
            raise click.ClickException(str(e)) from None
    return wrapper


def _settings() -> tuple[Path, str]:
    # typed on the command line, then the environment, then the default
    obj = click.get_current_context().find_root().ensure_object(dict)
    env_dir = os.environ.get("PROVISIONER_STATE_DIR")
    state_dir = obj.get("state_dir") or (Path(env_dir) if env_dir else default_state_dir())
    return state_dir, obj.get("site") or os.environ.get("PROVISIONER_SITE") or DEFAULT_SITE


def _context():
    from provisioner.app import open_context
    state_dir, site = _settings()
    return open_context(state_dir, site, reload_templates=False)


@click.group()
@common_options
@click.option("-v", "--verbose", is_flag=True, help="Log more.")
def main(verbose: bool):
    """Bare-metal provisioning: registry, PXE boot files and per-MAC kickstarts."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@main.command()
@common_options
@click.option("--http", "http", default="127.0.0.1:8080", show_default=True, help="HOST:PORT to serve HTTP on.")
@click.option("--tftp", "tftp", default=None,
              help="HOST:PORT to serve TFTP on. Default: the --http host, port 69 as root, else 6969.")
@click.option("--no-tftp", is_flag=True, help="Do not serve TFTP.")
@click.option("--boot", "boot", default=None,
              help="HOST:PORT of the boot server, where machines fetch kernels, initrds and kickstarts "
                   "and report back. Default: the --http host, port + 1.")
@click.option("--no-boot", is_flag=True, help="Do not start the boot server.")
@click.option("--boot-processes", default=2, show_default=True, type=click.IntRange(1, 64),
              help="Boot server processes, sharing its port.")
@click.option("--workers", default=2, show_default=True, type=click.IntRange(1, 64),
              help="API processes, sharing its port.")
@click.option("--threads", default=16, show_default=True, type=click.IntRange(1, 256),
              help="Threads running the API's requests in each API process.")
@click.option("--max-connections", type=click.IntRange(16, 1 << 20), default=None,
              help="Open connections per HTTP process; more wait in the kernel's queue. "
                   "Default: what the open-files limit has room for.")
@click.option("--head-timeout", type=click.FloatRange(0.1, 3600), default=30.0, show_default=True,
              help="Seconds from a connection's accept to the end of its request's head (and TLS handshake).")
@click.option("--tftp-per-source", type=click.IntRange(1, 65536), default=16, show_default=True,
              help="TFTP transfers one source address may hold at once (a PXE ROM needs 1-3; raise it "
                   "behind a relay or NAT that makes many machines one address).")
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="The API's TLS certificate (PEM, chain included), when service.url is https. "
                   "Default: one from the service's own CA in the state directory.")
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="The key of --tls-cert.")
@fail_cleanly
def serve(http: str, tftp: str | None, no_tftp: bool, boot: str | None, no_boot: bool, boot_processes: int,
          workers: int, threads: int, max_connections: int | None, head_timeout: float,
          tftp_per_source: int, tls_cert: Path | None, tls_key: Path | None):
    """Run the service: the API (HTTPS when the site's service.url is https), the boot server for
    machines (plain HTTP), boot loaders over TFTP."""
    from provisioner.http.loop import Limits
    from provisioner.server import serve_forever
    host, port = _hostport(http)
    if no_tftp:
        tftp_at = None
    elif tftp:
        tftp_at = _hostport(tftp, "--tftp")
    else:
        tftp_at = (host, 69 if os.geteuid() == 0 else 6969)
    boot_at = None if no_boot else _hostport(boot, "--boot") if boot else (host, port + 1)
    state_dir, site = _settings()
    from provisioner.config import load_site
    from provisioner.tls import api_context
    site = load_site(site)
    api_ssl = api_context(site, state_dir, tls_cert, tls_key, extra_names=(host,))
    logging.getLogger().setLevel(logging.INFO)
    serve_forever(state_dir, site, host, port, workers=workers, threads=threads, tftp=tftp_at,
                  tftp_per_source=tftp_per_source, boot=boot_at,
                  boot_processes=boot_processes, limits=Limits(max_conns=max_connections, head_timeout=head_timeout),
                  api_ssl=api_ssl)


@main.command()
@common_options
@fail_cleanly
@click.option("--read-only", is_flag=True,
              help="The read-only token instead: listings, events, plans and barriers, no writes.")
def token(read_only: bool):
    """Print the admin API token (generated on first run)."""
    state_dir, _ = _settings()
    creds = load_or_create(state_dir)
    click.echo(creds.reader_token if read_only else creds.admin_token)


def bmc_options(f):
    """--bmc, --bmc-user, --bmc-password-file and --no-bmc, read back by _bmc_input."""
    f = click.option("--no-bmc", is_flag=True, default=None, expose_value=False, callback=_remember("no_bmc"),
                     help="Forget the node's BMC.")(f)
    f = click.option("--bmc-password-file", type=click.File("r"), default=None, expose_value=False,
                     callback=_remember("bmc_password_file"),
                     help="A file holding the BMC password (- for stdin): never on the command line, "
                          "where ps and shell history would show it.")(f)
    f = click.option("--bmc-user", default=None, expose_value=False, callback=_remember("bmc_user"),
                     help="The BMC user name.")(f)
    f = click.option("--bmc", "bmc_url", default=None, expose_value=False, callback=_remember("bmc_url"),
                     metavar="URL", help="redfish://host[:port]/redfish/v1/Systems/<id>, redfish+https://..., "
                                         "ipmi://host[:port] or libvirt://<domain>.")(f)
    return f


def _bmc_input(new: bool) -> dict:
    obj = click.get_current_context().find_root().ensure_object(dict)
    given = {k: obj[k] for k in ("bmc_url", "bmc_user", "bmc_password_file") if obj.get(k) is not None}
    if obj.get("no_bmc"):
        if given:
            raise click.UsageError("--no-bmc with --bmc, --bmc-user or --bmc-password-file")
        return {"bmc": None}
    if not given:
        return {}
    if new and len(given) < 3:
        raise click.UsageError("a BMC needs --bmc, --bmc-user and --bmc-password-file")
    bmc = {}
    if "bmc_url" in given:
        bmc["url"] = given["bmc_url"]
    if "bmc_user" in given:
        bmc["username"] = given["bmc_user"]
    if "bmc_password_file" in given:
        bmc["password"] = given["bmc_password_file"].read().rstrip("\n")
    return {"bmc": bmc}


@main.group()
def nodes():
    """Register, list, show and remove nodes."""


@nodes.command("add")
@common_options
@click.option("--mac", required=True, help="The install NIC's MAC.")
@click.option("--hostname", required=True)
@click.option("--ip", required=True)
@click.option("--role", "roles", multiple=True, required=True, help="Repeat for several roles.")
@click.option("--interface", default="eth0", show_default=True, help="The install NIC's name.")
@click.option("--alias", "aliases", multiple=True)
@click.option("--nic", "nics", multiple=True, metavar="MAC,NAME[,MODE]", help="Another NIC; MODE dhcp or off.")
@click.option("--disk-bytes", type=int, default=None)
@click.option("--firmware", type=click.Choice(FIRMWARES), default=None,
              help="bios or uefi. Default: learned from the boot loader the machine first asks with.")
@bmc_options
@fail_cleanly
def nodes_add(mac, hostname, ip, roles, interface, aliases, nics, disk_bytes, firmware):
    """Register a node."""
    ctx = _context()
    data = {"mac": mac, "hostname": hostname, "ip": ip, "roles": list(roles), "interface": interface,
            "aliases": list(aliases), "nics": [_nic(n) for n in nics]}
    if disk_bytes is not None:
        data["disk_bytes"] = disk_bytes
    if firmware is not None:
        data["firmware"] = firmware
    data.update(_bmc_input(new=True))
    node = node_ops.register(ctx.site, ctx.registry, data)
    click.echo(f"registered {node.hostname} ({node.mac}, {node.spec.ip}), armed for install")


@nodes.command("enroll")
@common_options
@click.argument("mac")
@click.option("--hostname", required=True)
@click.option("--ip", required=True)
@click.option("--role", "roles", multiple=True, required=True, help="Repeat for several roles.")
@click.option("--interface", default=None, help="The install NIC's name. Default: the NIC it booted from.")
@click.option("--alias", "aliases", multiple=True)
@click.option("--nic", "nics", multiple=True, metavar="MAC,NAME[,MODE]",
              help="Its other NICs, as for `nodes add`. Default: every other NIC inspection found, off.")
@click.option("--firmware", type=click.Choice(FIRMWARES), default=None,
              help="bios or uefi. Default: what inspection found.")
@bmc_options
@fail_cleanly
def nodes_enroll(mac, hostname, ip, roles, interface, aliases, nics, firmware):
    """Register a discovered machine: its disk size and NICs come from its inventory."""
    ctx = _context()
    data = {"hostname": hostname, "ip": ip, "roles": list(roles)}
    if interface is not None:
        data["interface"] = interface
    if aliases:
        data["aliases"] = list(aliases)
    if nics:
        data["nics"] = [_nic(n) for n in nics]
    if firmware is not None:
        data["firmware"] = firmware
    data.update(_bmc_input(new=True))
    node = node_ops.enroll(ctx.site, ctx.registry, canonical_mac(mac), data)
    click.echo(f"enrolled {node.mac} as {node.hostname} ({node.spec.ip}, {node.spec.interface}, "
               f"disk {node.spec.disk_bytes} bytes), armed for install")


@nodes.command("change")
@common_options
@click.argument("mac")
@click.option("--firmware", type=click.Choice(FIRMWARES + ("learn",)), default=None,
              help="bios or uefi; learn: forget it, and take it from the next boot loader that asks.")
@bmc_options
@fail_cleanly
def nodes_change(mac, firmware):
    """Change a node registered through the API or CLI (site nodes change in the site file)."""
    ctx = _context()
    data = {} if firmware is None else {"firmware": None if firmware == "learn" else firmware}
    data.update(_bmc_input(new=False))
    if not data:
        raise click.UsageError("nothing to change: give --firmware, or --bmc, --bmc-user, --bmc-password-file "
                               "or --no-bmc")
    node = node_ops.change(ctx.site, ctx.registry, canonical_mac(mac), data)
    bmc = node.spec.bmc.url if node.spec.bmc else "none"
    click.echo(f"changed {node.hostname} ({node.mac}): firmware {node.spec.firmware or 'to be learned'}, "
               f"BMC {bmc}")


@nodes.command("list")
@common_options
@click.option("--role", default=None)
@click.option("--state", type=click.Choice(STATES), default=None)
@click.option("--json", "as_json", is_flag=True)
@fail_cleanly
def nodes_list(role, state, as_json):
    """List nodes with their state and last event."""
    ctx = _context()
    found = [] if state == "discovered" else ctx.registry.list(role=role, state=state)
    discovered = ctx.registry.discovered() if role is None and state in (None, "discovered") else []
    if as_json:
        click.echo(json.dumps([n.public() for n in [*found, *discovered]], indent=2))
        return
    rows = [("HOSTNAME", "MAC", "IP", "ROLES", "STATE", "NETBOOT", "LAST EVENT")]
    for n in found:
        last = n.last_event
        rows.append((n.hostname, n.mac, n.spec.ip, ",".join(n.spec.roles), n.state,
                     "armed" if n.netboot else "off",
                     f"{last.type} {_age(last.at)} ago" if last else "-"))
    for d in discovered:
        disks = ",".join(f"{x['name']}:{x['bytes'] / 1e9:.0f}GB" for x in d.inventory["disks"])
        rows.append(("-", d.mac, "-", "-", d.state, "off", f"inspected {_age(d.updated_at)} ago ({disks or 'no disks'})"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())


@nodes.command("show")
@common_options
@click.argument("mac")
@fail_cleanly
def nodes_show(mac):
    """Show one node (or discovered machine) and its recent events."""
    ctx = _context()
    node = ctx.registry.find(canonical_mac(mac)) or ctx.registry.get_discovered(canonical_mac(mac))
    out = node.public()
    out["events"] = [e.as_dict() for e in ctx.registry.events(node.mac, limit=20)]
    click.echo(json.dumps(out, indent=2))


@nodes.command("rm")
@common_options
@click.argument("mac")
@fail_cleanly
def nodes_rm(mac):
    """Remove a node or a discovered machine (its event log is kept)."""
    registry, mac = _context().registry, canonical_mac(mac)
    if registry.find(mac) is None and registry.find_discovered(mac) is not None:
        click.echo(f"removed discovered machine {registry.forget_discovered(mac).mac}")
        return
    node = registry.remove(mac)
    click.echo(f"removed {node.hostname} ({node.mac})")


@main.command()
@common_options
@click.argument("mac")
@fail_cleanly
def render(mac):
    """Print a node's kickstart."""
    ctx = _context()
    click.echo(ctx.renderer.kickstart(ctx.registry.get(canonical_mac(mac))), nl=False)


@main.command()
@common_options
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--diff", "with_diff", is_flag=True, help="Print a unified diff of each changed kickstart.")
@fail_cleanly
def regenerate(out, with_diff):
    """Write every node's kickstart to OUT and report what changed since the last run."""
    from provisioner.render.regenerate import regenerate as run
    ctx = _context()
    start = time.monotonic()

    def progress(done, total):
        click.echo(f"\rrendered {done}/{total}", nl=done == total, err=True)

    result = run(ctx.registry, ctx.renderer, out, with_diff=with_diff,
                 progress=progress if sys.stderr.isatty() else None)
    for change in result.changes:
        click.echo(change.describe())
        for line in change.diff:
            click.echo(line, nl=not line.endswith("\n"))
    click.echo(f"{result.summary()} ({time.monotonic() - start:.1f}s) in {out}")


@main.command()
@common_options
@fail_cleanly
def validate():
    """Render every node's kickstart and parse it as the installer would (pykickstart, RHEL 9)."""
    ctx = _context()
    for warning in ctx.site.warnings:
        click.echo(f"warning: {warning}")
    bad = 0
    found = ctx.registry.list()
    for node in found:
        try:
            problems = _problems(ctx, node)
        except (ConfigError, ValueError) as e:
            problems = [str(e)]
        if problems:
            bad += 1
            for p in problems:
                click.echo(f"FAIL {node.hostname} ({node.mac}): {p.strip()}")
        else:
            click.echo(f"ok   {node.hostname} ({node.mac})")
    if bad:
        raise click.ClickException(f"{bad} of {len(found)} kickstarts fail")
    click.echo(f"all {len(found)} kickstarts parse under RHEL9 with no error and no warning")


def _resolve(registry, names) -> list:
    """Nodes by MAC (any NIC's), host name or alias, in the order given, each once."""
    from provisioner.registry.db import NotFound
    by_name = {}
    for n in registry.list():
        for name in (n.hostname,) + n.spec.aliases:
            by_name[name] = n
    found, seen = [], set()
    for name in names:
        node = by_name.get(name)
        if node is None:
            try:
                node = registry.get(canonical_mac(name))
            except (InvalidMAC, NotFound):
                raise click.ClickException(f"no node is named {name!r} or has it as a MAC") from None
        if node.mac not in seen:
            seen.add(node.mac)
            found.append(node)
    return found


power_limit_option = click.option(
    "--parallel", type=click.IntRange(1, 200), default=20, show_default=True,
    help="BMC sessions at once, however many nodes are named.")
power_deadline_option = click.option(
    "--deadline", type=click.FloatRange(1, 3600), default=120, show_default=True,
    help="Seconds for a node's power state to become what was asked.")


@main.command("power")
@common_options
@click.argument("action", type=click.Choice(["on", "off", "cycle", "status"]))
@click.argument("names", metavar="NODE...", nargs=-1, required=True)
@power_limit_option
@power_deadline_option
@fail_cleanly
def power_cmd(action, names, parallel, deadline):
    """Power nodes (by host name or MAC) on, off or through a cycle, or show their power state,
    through their BMCs. Each node's line says what happened; exit status 1 if any failed."""
    from provisioner.power import control
    ctx = _context()
    outcomes = control.power_many(ctx.registry, _resolve(ctx.registry, names), action, limit=parallel,
                                  settings=control.Settings(deadline=deadline))
    failed = [o for o in outcomes if not o.ok]
    for o in outcomes:
        if o.ok:
            click.echo(f"{o.hostname:<16} {o.power}")
        else:
            click.echo(f"{o.hostname:<16} FAILED: {o.error}", err=True)
    if failed:
        raise click.ClickException(f"power {action}: {len(failed)} of {len(outcomes)} nodes failed")


@main.command("rebuild")
@common_options
@click.argument("names", metavar="NODE...", nargs=-1, required=True)
@click.option("--power-cycle", is_flag=True,
              help="Then set a one-time network boot on each node's BMC and power-cycle it.")
@power_limit_option
@power_deadline_option
@fail_cleanly
def rebuild_cmd(names, power_cycle, parallel, deadline):
    """Re-arm nodes for install with new install tokens (the old ones stop working)."""
    from provisioner.power import control
    from provisioner.power.pool import run_bounded
    ctx = _context()
    found = _resolve(ctx.registry, names)
    if not power_cycle:
        for n in found:
            ctx.registry.rebuild(n.mac)
            click.echo(f"{n.hostname:<16} armed for install")
        return
    settings = control.Settings(deadline=deadline)

    def one(n):
        try:
            _, state = control.rebuild_and_cycle(ctx.registry, n.mac, settings=settings)
            return n, None, state
        except RegistryError as e:
            return n, e.detail, None
    results = run_bounded(one, found, parallel)
    for n, error, state in results:
        if error:
            click.echo(f"{n.hostname:<16} FAILED: {error}", err=True)
        else:
            click.echo(f"{n.hostname:<16} armed for install, booting from the network (power {state})")
    failed = sum(1 for _, error, _ in results if error)
    if failed:
        raise click.ClickException(f"rebuild --power-cycle: {failed} of {len(results)} nodes failed "
                                   "(each says whether it was armed)")


@main.command("plan")
@common_options
@click.argument("mac")
@fail_cleanly
def plan_cmd(mac):
    """Print a node's first-boot plan with each step's state."""
    from provisioner.plan import load_plan, node_plan
    ctx = _context()
    node = ctx.registry.get(canonical_mac(mac))
    rows = node_plan(load_plan(), ctx.registry, node)
    click.echo(f"{node.hostname} ({node.mac}), {node.state}: {len(rows)} steps")
    for r in rows:
        wait = f"  [waits for {r['wait']}]" if r["wait"] else ""
        click.echo(f"  {r['state']:<8} {r['id']:<52} {r['report']}{wait}")


@main.group()
def lab():
    """The libvirt lab: the registry's nodes as VMs that PXE-boot through this service."""


def default_lab_dir() -> Path:
    # qemu runs as its own user: the disks and consoles live where it may reach them
    if os.geteuid() == 0:
        return Path("/var/lib/libvirt/images/provisioner-lab")
    return Path(os.path.expanduser("~/.local/share/provisioner-lab"))


lab_uri_option = click.option("--uri", default="qemu:///system", show_default=True, help="libvirt connection URI.")
lab_dir_option = click.option("--work-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
                              help="Disks and console logs (default /var/lib/libvirt/images/provisioner-lab "
                                   "as root, else ~/.local/share/provisioner-lab).")


def _lab(uri, work_dir, **settings):
    import libvirt

    from provisioner.lab.vms import Lab, LabSettings
    ctx = _context()
    try:
        conn = libvirt.open(uri)
    except libvirt.libvirtError as e:
        raise click.ClickException(f"cannot connect to {uri}: {e}") from None
    return ctx, Lab(conn, ctx.site, LabSettings(work_dir or default_lab_dir(), **settings))


@lab.command("up")
@common_options
@lab_uri_option
@click.option("--watch/--no-watch", default=True, help="Show each node's state until all are installed.")
@click.option("--installer", type=click.Choice(["rehearsal", "anaconda"]), default="rehearsal", show_default=True,
              help="rehearsal: the offline installer built here (a Debian kernel and a busybox initrd); "
                   "anaconda: whatever `distro import --from MIRROR` brought in.")
@click.option("--secure-boot", is_flag=True,
              help="Every node whose firmware is uefi boots OVMF with Microsoft's keys enrolled and Secure Boot on.")
@click.option("--secure-boot-node", "secure_boot_nodes", multiple=True, metavar="HOSTNAME",
              help="This node boots with Secure Boot (and UEFI, if its firmware is still to be learned); "
                   "the others as their firmware says. Repeatable.")
@click.option("--bmc/--no-bmc", "with_bmc", default=True,
              help="Emulated BMCs for the VMs: sushy-tools' Redfish emulator and VirtualBMC (IPMI), on a "
                   "loopback address of this network namespace.")
@click.option("--ipmi-node", "ipmi_nodes", multiple=True, metavar="HOSTNAME",
              help="This node's BMC is its IPMI one (ipmi://), the others' their Redfish system. Repeatable.")
@click.option("--bmc-port", type=click.IntRange(1, 65535), default=8000, show_default=True,
              help="The Redfish emulator's TCP port; IPMI BMCs take UDP ports from --ipmi-port up, one per VM.")
@click.option("--ipmi-port", type=click.IntRange(1, 65000), default=6230, show_default=True)
@click.option("--discover", is_flag=True,
              help="Build the --machines file's nodes as VMs the service does not know: they PXE-boot, are "
                   "discovered, are enrolled with the names, addresses and roles that file gives them and their "
                   "lab BMC, and are power-cycled through it into the install. The service's site needs "
                   "discovery: {enabled: true}.")
@click.option("--machines", "machines_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None,
              help="With --discover: a site file whose nodes: are the machines (MACs, NICs, disk sizes) and what "
                   "to enroll them as. Default: the embedded report testbed's. They must not be registered, so "
                   "it is not the service's --site (whose nodes are registered as it is read).")
@click.option("--discover-timeout", type=click.FloatRange(10, 86400), default=1200, show_default=True,
              help="Seconds for every machine to be discovered.")
@lab_dir_option
@fail_cleanly
def lab_up(uri, watch, installer, secure_boot, secure_boot_nodes, with_bmc, ipmi_nodes, bmc_port, ipmi_port,
           discover, machines_file, discover_timeout, work_dir):
    """Define and start the lab's networks, disks, VMs (network boot first) and their BMCs."""
    from provisioner.lab import discover as disc
    from provisioner.lab.bmc import BmcError
    from provisioner.lab.vms import LabError
    ctx, the_lab = _lab(uri, work_dir, secure_boot=secure_boot, secure_boot_nodes=frozenset(secure_boot_nodes))
    if discover:
        if not with_bmc:
            raise click.UsageError("--discover installs the machines by power-cycling them through their BMCs: "
                                   "not with --no-bmc")
        try:
            nodes = disc.machines(ctx, machines_file)
        except disc.DiscoverError as e:
            raise click.ClickException(str(e)) from None
    else:
        if machines_file is not None:
            raise click.UsageError("--machines goes with --discover")
        nodes = ctx.registry.list()
    names = {n.hostname for n in nodes}
    for option, given in (("--secure-boot-node", secure_boot_nodes), ("--ipmi-node", ipmi_nodes)):
        unknown = sorted(set(given) - names)
        if unknown:
            raise click.ClickException(f"{option}: no such node: {', '.join(unknown)}")
    if installer == "rehearsal":
        import tempfile

        from provisioner.boot import distros
        from provisioner.lab import rehearsal
        with tempfile.TemporaryDirectory() as tmp:
            tree = rehearsal.make_tree(Path(tmp), ctx.site.os_name, ctx.site.os_version, ctx.site.os_arch)
            distros.import_tree(ctx.state_dir, str(tree))
        click.echo(f"rehearsal installer imported as {ctx.site.distro}")
    if discover:
        try:
            for line in disc.ensure_inspection(ctx.state_dir):
                click.echo(f"built {line}")
        except disc.DiscoverError as e:
            raise click.ClickException(str(e)) from None
    try:
        if discover:
            the_lab.up(nodes, start=False, progress=click.echo, reserve=False, pool=ctx.site.discovery.dhcp_pool)
        else:
            the_lab.up(nodes, start=False, progress=click.echo)
        bmcs = None
        if with_bmc:
            bmcs = _lab_bmcs(ctx, uri, work_dir, bmc_port, ipmi_port)
            endpoints = bmcs.start(the_lab.machines(nodes), progress=click.echo)
            chosen = {h: (e.ipmi if h in ipmi_nodes else e.redfish) for h, e in endpoints.items()}
        # power on: a VM the service knows installs, one it does not is discovered
        the_lab.start(nodes, progress=click.echo)
    except (LabError, BmcError) as e:
        raise click.ClickException(str(e)) from None
    if discover:
        try:
            try:
                disc.wait_discovered(ctx.registry, nodes, discover_timeout, _progress_line)
            finally:
                click.echo()
            enrolled = [disc.enroll(ctx, n, chosen[n.hostname], bmcs.credentials()) for n in nodes]
        except disc.DiscoverError as e:
            raise click.ClickException(str(e)) from None
        for n in enrolled:
            click.echo(f"enrolled {n.hostname} ({n.mac}, {n.spec.ip}, {', '.join(n.spec.roles)}), BMC {n.spec.bmc.url}")
        the_lab.reserve(nodes, progress=click.echo)
        _lab_power_cycle(ctx, enrolled)
        nodes = enrolled
    elif with_bmc:
        _lab_give_bmcs(ctx, nodes, chosen, bmcs.credentials())
    if not watch:
        return
    macs = {n.mac for n in nodes}
    try:
        while True:
            now_nodes = [n for n in ctx.registry.list() if n.mac in macs]
            _progress_line(now_nodes)
            if all(n.state in ("installed", "configuring", "deployed", "failed") for n in now_nodes):
                click.echo()
                return
            time.sleep(2)
    except KeyboardInterrupt:
        click.echo()


def _progress_line(nodes) -> None:
    line = "  ".join(f"{n.hostname or n.mac}:{n.state}"
                     + (f"({n.last_event.type} {_age(n.last_event.at)} ago)" if n.last_event else "")
                     for n in nodes)
    click.echo(f"\r{line}", nl=False)


def _lab_bmcs(ctx, uri, work_dir, bmc_port=8000, ipmi_port=6230):
    from provisioner.lab.bmc import LabBmcs
    return LabBmcs(work_dir or default_lab_dir(), ctx.state_dir, uri, redfish_port=bmc_port, ipmi_base_port=ipmi_port)


def _lab_power_cycle(ctx, nodes) -> None:
    """Each node through its BMC: a one-time network boot, then a power cycle (on, if off)."""
    from provisioner.power import control
    outcomes = control.power_many(ctx.registry, nodes, "cycle", pxe_once=True)
    for o, n in zip(outcomes, nodes):
        if o.ok:
            click.echo(f"{o.hostname}: one-time network boot and power cycle through {n.spec.bmc.url}: {o.power}")
    failed = [o for o in outcomes if not o.ok]
    if failed:
        raise click.ClickException("; ".join(o.error for o in failed))


def _lab_give_bmcs(ctx, nodes, chosen, credentials) -> None:
    """The lab's BMC for each node registered through the API or CLI that has none; a site file's
    node keeps what the site file says (the registry would be rewritten from it at the next read)."""
    user, password = credentials
    for n in nodes:
        url = chosen[n.hostname]
        if n.spec.bmc is None and n.source != "site":
            bmc = {"url": url, "username": user, "password": password}
            node_ops.change(ctx.site, ctx.registry, n.mac, {"bmc": bmc})
            click.echo(f"{n.hostname}: BMC {url}")
        elif n.spec.bmc is None or n.spec.bmc.url != url:
            why = "the site file declares the node" if n.source == "site" else "it has one"
            click.echo(f"{n.hostname}: lab BMC at {url} (not set: {why})")


@lab.command("down")
@common_options
@lab_uri_option
@lab_dir_option
@fail_cleanly
def lab_down(uri, work_dir):
    """Stop the lab's BMCs; remove every domain, disk, pool and network the lab made."""
    ctx, the_lab = _lab(uri, work_dir)
    _lab_bmcs(ctx, uri, work_dir).stop(progress=click.echo)
    the_lab.down(progress=click.echo)


@lab.command("status")
@common_options
@lab_uri_option
@lab_dir_option
@fail_cleanly
def lab_status(uri, work_dir):
    """Each lab VM's power state and its node's state, and whether the lab's BMCs run."""
    ctx, the_lab = _lab(uri, work_dir)
    power = the_lab.status()
    for n in ctx.registry.list():
        click.echo(f"{n.hostname:<12} {power.get(n.hostname, 'absent'):<9} {n.state}")
    running = _lab_bmcs(ctx, uri, work_dir).running()
    click.echo(f"BMCs: {', '.join(running) if running else 'none running'}")


@lab.command("console")
@common_options
@click.argument("node")
@lab_dir_option
@fail_cleanly
def lab_console(node, work_dir):
    """Follow a lab VM's serial console (its log file)."""
    from provisioner.lab.vms import LabSettings
    path = LabSettings(work_dir or default_lab_dir()).console_log(node)
    if not path.exists():
        raise click.ClickException(f"no console log for {node} at {path}")
    os.execvp("tail", ["tail", "-n", "+1", "-f", str(path)])


@lab.group("roles")
def lab_roles():
    """The roles lab: the registry's nodes as Debian 13 system containers (systemd-nspawn),
    rehearsing the first-boot role steps against the real service.

    One root (debootstrap, with the role steps' packages) is built once and cached; each node
    boots it under its own overlay, with its registry addresses on an install network and a
    stand-in public network that live in network namespaces made for the lab. The service runs
    there too; each node is installed by its own kickstart's first-boot hand-over and runs the
    real first-boot runner (README, "Role rehearsal").
    """


roles_work_option = click.option(
    "--work-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
    help="Overlays, consoles, the lab's service and state (default /var/lib/provisioner-lab-roles as root).")
roles_cache_option = click.option(
    "--cache-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
    help="Where built roots are kept (default ~/.cache/provisioner/lab-roles).")


def _roles_substrate(work_dir, cache_dir, recipe="full", ctx=None):
    from provisioner.lab.roles import Substrate
    ctx = ctx or _context()
    return Substrate.from_site(ctx.site, ctx.registry.list(), cache_dir, work_dir, recipe=recipe,
                               progress=click.echo)


@lab_roles.command("up")
@common_options
@click.option("--keep", is_flag=True,
              help="Leave the containers and the service up when the rehearsal ends, for inspection "
                   "(`lab roles shell NODE`); take them down with `lab roles down`.")
@click.option("--until", "until", metavar="STEP", default=None,
              help="Run the plan only up to this step (plan.yaml's order, e.g. "
                   "03-glusterfs-controller/01-glusterfs-probe): each node stops after its last step before it.")
@click.option("--barrier-timeout", type=click.IntRange(1, 14400), default=None,
              help="Seconds a node waits at a barrier before its step fails naming the missing hosts "
                   "(the runner's default: 14400).")
@click.option("--barrier-poll", type=click.FloatRange(0.2, 600), default=None,
              help="Seconds between a waiting node's looks at its barrier (the runner's default: 10).")
@click.option("--timeout", type=click.FloatRange(1), default=None,
              help="Give up watching after this many seconds (default: until every node is done or failed).")
@click.option("--recipe", type=click.Choice(["full", "base"]), default="full", show_default=True,
              help="full: the root with every role's packages; base: systemd and the common tools only.")
@click.option("--boot-timeout", type=float, default=300, show_default=True, help="Seconds for all nodes to boot.")
@roles_work_option
@roles_cache_option
@fail_cleanly
def lab_roles_up(keep, until, barrier_timeout, barrier_poll, timeout, recipe, boot_timeout, work_dir, cache_dir):
    """Boot one container per registered node, run the service beside them, install each node
    through its kickstart's first-boot hand-over and run the first-boot runner in every one: a
    live table while it runs, then a summary. Exit status 1 unless every node is done."""
    from rich.console import Console

    from provisioner.lab.roles import SubstrateError
    from provisioner.lab.roles.installer import InstallError
    from provisioner.lab.roles.rehearse import Rehearsal
    from provisioner.lab.roles.service import ServiceError
    from provisioner.lab.roles.watch import summary
    ctx = _context()
    sub = _roles_substrate(work_dir, cache_dir, recipe, ctx)
    try:
        rehearsal = Rehearsal(sub, ctx.site, ctx.registry.list(), until=until, barrier_timeout=barrier_timeout,
                              barrier_poll=barrier_poll, progress=click.echo)
        rehearsal.up(boot_timeout=boot_timeout)
    except (SubstrateError, ServiceError, InstallError) as e:
        raise click.ClickException(str(e)) from None
    t = sub.timings
    click.echo(f"root {'cached' if t.root_cached else 'built'} in {t.root:.0f}s, networks {t.network:.1f}s, "
               f"{len(t.states)} nodes booted in {t.boot:.1f}s")
    console = Console()
    try:
        rehearsal.start()
        rows = rehearsal.watch(timeout, console=console)
    except KeyboardInterrupt:
        rows = rehearsal.watcher.rows
    except (InstallError, SubstrateError) as e:
        raise click.ClickException(str(e)) from None
    finally:
        if keep:
            rehearsal.close()
        else:
            rehearsal.down()
    console.print(summary(rows))
    if keep:
        click.echo("left up: `provisioner lab roles shell NODE` for a shell in a node, "
                   "`provisioner lab roles down` to take it all down")
    unfinished = [r.node for r in rows if r.state != "done"]
    if unfinished:
        raise click.ClickException(f"not done: {', '.join(unfinished)}")


@lab_roles.command("down")
@common_options
@roles_work_option
@fail_cleanly
def lab_roles_down(work_dir):
    """Stop every container; remove its overlay, veths, bridges and the lab's namespaces."""
    from provisioner.lab.roles import Substrate
    if not Substrate([], None, work_dir, progress=click.echo).down():
        click.echo("nothing to take down")


@lab_roles.command("status")
@common_options
@roles_work_option
@fail_cleanly
def lab_roles_status(work_dir):
    """Each container's systemd state (running, degraded, stopped), and the lab's service."""
    from provisioner.lab.roles import Substrate
    sub = Substrate([], None, work_dir)
    states = sub.status()
    if not states:
        click.echo("no roles lab is up")
        return
    for host, state in states.items():
        click.echo(f"{host:<12} {state}")
    for name, state in sub.processes().items():
        click.echo(f"{name:<12} {state}")
    click.echo(f"root {sub.root}; namespaces {', '.join(sub.namespaces())}")


@lab_roles.command("shell")
@common_options
@click.argument("node")
@roles_work_option
@fail_cleanly
def lab_roles_shell(node, work_dir):
    """A root shell inside NODE's container."""
    from provisioner.lab.roles import Substrate, SubstrateError
    try:
        code = Substrate([], None, work_dir).shell(node)
    except SubstrateError as e:
        raise click.ClickException(str(e)) from None
    sys.exit(code)


@main.group()
def bootfiles():
    """Boot loaders for PXE clients."""


@bootfiles.command("import")
@common_options
@fail_cleanly
def bootfiles_import():
    """Copy pxelinux, GRUB (EFI) and iPXE from Debian's packages into the state directory (and
    build the inspection ramdisk when the site has discovery on)."""
    from provisioner.boot.bootfiles import bootfiles_dir, import_bootfiles
    state_dir, site = _settings()
    done, missing = import_bootfiles(state_dir)
    for line in done:
        click.echo(f"imported {line}")
    for line in missing:
        click.echo(f"skipped  {line}")
    click.echo(f"{len(done)} boot files in {bootfiles_dir(state_dir)}")
    from provisioner.config import load_site
    if load_site(site).discovery.enabled:
        _build_inspection(state_dir, None)


@bootfiles.command("inspect")
@common_options
@click.option("--kernel", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="The kernel to boot. Default: the newest /boot/vmlinuz-*.")
@fail_cleanly
def bootfiles_inspect(kernel):
    """Build the inspection ramdisk unknown machines boot when discovery is on (bootfiles import
    builds it too when the site has discovery on)."""
    state_dir, _ = _settings()
    _build_inspection(state_dir, kernel)


def _build_inspection(state_dir: Path, kernel: Path | None) -> None:
    from provisioner.boot.inspection import InspectionError, build
    try:
        for line in build(state_dir, kernel):
            click.echo(f"built    {line}")
    except InspectionError as e:
        raise click.ClickException(f"inspection ramdisk: {e}") from None


@main.group()
def distro():
    """OS trees (kernel and initrd) for network installs."""


@distro.command("import")
@common_options
@click.option("--from", "source", required=True, metavar="URL-or-DIR",
              help="A CentOS Stream tree: a mirror URL (.../BaseOS/x86_64/os/) or a directory.")
@fail_cleanly
def distro_import(source):
    """Fetch a tree's PXE kernel and initrd, verify them against .treeinfo, and serve them."""
    from provisioner.boot.distros import DistroError, import_tree
    state_dir, _ = _settings()
    last = {}

    def progress(name, done, total):
        pct = int(done * 100 / total) if total else None
        if last.get(name) == pct and done != total:
            return
        last[name] = pct
        shown = f"{pct:3d}%" if pct is not None else f"{done >> 20} MiB"
        click.echo(f"\r{name}: {shown} ({done} bytes)", nl=done == total, err=True)

    try:
        tree = import_tree(state_dir, source, progress)
    except DistroError as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"imported {tree.name}: {tree.kernel} and {tree.initrd}, checksums verified")
    site = _context().site
    if tree.name != site.distro:
        click.echo(f"note: the site boots {site.distro}; this tree is {tree.name}", err=True)


@distro.command("list")
@common_options
def distro_list():
    """List imported trees."""
    from provisioner.boot.distros import list_distros
    state_dir, _ = _settings()
    for name in list_distros(state_dir):
        click.echo(name)


@main.group()
def mirror():
    """The local copy of the install tree and repos the boot server serves (README, "Mirror")."""


@mirror.command("sync")
@common_options
@click.option("--verify", is_flag=True, help="Hash every file already in the mirror again, not only "
              "those no earlier run recorded as verified.")
@click.option("--concurrency", type=click.IntRange(1, 32), default=None,
              help="Downloads at once. Default: the site's mirror.concurrency.")
@fail_cleanly
def mirror_sync(verify, concurrency):
    """Fetch os.install_tree and os.repos from os.mirror into the state directory, verified
    against .treeinfo, repomd.xml and primary; a second run fetches only what is missing."""
    from provisioner.config import load_site
    from provisioner.mirror import SyncError, sync
    state_dir, site = _settings()
    try:
        result = sync(load_site(site), state_dir, echo=lambda line: click.echo(line, err=True),
                      verify=verify, concurrency=concurrency)
    except SyncError as e:
        raise click.ClickException(str(e)) from None
    for failure in result.failures:
        click.echo(f"failed: {failure}", err=True)
    click.echo(f"mirror: {result.fetched} files fetched ({result.bytes} bytes), {result.present} already "
               f"here, {len(result.failures)} failed, from {len(result.sources)} sources")
    if result.failures:
        sys.exit(1)


@main.command("dnsmasq-config")
@common_options
@click.option("--interface", default=None, help="Serve DHCP on this interface only.")
@click.option("--server-ip", default=None, help="This service's address on the install network "
              "(next-server). Default: the host of the site's service URL.")
@click.option("--proxy", is_flag=True, help="Proxy DHCP: another server hands out the addresses.")
@click.option("--ipxe/--no-ipxe", default=True, show_default=True,
              help="Send iPXE clients to /boot.ipxe over HTTP (else they get pxelinux too).")
@click.option("--dns", is_flag=True, help="Serve DNS for the install network too: every node's names and "
              "the service's host name; other names go to the site's nameservers, if any.")
@fail_cleanly
def dnsmasq_config(interface, server_ip, proxy, ipxe, dns):
    """Print a dnsmasq configuration for the install network."""
    from provisioner.boot.dhcp import dnsmasq_config as render
    ctx = _context()
    click.echo(render(ctx.site, ctx.registry.list(), server_ip=server_ip, interface=interface,
                      proxy=proxy, ipxe=ipxe, dns=dns), nl=False)


def _problems(ctx, node) -> list[str]:
    from provisioner.render import storage
    problems = []
    layout = ctx.site.layout_for(node.spec.roles)
    try:
        storage.check_fit(layout, node.spec.disk_bytes, node.spec.firmware)
    except storage.LayoutError as e:
        problems.append(str(e))
    result = check_kickstart(ctx.renderer.kickstart(node))
    return problems + result.errors + result.warnings


def _nic(text: str) -> dict:
    parts = text.split(",")
    if len(parts) not in (2, 3):
        raise click.BadParameter(f"{text!r}: expected MAC,NAME[,MODE]", param_hint="--nic")
    nic = {"mac": parts[0], "name": parts[1]}
    if len(parts) == 3:
        nic["mode"] = parts[2]
    return nic


def _hostport(text: str, hint: str = "--http") -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise click.BadParameter(f"{text!r}: expected HOST:PORT", param_hint=hint)
    return host.strip("[]") or "0.0.0.0", int(port)


def _age(at: str) -> str:
    from datetime import datetime, timezone
    then = datetime.strptime(at, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
    s = int((datetime.now(timezone.utc) - then).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            return f"{s // size}{unit}"
    return f"{s}s"
