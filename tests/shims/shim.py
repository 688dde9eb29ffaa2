#!/usr/bin/env python3
"""A recording, stateful stand-in for the package, service and cloud tools the role steps call.

Linked under each tool's name on PATH. Every call is logged as QUERY (looks) or CHANGE (alters
the system), and answered from a state directory that the CHANGE calls update, so a second run
of a step sees what the first one did. Env: SHIM_LOG, SHIM_STATE, ROOT.
"""

import os
import re
import shlex
import sys
from pathlib import Path

STATE = Path(os.environ["SHIM_STATE"])
ROOT = os.environ.get("ROOT", "")


def key(*parts):
    p = STATE.joinpath(*[str(x).replace("/", "%") for x in parts])
    p.parent.mkdir(parents=True, exist_ok=True)
    return p


def has(*parts):
    return key(*parts).exists()


def marked(*parts):
    """The names marked under parts, sorted (what a list command reports)."""
    d = STATE.joinpath(*[str(x).replace("/", "%") for x in parts])
    return sorted(p.name for p in d.iterdir()) if d.is_dir() else []


def mark(*parts, value=""):
    key(*parts).write_text(value)


def strip_root(path):
    return path[len(ROOT):] if ROOT and path.startswith(ROOT) else path


def rpm(a):
    return "QUERY", "", 0 if has("pkg", a[-1]) else 1


def dnf(a):
    a = [x for x in a if x != "-q"]
    if a[0] == "repolist":
        repos = sorted(p.name for p in key("repo", "x").parent.glob("*")) if key("repo", "x").parent.exists() else []
        return "QUERY", "repo id repo name\n" + "".join(f"{r} {r}\n" for r in ["appstream", "baseos"] + repos), 0
    if a[0] == "config-manager":
        mark("repo", a[-1])
        return "CHANGE", "", 0
    for p in [x for x in a if not x.startswith("-") and x != "install"]:
        mark("pkg", p)
    return "CHANGE", "", 0


def dpkg_query(a):
    return "QUERY", "install ok installed" if has("pkg", a[-1]) else "", 0 if has("pkg", a[-1]) else 1


def apt_get(a):
    for p in [x for x in a if not x.startswith("-") and x != "install"]:
        mark("pkg", p)
    return "CHANGE", "", 0


def semanage(a):
    if a[:2] == ["port", "-l"]:
        # the targeted policy's own: 5000 is another type's until openstack-selinux or a step says so
        http = ["80", "81", "443", "488", "8008", "8009", "8443", "9000"]
        http += [p.name for p in key("http_port", "x").parent.glob("*")] if key("http_port", "x").parent.exists() else []
        other = "" if has("http_port", "5000") else "commplex_main_port_t tcp 5000\n"
        return "QUERY", f"http_port_t tcp {', '.join(http)}\n" + other, 0
    if a[0] == "port" and "-t" in a:
        mark("http_port", a[-1])
    return "CHANGE", "", 0


def pvs(a):
    if any(x.startswith("vg_name=") for x in a):
        return "QUERY", "  /dev/sda3\n", 0
    return "QUERY", "  /dev/sda2\n  /dev/sda3\n  /dev/sda5\n", 0


def lvmdevices(a):
    if "--adddev" in a:
        mark("lvmdev", a[-1])
        return "CHANGE", "", 0
    devs = ["/dev/sda2", "/dev/sda5"] + ([p.name.replace("%", "/") for p in key("lvmdev", "x").parent.glob("*")]
                                         if key("lvmdev", "x").parent.exists() else [])
    return "QUERY", "".join(f"Device IDTYPE=sys_wwid IDNAME=x DEVNAME={d} PVID=y\n" for d in devs), 0


def systemctl(a):
    verb = a[0]
    units = [x for x in a[1:] if not x.startswith("-")]
    if verb == "is-enabled":
        return "QUERY", "", 0 if has("enabled", units[0]) else 1
    if verb == "is-active":
        return "QUERY", "", 0 if has("active", units[0]) else 1
    for u in units:
        if verb == "enable":
            mark("enabled", u)
        if verb in ("start", "restart"):
            mark("active", u)
            if u.endswith(".mount"):    # systemd mounts what the unit names
                mark("mounted", "/" + u[:-len(".mount")].replace("-", "/"))
    return "CHANGE", "", 0


def firewall_cmd(a):
    zone = next((x.split("=", 1)[1] for x in a if x.startswith("--zone=")), "")
    if "--get-default-zone" in a:
        return "QUERY", "public\n", 0
    for x in a:
        if x.startswith("--get-zone-of-interface="):
            iface = x.split("=", 1)[1]
            zones = [z.name for z in key("fw", "x").parent.glob("*") if (z / "interface" / iface).exists()] \
                if key("fw", "x").parent.exists() else []
            return ("QUERY", f"{zones[0]}\n", 0) if zones else ("QUERY", "no zone\n", 2)
    for x in a:
        m = re.match(r"--(query|add|change|info|new)-(\w+)(?:=(.*))?$", x)
        if not m:
            continue
        verb, what, val = m.groups()
        what = {"policy": "policy"}.get(what, what)
        k = ("fw", zone, what, val or "")
        if verb in ("query", "info"):
            return "QUERY", "", 0 if has(*k) else 1
        mark(*k)
    return "CHANGE", "", 0


def getsebool(a):
    return "QUERY", f"{a[0]} --> {'on' if has('sebool', a[0]) else 'off'}\n", 0


def setsebool(a):
    mark("sebool", a[-2])
    return "CHANGE", "", 0


def gluster(a):
    a = [x for x in a if x != "--mode=script"]
    if a[:2] == ["pool", "list"]:
        peers = sorted(p.name for p in key("peers", "x").parent.glob("*")) if key("peers", "x").parent.exists() else []
        return "QUERY", "UUID Hostname State\nx localhost Connected\n" + "".join(f"x {p} Connected\n" for p in peers), 0
    if a[:2] == ["peer", "probe"]:
        mark("peers", a[2])
        return "CHANGE", "", 0
    if a[:2] == ["volume", "info"]:
        if not has("volume", a[2]):
            return "QUERY", "", 1
        return "QUERY", f"Volume Name: {a[2]}\nStatus: {'Started' if has('started', a[2]) else 'Created'}\n", 0
    if a[:2] == ["volume", "create"]:
        mark("volume", a[2], value=" ".join(a))
        return "CHANGE", "", 0
    if a[:2] == ["volume", "start"]:
        mark("started", a[2])
        return "CHANGE", "", 0
    return "QUERY", "", 0


def mountpoint(a):
    return "QUERY", "", 0 if has("mounted", strip_root(a[-1])) else 1


def mount(a):
    mark("mounted", a[-1])
    return "CHANGE", "", 0


def lsmod(a):
    mods = [p.name for p in key("module", "x").parent.glob("*")] if key("module", "x").parent.exists() else []
    return "QUERY", "Module Size Used\n" + "".join(f"{m} 1 0\n" for m in mods), 0


def modprobe(a):
    mark("module", a[-1])
    return "CHANGE", "", 0


def sasldblistusers2(a):
    return "QUERY", "".join(f"{u.name}: userPassword\n" for u in key("sasl", "x").parent.glob("*")) \
        if key("sasl", "x").parent.exists() else "", 0


def saslpasswd2(a):
    sys.stdin.read()
    realm = a[a.index("-u") + 1] if "-u" in a else "localhost"
    mark("sasl", f"{a[-1]}@{realm}")
    return "CHANGE", "", 0


def rabbitmqctl(a):
    a = [x for x in a if x != "-q"]
    if a[0] == "list_users":
        return "QUERY", "".join(f"{u.name}\t[]\n" for u in key("rmq", "x").parent.glob("*")) \
            if key("rmq", "x").parent.exists() else "", 0
    if a[0] == "add_user":
        mark("rmq", a[1])
        return "CHANGE", "", 0
    if a[0] == "list_user_permissions":
        return "QUERY", "/\t.*\t.*\t.*\n" if has("rmqperm", a[1]) else "", 0
    if a[0] == "set_permissions":
        mark("rmqperm", a[1])
        return "CHANGE", "", 0
    return "QUERY", "", 0


def mysql(a):
    sql = a[a.index("-e") + 1]
    m = re.match(r"SHOW DATABASES LIKE '(\w+)'", sql)
    if m:
        return "QUERY", f"{m.group(1)}\n" if has("db", m.group(1)) else "", 0
    m = re.match(r"SELECT User FROM mysql.user WHERE User = '(\w*)'", sql)
    if m:
        return "QUERY", f"{m.group(1)}\n" if m.group(1) and has("dbuser", m.group(1)) else "", 0
    m = re.match(r"SELECT COUNT\(\*\) FROM information_schema.tables WHERE table_schema = '(\w+)'", sql)
    if m:
        return "QUERY", "42\n" if has("synced", m.group(1)) else "0\n", 0
    if sql.startswith("SELECT COUNT(*) FROM keystone.project"):
        return "QUERY", "1\n" if has("bootstrapped") else "0\n", 0
    m = re.match(r"SHOW GRANTS FOR '(\w+)'", sql)
    if m:
        grants = [p.name for p in key("grant", "x").parent.glob("*")] if key("grant", "x").parent.exists() else []
        return "QUERY", "".join(f"GRANT ALL PRIVILEGES ON `{g}`.* TO `{m.group(1)}`@`%`\n" for g in grants), 0
    for db in re.findall(r"CREATE DATABASE (\w+)", sql):
        mark("db", db)
    for user in re.findall(r"CREATE USER '(\w+)'", sql):
        mark("dbuser", user)
    for db in re.findall(r"ON (\w+)\.\*", sql):
        mark("grant", db)
    return "CHANGE", "", 0


MANAGE_SYNC = {"keystone-manage db_sync": "keystone", "glance-manage db_sync": "glance",
               "placement-manage db sync": "placement", "nova-manage api_db sync": "nova_api",
               "nova-manage db sync": "nova", "cinder-manage db sync": "cinder"}


def su(a):
    cmd = a[a.index("-c") + 1]
    for prefix, db in MANAGE_SYNC.items():
        if cmd == prefix:
            mark("synced", db)
            return "CHANGE", "", 0
    if "neutron-db-manage" in cmd:
        mark("synced", "neutron")
        return "CHANGE", "", 0
    if cmd == "nova-manage cell_v2 list_cells":
        cells = [p.name for p in key("cell", "x").parent.glob("*")] if key("cell", "x").parent.exists() else []
        return "QUERY", "".join(f"| {c} | uuid |\n" for c in sorted(cells)), 0
    if cmd == "nova-manage cell_v2 map_cell0":
        mark("cell", "cell0")
        return "CHANGE", "", 0
    if cmd.startswith("nova-manage cell_v2 create_cell --name="):
        mark("cell", cmd.split("=", 1)[1])
        return "CHANGE", "", 0
    if cmd == "nova-manage cell_v2 list_hosts":
        hosts = [p.name for p in key("mapped", "x").parent.glob("*")] if key("mapped", "x").parent.exists() else []
        return "QUERY", "".join(f"| cell1 | {h} |\n" for h in sorted(hosts)), 0
    if cmd == "nova-manage cell_v2 discover_hosts":
        for h in os.environ.get("COMPUTE_HOSTS", "").split():
            mark("mapped", h)
        return "CHANGE", "", 0
    return "CHANGE", "", 0


def keystone_manage(a):
    if a[0] in ("fernet_setup", "credential_setup"):
        d = Path(f"{ROOT}/etc/keystone/{'fernet' if a[0] == 'fernet_setup' else 'credential'}-keys")
        d.mkdir(parents=True, exist_ok=True)
        (d / "0").write_text("key\n")
    if a[0] == "bootstrap":
        mark("bootstrapped")
    return "CHANGE", "", 0


def stat(a):
    return "QUERY", (key("owner", strip_root(a[-1])).read_text() if has("owner", strip_root(a[-1])) else "root:root") + "\n", 0


def chown(a):
    mark("owner", strip_root(a[-1]), value=a[-2])
    return "CHANGE", "", 0


def curl(a):
    if "-o" in a:
        Path(a[a.index("-o") + 1]).write_bytes(b"image")
        return "CHANGE", "", 0
    return "QUERY", os.environ.get("SHIM_HOSTS", "127.0.0.1 localhost\n"), 0


def openstack(a):
    words = [x for x in a]
    if "show" in words:
        i = words.index("show")
        kind = " ".join(words[:i])
        pos = [w for w in words[i + 1:] if not w.startswith("-")]
        name = pos[-1] if pos else ""
        if kind == "console log":
            return "QUERY", "cirros login:\n", 0
        if "-c" in words:
            col = words[words.index("-c") + 1]
            name = [w for w in words[i + 1:] if not w.startswith("-")][0]
            if kind == "server" and col == "status":
                return "QUERY", "ACTIVE\n" if has("os", "server", name) else "", 0 if has("os", "server", name) else 1
            if kind == "image" and col == "status":
                return "QUERY", "active\n" if has("os", "image", name) else "", 0 if has("os", "image", name) else 1
            if kind == "volume" and col == "status":
                return "QUERY", ("in-use\n" if has("attached", name) else "available\n"), 0
            if kind == "volume" and col == "attachments":
                return "QUERY", "[]\n", 0
        return "QUERY", "", 0 if has("os", kind, name) else 1
    if "list" in words:
        i = words.index("list")
        kind = " ".join(words[:i])
        opt = lambda o: words[words.index(o) + 1] if o in words else ""  # noqa: E731
        if kind == "role assignment" and not opt("--user"):
            return "QUERY", "".join(f"{u}@Default\n" for u in marked("roleassign")), 0
        if kind == "role assignment":
            return "QUERY", "admin\n" if has("roleassign", opt("--user")) else "", 0
        if kind == "user":
            return "QUERY", "".join(f"{u}\n" for u in marked("os", "user")), 0
        if kind == "service":
            return "QUERY", "".join(f"{t}\n" for t in marked("os", "service")), 0
        if kind == "endpoint" and not opt("--service"):
            return "QUERY", "".join(f"{e.replace('-', ' ')}\n" for e in marked("endpoint")), 0
        if kind == "endpoint":
            return "QUERY", "id\n" if has("endpoint", f"{opt('--service')}-{opt('--interface')}") else "", 0
        if kind == "volume service":      # a real site's controller runs cinder-volume
            return "QUERY", "up\n", 0
        if kind == "security group rule":
            k = opt("--protocol") + opt("--dst-port")
            return "QUERY", "id\n" if has("sgr", k) else "", 0
        return "QUERY", "", 0
    if "create" in words:
        i = words.index("create")
        kind = " ".join(words[:i])
        if kind == "endpoint":
            pos = [w for w in words[i + 1:] if not w.startswith("-")]
            pos = pos[1:]  # region value
            mark("endpoint", f"{pos[0]}-{pos[1]}")
        elif kind == "security group rule":
            opt = lambda o: words[words.index(o) + 1] if o in words else ""  # noqa: E731
            mark("sgr", opt("--proto") + opt("--dst-port"))
        else:
            mark("os", kind, words[-1])
        return "CHANGE", "", 0
    if words[:2] == ["role", "add"]:
        mark("roleassign", words[words.index("--user") + 1])
    if words[:3] == ["server", "add", "volume"]:
        mark("attached", words[-1])
    if words[:3] == ["compute", "service", "list"]:
        return "QUERY", "nova-compute up\n", 0
    return "CHANGE", "", 0


def ovs_vsctl(a):
    if a[0] == "br-exists":
        return "QUERY", "", 0 if has("br", a[1]) else 2
    if a[0] == "add-br":
        mark("br", a[1])
        return "CHANGE", "", 0
    if a[0] == "list-ports":
        ports = [p.name for p in key("port", a[1], "x").parent.glob("*")] if key("port", a[1], "x").parent.exists() else []
        return "QUERY", "".join(f"{p}\n" for p in ports), 0
    if a[0] == "add-port":
        mark("port", a[1], a[2])
        return "CHANGE", "", 0
    if a[0] == "del-port":
        key("port", a[1], a[2]).unlink()
        return "CHANGE", "", 0
    return "QUERY", "", 0


def ssh_keygen(a):
    f = Path(a[a.index("-f") + 1])
    f.write_text("private\n")
    Path(str(f) + ".pub").write_text("ssh-ed25519 AAAA test\n")
    return "CHANGE", "", 0


def sysctl(a):
    return "CHANGE", "", 0


HANDLERS = {"rpm": rpm, "dnf": dnf, "systemctl": systemctl, "firewall-cmd": firewall_cmd,
            "getsebool": getsebool, "setsebool": setsebool, "gluster": gluster, "mountpoint": mountpoint,
            "mount": mount, "lsmod": lsmod, "modprobe": modprobe, "sasldblistusers2": sasldblistusers2,
            "saslpasswd2": saslpasswd2, "rabbitmqctl": rabbitmqctl, "mysql": mysql, "su": su,
            "keystone-manage": keystone_manage, "stat": stat, "chown": chown, "curl": curl,
            "openstack": openstack, "ovs-vsctl": ovs_vsctl, "ssh-keygen": ssh_keygen, "sysctl": sysctl,
            "dpkg-query": dpkg_query, "apt-get": apt_get, "semanage": semanage, "pvs": pvs,
            "lvmdevices": lvmdevices}


def main():
    name = os.path.basename(sys.argv[0])
    args = sys.argv[1:]
    kind, out, rc = HANDLERS[name](args)
    with open(os.environ["SHIM_LOG"], "a") as log:
        log.write(f"{kind} {shlex.join([name] + args)}\n")
    sys.stdout.write(out)
    sys.exit(rc)


if __name__ == "__main__":
    main()
